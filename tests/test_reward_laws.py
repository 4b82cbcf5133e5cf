"""Laws of the reward system that hold for every input: spec algebra, registry refusals,
monotonicity end to end, invariances and equivalences between the ways a reward is called.

Companion of tests/test_reward_properties.py (whose strategies and small world it reuses);
each test's docstring states its law, and rewards/README.md lists every law in one table.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from rewards import (
    REGISTRY,
    BusinessConfig,
    BusinessWeighting,
    EnvReward,
    OracleReward,
    ParetoConfig,
    RewardInput,
    auc,
    build,
    pareto_search,
    parse_spec,
    register,
)
from rewards.protocol import REQUIREMENTS
from tests.test_reward_properties import (
    CATALOG,
    CODEBOOK,
    CODEC,
    LEVELS,
    MODEL,
    NUM_ITEMS,
    NUM_OBJECTIVES,
    RESOURCES,
    SETTINGS,
    SIGNS,
    item_batches,
    random_context,
    random_feedback,
)

TERMS = ["pscore", "format", "oracle", "oracle(field='like')", "business(pscore, alpha=0.5)"]
weights = st.floats(-3, 3, allow_subnormal=False)


def total(spec: str, batch: RewardInput) -> torch.Tensor:
    return build(spec, **RESOURCES)(batch).total


@st.composite
def distinct_batches(draw: st.DrawFn, max_batch: int = 5, max_slate: int = 6) -> RewardInput:
    """Slates of distinct items (no blanks, no repeats) with context, truth and codes."""
    batch, slate = draw(st.integers(1, max_batch)), draw(st.integers(1, max_slate))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    items = np.stack([rng.permutation(NUM_ITEMS)[:slate] for _ in range(batch)])  # (B, S)
    return RewardInput(items=items, context=random_context(rng, batch),
                       codes=CODEC.encode(torch.as_tensor(items)),
                       feedback=random_feedback(rng, items.shape))


# ---------------------------------------------------------------- spec algebra


@SETTINGS
@given(batch=item_batches(), pair=st.permutations(TERMS[:4]), first=weights, second=weights)
def test_a_sum_of_rewards_is_commutative(batch: RewardInput, pair: list[str], first: float,
                                         second: float) -> None:
    """w1*a + w2*b scores every slate as w2*b + w1*a does."""
    a, b = pair[:2]
    torch.testing.assert_close(total(f"({first!r})*{a} + ({second!r})*{b}", batch),
                               total(f"({second!r})*{b} + ({first!r})*{a}", batch))


@SETTINGS
@given(batch=item_batches(), pair=st.permutations(TERMS), weight=weights)
def test_a_zero_weight_drops_its_term_from_the_total(batch: RewardInput, pair: list[str],
                                                     weight: float) -> None:
    """w*a + 0*b totals exactly what w*a totals: a zero-weighted term is logged, not paid."""
    a, b = pair[:2]
    torch.testing.assert_close(total(f"({weight!r})*{a} + 0*{b}", batch),
                               total(f"({weight!r})*{a}", batch), rtol=0, atol=0)


@SETTINGS
@given(batch=item_batches(), pair=st.permutations(TERMS[:4]), outer=weights, inner=weights)
def test_a_weight_distributes_over_a_sum(batch: RewardInput, pair: list[str], outer: float,
                                         inner: float) -> None:
    """c*(a + w*b) == c*a + (c*w)*b, as parsed terms and as totals."""
    a, b = pair[:2]
    grouped = f"({outer!r})*({a} + ({inner!r})*{b})"
    expanded = f"({outer!r})*{a} + ({outer * inner!r})*{b}"
    parsed, wanted = parse_spec(grouped).terms, parse_spec(expanded).terms
    assert [call.text for _, call in parsed] == [call.text for _, call in wanted]
    assert [weight for weight, _ in parsed] == pytest.approx([weight for weight, _ in wanted])
    torch.testing.assert_close(total(grouped, batch), total(expanded, batch),
                               rtol=1e-5, atol=1e-5)


@SETTINGS
@given(batch=item_batches(), name=st.sampled_from(TERMS), weight=weights)
def test_unary_minus_negates_a_reward(batch: RewardInput, name: str, weight: float) -> None:
    """-a == (-1)*a, -(w*a) == (-w)*a, and a - a totals zero."""
    torch.testing.assert_close(total(f"-{name}", batch), -total(name, batch), rtol=0, atol=0)
    torch.testing.assert_close(total(f"-(({weight!r})*{name})", batch),
                               total(f"({-weight!r})*{name}", batch), rtol=0, atol=0)
    assert (total(f"{name} - {name}", batch) == 0).all()


# ---------------------------------------------------------------- registry refusals


@st.composite
def foreign_names(draw: st.DrawFn) -> str:
    """Strings that are not Python identifiers: empty, a leading digit, a symbol inside."""
    stem = draw(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True))
    return draw(st.sampled_from(["", f"1{stem}", f"{stem}-x", f"{stem} x", f"{stem}.x",
                                 f"{stem}(", f"*{stem}"]))


@SETTINGS
@given(name=foreign_names())
def test_the_registry_refuses_a_name_that_is_not_an_identifier(name: str) -> None:
    """register(name) with a name a spec could not call is a ValueError naming it."""
    before = dict(REGISTRY)
    with pytest.raises(ValueError, match="must be an identifier"):
        register(name)
    assert REGISTRY == before


@SETTINGS
@given(extra=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12),
       known=st.lists(st.sampled_from(REQUIREMENTS), unique=True))
def test_the_registry_refuses_an_unknown_requirement(extra: str, known: list[str]) -> None:
    """register(..., requires=...) naming anything but context, codes, feedback is refused,
    with the unknown name and the known ones in the message."""
    assume(extra not in REQUIREMENTS)
    with pytest.raises(ValueError, match=f"{extra}.*choose from"):
        register("law_requirement", requires=(*known, extra))
    assert "law_requirement" not in REGISTRY


@SETTINGS
@given(name=st.sampled_from(sorted(REGISTRY)), value=st.floats(0, 1))
def test_the_registry_refuses_a_second_factory_under_a_taken_name(name: str,
                                                                   value: float) -> None:
    """Registering another factory under a taken name is a ValueError naming both origins;
    the first registration stays."""
    before = REGISTRY[name]

    def impostor():
        return lambda batch: torch.full((batch.batch_size,), value)

    with pytest.raises(ValueError, match=f"{name!r} is registered twice.*test_reward_laws"):
        register(name)(impostor)
    assert REGISTRY[name] is before


# ---------------------------------------------------------------- P-score, end to end


@SETTINGS
@given(batch=item_batches(), objective=st.integers(0, NUM_OBJECTIVES - 1),
       shift=st.floats(0.01, 5.0))
def test_pscore_follows_each_tower_through_the_whole_model(batch: RewardInput, objective: int,
                                                           shift: float) -> None:
    """Raising one tower's output (its bias) raises every shown item's P-score when the
    objective is to be raised and lowers it when it is to be lowered (hate), through the
    full forward pass: embeddings, history attention, shared MLP, towers, fusion."""
    model = copy.deepcopy(MODEL)
    with torch.no_grad():
        model.tower_out_bias[objective] += shift
    before = build("pscore", pscore_model=MODEL).item_scores(batch)[batch.shown]
    after = build("pscore", pscore_model=model).item_scores(batch)[batch.shown]
    direction = float(SIGNS[objective])
    assert (direction * (after - before) >= -1e-6).all()


# ---------------------------------------------------------------- invariances


@SETTINGS
@given(batch=distinct_batches(), name=st.sampled_from(
    ["pscore", "format", "oracle", "business(pscore, alpha=0.3, f=0.1)",
     "business(oracle, alpha=0.5, f=0, fresh_days=30, fresh_boost=0.5)"]),
    order=st.randoms(use_true_random=False))
def test_item_scores_follow_their_items_when_slots_are_permuted(batch: RewardInput, name: str,
                                                                order) -> None:
    """On slates of distinct items, permuting the slots permutes the item scores: an item's
    score depends on the item, the user and the slate as a set, never on its position."""
    slots = list(range(batch.items.shape[1]))
    order.shuffle(slots)
    slots = torch.tensor(slots)
    shuffled = RewardInput(items=batch.items[:, slots], context=batch.context,
                           codes=batch.codes[:, slots], feedback=batch.feedback[:, slots])
    reward = build(name, **RESOURCES)
    torch.testing.assert_close(reward.item_scores(shuffled), reward.item_scores(batch)[:, slots])


@SETTINGS
@given(batch=item_batches(), seed=st.integers(0, 2**32 - 1),
       field=st.sampled_from(["engagement", "watch_time", "like", "hate"]))
def test_the_oracle_ignores_the_context_and_the_codes(batch: RewardInput, seed: int,
                                                      field: str) -> None:
    """The oracle reads the truth of the shown items only: another user's context, or other
    codes for the same items, leave it unchanged."""
    rng = np.random.default_rng(seed)
    other = RewardInput(items=batch.items, context=random_context(rng, batch.batch_size),
                        codes=torch.as_tensor(rng.integers(-1, CODEBOOK + 2, size=(
                            *batch.items.shape, LEVELS))),
                        feedback=batch.feedback)
    reward = OracleReward(field)
    torch.testing.assert_close(reward(other).total, reward(batch).total, rtol=0, atol=0)


@SETTINGS
@given(scores=st.lists(st.integers(-40, 40).map(lambda step: step / 8), min_size=2,
                      max_size=20),  # a grid: distinct scores stay distinct in float64
       labels=st.lists(st.booleans(), min_size=20, max_size=20),
       transform=st.sampled_from(["affine", "exp", "cube", "sigmoid", "round"]),
       scale=st.floats(0.1, 10))
def test_auc_is_invariant_under_increasing_transforms(scores: list[float], labels: list[bool],
                                                      transform: str, scale: float) -> None:
    """AUC depends on the order of the scores only: a strictly increasing transform
    (a*x + b with a > 0, exp, x^3, sigmoid) keeps it, ties included (scores that round
    together in floating point are not distinct any more, so they are drawn on a grid)."""
    labels = labels[: len(scores)]
    assume(any(labels) and not all(labels))
    values = torch.tensor(scores, dtype=torch.float64)
    if transform == "round":  # ties: a transform of rounded scores keeps their ties
        values = values.round()
    mapped = {"affine": scale * values - 3.0, "exp": (values / 5).exp(), "cube": values**3,
              "sigmoid": torch.sigmoid(values), "round": scale * values + 1.0}[transform]
    truth = torch.tensor(labels)
    assert float(auc(mapped, truth)) == pytest.approx(float(auc(values, truth)), abs=1e-12)


@SETTINGS
@given(seed=st.integers(0, 10**6), rows=st.integers(20, 120))
def test_the_pareto_search_is_deterministic_under_its_seed(seed: int, rows: int) -> None:
    """The same logits, labels and seed give the same weights, AUCs and accepted steps."""
    rng = np.random.default_rng(seed)
    labels = torch.as_tensor(rng.random((rows, NUM_OBJECTIVES)) < 0.3)
    logits = torch.as_tensor(rng.normal(size=(rows, NUM_OBJECTIVES))) + labels.double() * SIGNS
    config = ParetoConfig(steps=10, seed=seed % 1000)
    first, second = (pareto_search(logits, labels, SIGNS, config) for _ in range(2))
    assert torch.equal(first.weights, second.weights)
    assert first.accepted == second.accepted
    torch.testing.assert_close(first.final_auc, second.final_auc, rtol=0, atol=0,
                               equal_nan=True)


# ---------------------------------------------------------------- format on codes


@SETTINGS
@given(batch=distinct_batches())
def test_format_is_exactly_one_on_the_codecs_own_codes(batch: RewardInput) -> None:
    """Slates of distinct items written in their own codes are fully legal: format 1."""
    coded = RewardInput.from_codes(batch.codes, CODEC, batch.context)
    assert (build("format", codec=CODEC)(coded).total == 1.0).all()


@SETTINGS
@given(batch=distinct_batches(), level=st.integers(0, LEVELS - 1),
       value=st.one_of(st.integers(-10**6, -1), st.integers(CODEBOOK, 10**6)))
def test_format_is_zero_for_every_out_of_range_code(batch: RewardInput, level: int,
                                                    value: int) -> None:
    """A code with any level outside [0, codebook size) names no item: every slot written
    so scores 0, whatever the value (not only -1)."""
    codes = batch.codes.clone()
    codes[..., level] = value
    coded = RewardInput.from_codes(codes, CODEC, batch.context)
    assert (build("format", codec=CODEC)(coded).total == 0.0).all()


# ---------------------------------------------------------------- business


farms = dataclasses.replace(CATALOG, content_farm=np.arange(NUM_ITEMS) % 3 == 0)


def business(inner: str, **config: float) -> BusinessWeighting:
    return BusinessWeighting(build(inner, **RESOURCES), farms, BusinessConfig(**config))


@SETTINGS
@given(batch=item_batches(), alpha=st.floats(0.05, 1.0), low=st.floats(0.0, 0.9),
       step=st.floats(0.0, 0.5))
def test_business_is_non_decreasing_in_the_threshold(batch: RewardInput, alpha: float,
                                                     low: float, step: float) -> None:
    """A higher threshold f demotes fewer slates: the reward never falls as f rises."""
    high = min(low + step, 0.99)
    strict = business("pscore + 0.5*format", alpha=alpha, f=low)(batch).total
    lenient = business("pscore + 0.5*format", alpha=alpha, f=high)(batch).total
    assert (lenient >= strict - 1e-6).all()


@SETTINGS
@given(batch=item_batches(), boost=st.sampled_from(["fresh_boost", "long_tail_boost"]),
       low=st.floats(0.0, 2.0), step=st.floats(0.0, 2.0))
def test_business_is_non_decreasing_in_every_boost(batch: RewardInput, boost: str, low: float,
                                                   step: float) -> None:
    """A larger freshness or long-tail boost never lowers a slate's reward, on a reward
    that is negative for hated items (engagement) as on a non-negative one."""
    base = {"alpha": 0.5, "f": 0.2, "fresh_days": 40.0, "long_tail_quantile": 0.5}
    for inner in ("pscore", "oracle"):
        smaller = business(inner, **base, **{boost: low})(batch).total
        larger = business(inner, **base, **{boost: low + step})(batch).total
        assert (larger >= smaller - 1e-5).all()


@SETTINGS
@given(batch=item_batches(), alpha=st.floats(0.05, 1.0), threshold=st.floats(0.0, 0.95),
       first=st.floats(0.0, 4.0), second=st.floats(0.0, 4.0))
def test_business_is_linear_over_non_negative_sums(batch: RewardInput, alpha: float,
                                                   threshold: float, first: float,
                                                   second: float) -> None:
    """For non-negative item rewards a and b and weights w1, w2 >= 0,
    business(w1*a + w2*b) == w1*business(a) + w2*business(b): the multipliers depend on the
    items only, never on the reward's value."""
    config = {"alpha": alpha, "f": threshold, "fresh_days": 20.0, "fresh_boost": 0.3}
    combined = business(f"{first!r}*pscore + {second!r}*format", **config)(batch).total
    separate = (first * business("pscore", **config)(batch).total
                + second * business("format", **config)(batch).total)
    torch.testing.assert_close(combined, separate, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- equivalent callers


@SETTINGS
@given(batch=item_batches(), spec=st.sampled_from(
    ["pscore", "oracle", "pscore + 0.5*format - 0.2*oracle(field='hate')",
     "business(pscore + 0.3*oracle, alpha=0.4, f=0.2)"]))
def test_the_env_reward_pays_what_the_reward_scores(batch: RewardInput, spec: str) -> None:
    """EnvReward(r)(observation, slate, feedback), the simulator's reward_fn, returns
    r's totals for the same slates, observation and truth, as float64 numpy."""
    reward = build(spec, **RESOURCES)
    context = {key: np.asarray(value) for key, value in batch.context.items()}
    paid = EnvReward(reward)(context, batch.items.numpy(), batch.feedback.numpy())
    assert isinstance(paid, np.ndarray) and paid.dtype == np.float64
    np.testing.assert_allclose(paid, reward(batch).total.double().numpy(), rtol=0, atol=0)
