"""Rewards declare what they read and whether they judge codes; the reward layer enforces it.

- The simulator's truth (`RewardInput.feedback`) reaches only rewards that declare it (the
  oracle), wherever they sit: alone, in a weighted sum, inside `business(...)`.
- `reads_truth`, `judges_codes` and `truth_terms` of the built-ins and of their sums.
- GroupScorer takes a term's opinion on an illegal code from its `judges_codes`.
- The registry records where each name was registered and refuses a second origin.
- One engagement formula: the simulator's `true_engagement` and the oracle's agree.

Letters used in shape comments: B batch, S slate, G samples per user, L levels.
"""

from __future__ import annotations

import importlib.util
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from envs.response import engagement_formula, true_engagement
from envs.simulator import default_catalog
from envs.spec import FEEDBACK_FIELDS, NUM_FEEDBACK, feedback_index
from envs.vector_env import OneRecVectorEnv
from rewards import (
    REGISTRY,
    TRUTH,
    BusinessConfig,
    BusinessWeighting,
    FormatReward,
    OracleReward,
    Origin,
    RewardInput,
    RewardOutput,
    WeightedSum,
    build,
    origin,
    register,
    slate_mean,
    truth_terms,
)
from rewards.compose import WeightedItemSum
from rewards.oracle import item_engagement
from tests.test_reward_doubles import single_threaded_torch  # noqa: F401
from tests.test_reward_properties import (
    CATALOG,
    CODEBOOK,
    CODEC,
    LEVELS,
    RESOURCES,
    SETTINGS,
    item_batches,
    random_context,
)
from trainers.group_rewards import GroupScorer

SPY = "spy_without_truth"
JUDGE, ABSTAINER = "judge_of_codes", "abstainer_on_codes"


class Spy:
    """An item reward that declares nothing and records the feedback it was given."""

    name = SPY
    requires: frozenset[str] = frozenset()

    def __init__(self, seen: list[object]) -> None:
        self.seen = seen

    def item_scores(self, batch: RewardInput) -> torch.Tensor:
        self.seen.append(batch.feedback)
        return batch.shown.float()  # (B, S) 1 per shown item

    def __call__(self, batch: RewardInput) -> RewardOutput:
        return RewardOutput.single(self.name, slate_mean(self.item_scores(batch), batch.items))


@pytest.fixture(scope="module")
def seen() -> Iterator[list[object]]:
    """The feedback every `spy_without_truth` built in this module was called with."""
    calls: list[object] = []
    register(SPY)(lambda: Spy(calls))
    yield calls
    del REGISTRY[SPY]


@pytest.fixture(scope="module")
def code_judges() -> Iterator[None]:
    """Two user rewards worth -1 per slot: one judges codes, the other does not."""

    def minus_one(batch: RewardInput) -> torch.Tensor:
        return torch.full((batch.batch_size,), -1.0)

    register(JUDGE, judges_codes=True)(lambda: minus_one)
    register(ABSTAINER)(lambda: minus_one)
    yield
    del REGISTRY[JUDGE], REGISTRY[ABSTAINER]


# ---------------------------------------------------------------- the truth is withheld


@SETTINGS
@given(
    batch=item_batches(),
    spec=st.sampled_from([
        SPY,
        f"{SPY} + oracle",
        f"0.5*{SPY} - 0.2*oracle(field='like') + format",
        f"business({SPY} + 0.3*oracle, f=0.2)",
        f"business({SPY}, alpha=0.5, f=0.1) - oracle",
        f"business(business({SPY}, f=0.1) + oracle(field='hate'), f=0.3)",
    ]),
)
def test_a_reward_that_does_not_declare_the_truth_never_sees_it(
    seen: list[object], batch: RewardInput, spec: str
) -> None:
    """A reward registered without `feedback` is called with `batch.feedback` None wherever
    it sits (alone, in a sum, inside business), while the oracle beside it still reads the
    truth: each oracle component equals the oracle built alone."""
    seen.clear()
    reward = build(spec, **RESOURCES)
    output = reward(batch)
    reward.item_scores(batch)
    assert batch.feedback is not None and seen and all(value is None for value in seen)
    for name, value in output.components.items():
        if name.startswith("oracle"):
            torch.testing.assert_close(value, build(name)(batch).total, rtol=0, atol=0)


def test_an_undeclared_reward_that_reads_the_truth_is_told_to_declare_it() -> None:
    """A plain function that forgets to declare `feedback` gets the clear error of
    `batch.require`, never the truth."""

    def peeking(batch: RewardInput) -> torch.Tensor:
        batch.require("feedback", "peeking")
        return batch.feedback[..., 0].mean(1)

    register("peeking")(lambda: peeking)
    register("declared_peeking", requires=(TRUTH,))(lambda: peeking)
    try:
        batch = RewardInput(items=np.array([[0, 1]]), feedback=np.full((1, 2, NUM_FEEDBACK), 30.0))
        with pytest.raises(ValueError, match=r"registered without requires=\('feedback',\)"):
            build("peeking")(batch)
        torch.testing.assert_close(build("declared_peeking")(batch).total, torch.tensor([30.0]))
    finally:
        del REGISTRY["peeking"], REGISTRY["declared_peeking"]


@SETTINGS
@given(batch=item_batches())
def test_hand_built_sums_and_business_withhold_the_truth_per_term(
    seen: list[object], batch: RewardInput
) -> None:
    """`WeightedSum`, `WeightedItemSum` and `BusinessWeighting` built by hand (not through
    `build`) also give the truth only to the terms that declare it."""
    seen.clear()
    spy, oracle = Spy(seen), OracleReward()
    summed = WeightedItemSum([(1.0, spy), (0.5, oracle)])
    business = BusinessWeighting(summed, CATALOG, BusinessConfig(alpha=1.0, f=0.0))
    expected = slate_mean(batch.shown.float(), batch.items) + 0.5 * oracle(batch).total
    torch.testing.assert_close(summed(batch).total, expected)
    torch.testing.assert_close(business(batch).total, expected)
    assert len(seen) == 2 and all(value is None for value in seen)


def test_without_feedback_withholds_only_the_truth_and_copies_nothing() -> None:
    rng = np.random.default_rng(0)
    batch = RewardInput(
        items=np.array([[0, 1, -1]]), context=random_context(rng, 1),
        codes=np.zeros((1, 3, LEVELS), dtype=np.int64), feedback=np.ones((1, 3, NUM_FEEDBACK)),
    )
    withheld = batch.without_feedback()
    assert withheld.feedback is None and batch.feedback is not None
    assert withheld.items is batch.items and withheld.codes is batch.codes
    assert withheld.context is batch.context
    assert withheld.without_feedback() is withheld


# ---------------------------------------------------------------- declarations


@pytest.mark.parametrize(
    ("spec", "reads_truth", "judges_codes", "terms"),
    [
        ("pscore", False, False, []),
        ("format", False, True, []),
        ("oracle", True, False, ["oracle"]),
        ("oracle(field='like')", True, False, ["oracle(field='like')"]),
        ("business(pscore, f=0.2)", False, False, []),
        ("business(oracle, f=0.2)", True, False, ["oracle"]),
        ("business(format, f=0.2)", False, True, []),
        ("pscore + 0.5*format", False, True, []),
        ("pscore - 0.1*oracle", True, False, ["oracle"]),
        (
            "business(pscore + 0.2*oracle(field='like'), f=0.2) + 0.5*format - oracle",
            True, True, ["oracle(field='like')", "oracle"],
        ),
    ],
)
def test_declarations_of_the_built_ins_and_their_sums(
    spec: str, reads_truth: bool, judges_codes: bool, terms: list[str]
) -> None:
    """A reward reads the truth when any term inside it declares `feedback`, and judges codes
    when any term does (only format among the built-ins); `truth_terms` names the oracles."""
    reward = build(spec, **RESOURCES)
    assert reward.reads_truth is reads_truth and reward.judges_codes is judges_codes
    assert (TRUTH in reward.requires) is reads_truth
    assert truth_terms(reward) == terms


def test_built_in_classes_declare_themselves() -> None:
    assert FormatReward().judges_codes and not FormatReward().reads_truth
    assert OracleReward("like").reads_truth and not OracleReward().judges_codes
    summed = WeightedSum([(1.0, FormatReward()), (2.0, OracleReward())])
    assert summed.reads_truth and summed.judges_codes
    assert truth_terms(summed) == ["oracle"]


def test_a_reward_object_keeps_its_own_declarations() -> None:
    """Attributes the reward object sets win over the registration's declarations."""

    class Declaring:
        name, requires, judges_codes = "declaring", frozenset({TRUTH}), True

        def __call__(self, batch: RewardInput) -> torch.Tensor:
            return batch.feedback[..., 0].mean(1)  # (B,)

    register("declaring")(Declaring)
    try:
        reward = build("declaring")
        assert reward.reads_truth and reward.judges_codes
        assert truth_terms(reward) == ["declaring"]
    finally:
        del REGISTRY["declaring"]


def test_register_refuses_a_judges_codes_that_is_not_a_bool() -> None:
    with pytest.raises(ValueError, match="judges_codes must be True or False, got 'yes'"):
        register("not_a_bool", judges_codes="yes")


# ---------------------------------------------------------------- GroupScorer


def test_group_scorer_keeps_the_opinion_of_a_reward_that_judges_codes(code_judges) -> None:
    """On an illegal code, a term registered with `judges_codes=True` keeps its value (it
    has an opinion), one without has none (NaN, left out of the total)."""
    rng = np.random.default_rng(3)
    codes = torch.as_tensor(rng.integers(0, CODEBOOK, size=(2, 6, LEVELS)))  # (B, G, L)
    codes[0, 0] = -1  # names no item
    items = torch.as_tensor(np.asarray(CODEC.decode(codes)))  # (B, G), -1 illegal
    legal = items != -1
    assert legal.any() and (~legal).any()
    scorer = GroupScorer(f"{JUDGE} + 0.5*{ABSTAINER}", RESOURCES)
    rewards = scorer(random_context(rng, 2), codes, items)
    assert (rewards.terms[JUDGE] == -1.0).all()
    torch.testing.assert_close(
        rewards.terms[ABSTAINER], torch.where(legal, -1.0, torch.nan), equal_nan=True
    )
    torch.testing.assert_close(rewards.total, torch.where(legal, -1.5, -1.0))
    assert rewards.scorable.all() and not scorer.needs_true_feedback
    alone = GroupScorer(ABSTAINER, RESOURCES)(random_context(rng, 2), codes, items)
    assert alone.scorable.tolist() == legal.tolist()


# ---------------------------------------------------------------- registry origins


def load_plugin(path: Path, module_name: str) -> ModuleType:
    """Import a plugin file under a module name (twice under two names: a double import)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PLUGIN = textwrap.dedent(
    """
    import torch

    from rewards import register


    @register("novelty_for_the_test")
    def novelty():
        return lambda batch: torch.zeros(batch.batch_size)
    """
)


@pytest.fixture
def plugins(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    first, second = tmp_path / "my_plugin.py", tmp_path / "other_plugin.py"
    first.write_text(PLUGIN)
    second.write_text("\n\n" + PLUGIN)  # the same name, two lines further down
    yield first, second
    REGISTRY.pop("novelty_for_the_test", None)


def test_registering_a_name_twice_names_both_origins(plugins: tuple[Path, Path]) -> None:
    first, second = plugins
    load_plugin(first, "my_plugin")
    assert str(origin("novelty_for_the_test")) == f"{first}:7"
    with pytest.raises(ValueError) as caught:
        load_plugin(second, "other_plugin")
    assert str(caught.value) == (
        f"reward 'novelty_for_the_test' is registered twice: {first}:7 and {second}:9; "
        "rename one of them"
    )
    assert origin("novelty_for_the_test").file == str(first)


def test_the_same_plugin_imported_twice_or_the_same_factory_again_is_accepted(
    plugins: tuple[Path, Path],
) -> None:
    first, _ = plugins
    load_plugin(first, "my_plugin")
    again = load_plugin(first, "my_plugin_again")  # a new factory object, same origin
    assert REGISTRY["novelty_for_the_test"].factory is again.novelty
    register("novelty_for_the_test")(again.novelty)  # the same factory: nothing changes
    assert REGISTRY["novelty_for_the_test"].factory is again.novelty
    assert origin("novelty_for_the_test") == Origin(str(first), 7, "novelty")


def test_a_factory_without_source_falls_back_to_its_module() -> None:
    """Factories defined where no source is known (exec'd code) are named by their module;
    two of them under one name cannot be told apart, so that is refused."""
    namespace: dict[str, object] = {"__name__": "generated_plugin"}
    exec(compile("def novelty():\n    return None\n", "<generated>", "exec"), namespace)
    register("novelty_without_source")(namespace["novelty"])
    try:
        assert origin("novelty_without_source") == Origin("generated_plugin", None, "novelty")
        exec(compile("def novelty():\n    return None\n", "<generated>", "exec"), namespace)
        with pytest.raises(ValueError, match="twice: generated_plugin.novelty and generated_"):
            register("novelty_without_source")(namespace["novelty"])
    finally:
        del REGISTRY["novelty_without_source"]
    with pytest.raises(ValueError, match="no reward named 'novelty_without_source'"):
        origin("novelty_without_source")


# ---------------------------------------------------------------- one engagement formula


def test_engagement_by_hand_in_the_simulator_and_the_oracle() -> None:
    """90 s watched + a like, and 30 s + a follow + a hate: 2.0 and 0.5, 2.5 for the slate."""
    feedback = np.zeros((1, 2, len(FEEDBACK_FIELDS)), dtype=np.float32)  # (B, S, F)
    feedback[0, :, feedback_index("watch_time")] = [90.0, 30.0]
    feedback[0, 0, feedback_index("like")] = 1
    feedback[0, 1, feedback_index("follow")] = 1
    feedback[0, 1, feedback_index("hate")] = 1
    assert true_engagement(feedback).tolist() == [2.5]
    assert item_engagement(torch.as_tensor(feedback)).tolist() == [[2.0, 0.5]]
    batch = RewardInput(items=np.array([[4, 7]]), feedback=feedback)
    assert (2 * build("oracle")(batch).total).tolist() == [2.5]
    assert engagement_formula(lambda name: {"watch_time": 120.0}.get(name, 1.0)) == 3.5


@pytest.mark.parametrize("seed", [0, 1])
def test_slate_size_times_the_oracle_is_the_simulators_true_engagement(seed: int) -> None:
    """On a real env step (blanks and repeats included), S * oracle equals
    info['true_engagement'] up to float32 rounding of the per-item values (and up to
    float64 rounding when the oracle's per-item formula runs in float64)."""
    env = OneRecVectorEnv(num_envs=5, max_episode_steps=3, catalog=default_catalog(num_items=500, seed=0))
    observation, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    slate = rng.integers(-1, 500, size=(5, env.config.slate_size))
    slate[0, 1] = slate[0, 0]
    _, _, _, _, info = env.step(slate)
    batch = RewardInput(items=slate, context=observation, feedback=info["feedback"])
    size = env.config.slate_size
    oracle = build("oracle")(batch).total.double().numpy()
    np.testing.assert_allclose(size * oracle, info["true_engagement"], rtol=1e-6, atol=1e-6)
    per_item = item_engagement(torch.as_tensor(info["feedback"], dtype=torch.float64))  # (B, S)
    np.testing.assert_allclose(
        per_item.sum(1).numpy(), info["true_engagement"], rtol=1e-12, atol=1e-12
    )
