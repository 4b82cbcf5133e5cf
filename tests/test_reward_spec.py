"""The spec grammar, the registry, and their error messages."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from rewards import (
    REGISTRY,
    RewardInput,
    RewardOutput,
    SpecError,
    WeightedSum,
    build,
    parse_spec,
    register,
)
from tests.test_reward_doubles import single_threaded_torch  # noqa: F401
from tests.test_reward_properties import CATALOG, RESOURCES, random_context, random_feedback


@pytest.fixture
def batch() -> RewardInput:
    rng = np.random.default_rng(0)
    items = np.array([[0, 1, 2, -1], [3, 3, 4, 5]])
    return RewardInput(
        items=items, context=random_context(rng, 2), feedback=random_feedback(rng, items.shape)
    )


@pytest.fixture
def custom_reward():
    """The README's example: a reward that pays for distinct leaf categories in a slate."""

    @register("category_spread", requires=("context",))
    def category_spread(catalog):
        leaf = torch.as_tensor(catalog.category[:, 2])

        def reward(batch: RewardInput) -> torch.Tensor:  # distinct leaf categories shown / S
            leaves = torch.where(batch.shown, leaf[batch.items.clamp(min=0)], -1).sort(1).values
            first = torch.cat([leaves[:, :1] >= 0, leaves[:, 1:] != leaves[:, :-1]], 1)
            return first.sum(1).float() / batch.items.shape[1]

        return reward

    yield category_spread
    del REGISTRY["category_spread"]


@pytest.mark.parametrize(
    ("spec", "terms"),
    [
        ("pscore + 0.5*format", [(1.0, "pscore"), (0.5, "format")]),
        ("business(pscore, alpha=0.5, f=0.3)", [(1.0, "business(pscore, alpha=0.5, f=0.3)")]),
        ("0.3*oracle - 0.1*format", [(0.3, "oracle"), (-0.1, "format")]),
        ("-(pscore + format)/2", [(-0.5, "pscore"), (-0.5, "format")]),
        ("2 * 0.5 * pscore + pscore", [(2.0, "pscore")]),
        ('oracle(field="like") * 3', [(3.0, "oracle(field='like')")]),
        (
            "business(pscore+0.2*oracle,f=0.2,fresh_days=7)",
            [(1.0, "business(pscore + 0.2*oracle, f=0.2, fresh_days=7)")],
        ),
    ],
)
def test_specs_parse_to_weighted_sums(spec: str, terms: list[tuple[float, str]]) -> None:
    parsed = parse_spec(spec)
    assert [(pytest.approx(weight), call.text) for weight, call in parsed.terms] == terms


@pytest.mark.parametrize(
    ("spec", "message", "position"),
    [
        ("", "empty reward spec", 0),
        ("pscore +", "found the end of the spec", 8),
        ("pscore * format", "cannot multiply two rewards", 9),
        ("pscore + 1", "constant term 1", 9),
        ("pscore / format", "cannot divide by a reward", 9),
        ("pscore/0", "division by zero", 7),
        ("psc@re", "unexpected character '@'", 3),
        ("pscore)", "unexpected ')'", 6),
        ("business(alpha=0.5, pscore)", "before keyword arguments", 20),
        ("business(pscore, alpha=)", "needs a number or a quoted string", 23),
        ("business(pscore, f=1, f=2)", "keyword 'f' given twice", 22),
        ("business(pscore f=1)", "expected ',' or ')'", 16),
        ("business(0.5)", "takes rewards positionally", 9),
        ("(pscore", "expected ')'", 7),
        ("3", "not a reward", 0),
        ("1e999*pscore", "number 1e999 is too large", 0),
    ],
)
def test_malformed_specs_point_at_the_problem(spec: str, message: str, position: int) -> None:
    with pytest.raises(SpecError, match=re.escape(message)) as caught:
        parse_spec(spec)
    assert caught.value.position == position
    assert f"\n  {spec}\n  {' ' * position}^" in str(caught.value)


def test_unknown_names_and_arguments_are_named_with_a_suggestion() -> None:
    with pytest.raises(SpecError, match="unknown reward 'pscor'; did you mean 'pscore'"):
        build("0.5*pscor", **RESOURCES)
    with pytest.raises(SpecError, match="format\\(\\) has no argument 'x'; it accepts codec"):
        build("format(x=1)", **RESOURCES)
    with pytest.raises(SpecError, match="takes 1 reward argument\\(s\\), got 0"):
        build("business(alpha=0.5)", **RESOURCES)


def test_missing_resources_and_bad_values_say_how_to_fix() -> None:
    with pytest.raises(ValueError, match="needs 'pscore_model': pass it to build"):
        build("pscore + format")
    with pytest.raises(ValueError, match="needs 'catalog'"):
        build("business(format)")
    with pytest.raises(ValueError, match="alpha must be in \\(0, 1\\]"):
        build("business(format, alpha=2)", catalog=CATALOG)
    with pytest.raises(ValueError, match="oracle field 'nope' is unknown"):
        build("oracle(field='nope')")
    with pytest.raises(ValueError, match="pscore_model must be a PScoreModel"):
        build("pscore", pscore_model="model.pt")


def test_components_are_named_by_their_spec_text(batch: RewardInput) -> None:
    reward = build("business(pscore, f=0.2) + 0.5*format - 0.1*oracle(field='hate')", **RESOURCES)
    assert isinstance(reward, WeightedSum)
    output = reward(batch)
    assert set(output.components) == {"business(pscore, f=0.2)", "format", "oracle(field='hate')"}
    assert reward.requires == {"context", "feedback"}
    torch.testing.assert_close(output.components["format"], torch.tensor([0.75, 0.75]))


def test_a_custom_reward_registers_in_a_few_lines(custom_reward, batch: RewardInput) -> None:
    reward = build("pscore + 0.1*category_spread", **RESOURCES)
    output = reward(batch)
    assert "category_spread" in output.components
    assert build("category_spread", catalog=CATALOG).requires == {"context"}
    expected = output.components["pscore"] + 0.1 * output.components["category_spread"]
    torch.testing.assert_close(output.total, expected)
    leaf = CATALOG.category[:, 2]
    by_hand = [len({leaf[0], leaf[1], leaf[2]}) / 4, len({leaf[3], leaf[4], leaf[5]}) / 4]
    torch.testing.assert_close(output.components["category_spread"], torch.tensor(by_hand))


def test_registry_refuses_bad_names_and_double_registration(custom_reward) -> None:
    with pytest.raises(ValueError, match="'category_spread' is registered twice: .*test_reward_"):
        register("category_spread")(lambda: None)
    with pytest.raises(ValueError, match="must be an identifier"):
        register("my reward")
    with pytest.raises(ValueError, match="choose from"):
        register("x", requires=("simulator",))


def test_a_custom_reward_with_a_wrong_output_is_caught(batch: RewardInput) -> None:
    @register("broken")
    def broken(kind: str = "shape"):
        def reward(batch: RewardInput) -> torch.Tensor:
            if kind == "shape":
                return torch.zeros(batch.batch_size, 2)
            return torch.full((batch.batch_size,), float("nan"))

        return reward

    try:
        with pytest.raises(ValueError, match="reward 'broken' must have shape \\(2,\\)"):
            build("broken")(batch)
        with pytest.raises(ValueError, match="NaN or infinite"):
            build("broken(kind='nan')")(batch)
        with pytest.raises(ValueError, match="decomposes over items"):
            build("business(broken)", catalog=CATALOG)
    finally:
        del REGISTRY["broken"]


def test_reward_output_checks_its_components() -> None:
    with pytest.raises(ValueError, match="component 'x' must have shape \\(2,\\)"):
        RewardOutput(torch.zeros(2), {"x": torch.zeros(3)})
