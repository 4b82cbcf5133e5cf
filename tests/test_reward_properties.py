"""Properties of the rewards, each checked on inputs that hypothesis generates.

One test function per property; its docstring states the property. Shapes, flags, weights
and specs are drawn by hypothesis; bulk arrays come from a numpy generator seeded by a drawn
seed (so a failure shrinks to a small, reproducible case).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from envs.catalog import CatalogConfig, generate_synthetic_catalog
from envs.spec import FEEDBACK_FIELDS, NUM_FEEDBACK, STATIC_CARDINALITIES
from rewards import (
    REGISTRY,
    BusinessConfig,
    BusinessWeighting,
    FormatReward,
    OracleReward,
    ParetoConfig,
    PScoreConfig,
    PScoreModel,
    RewardInput,
    SemanticIdVocabulary,
    SpecError,
    TRLRewardFunction,
    auc,
    build,
    format_selection,
    fuse_logits,
    pareto_search,
    parse_spec,
    slate_mean,
)
from rewards.oracle import ORACLE_FIELDS, item_engagement
from rewards.pareto import fused_auc, min_norm_point, paired_auc_z, placements
from rewards.pscore_train import objective_labels, objective_targets
from tests.test_reward_doubles import make_codec, single_threaded_torch  # noqa: F401

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NUM_ITEMS, LEVELS, CODEBOOK = 60, 2, 10  # 100 code tuples, 60 of them legal
CATALOG = generate_synthetic_catalog(
    CatalogConfig(num_items=NUM_ITEMS, num_creators=6, content_dim=4), seed=0
)
CODEC = make_codec(NUM_ITEMS, levels=LEVELS, codebook_size=CODEBOOK)
with torch.random.fork_rng(devices=[]):
    torch.manual_seed(0)
    MODEL = PScoreModel(
        PScoreConfig.from_catalog(CATALOG, embed_dim=8, hidden_dim=16, tower_dim=8), CATALOG
    ).eval()
RESOURCES = {"pscore_model": MODEL, "codec": CODEC, "catalog": CATALOG}
NUM_OBJECTIVES = len(MODEL.config.objectives)
SIGNS = MODEL.config.signs


def random_context(rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    """An observation with short history pathways (padding included)."""

    def pathway(length: int) -> tuple[np.ndarray, np.ndarray]:
        items = rng.integers(-1, NUM_ITEMS, size=(batch, length))
        feedback = rng.random((batch, length, NUM_FEEDBACK)) * (items >= 0)[..., None]
        return items, feedback.astype(np.float32)

    short_items, short_feedback = pathway(4)
    positive_items, positive_feedback = pathway(5)
    static = np.stack([rng.integers(0, size, size=batch) for size in STATIC_CARDINALITIES], 1)
    return {
        "static": static,
        "short_term_items": short_items,
        "short_term_feedback": short_feedback,
        "positive_items": positive_items,
        "positive_feedback": positive_feedback,
    }


def random_feedback(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    feedback = (rng.random((*shape, NUM_FEEDBACK)) < 0.3).astype(np.float32)
    feedback[..., 0] = rng.random(shape) * 60.0
    feedback[..., 1] = rng.random(shape) * 3.0
    return feedback


@st.composite
def item_batches(draw: st.DrawFn, max_batch: int = 6, max_slate: int = 5) -> RewardInput:
    """Item slates (blanks included) with context and true feedback."""
    batch, slate = draw(st.integers(1, max_batch)), draw(st.integers(1, max_slate))
    blank_share = draw(st.sampled_from([0.0, 0.3, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    items = rng.integers(0, NUM_ITEMS, size=(batch, slate))
    items[rng.random(items.shape) < blank_share] = -1
    feedback = random_feedback(rng, items.shape) * (items >= 0)[..., None]
    return RewardInput(items=items, context=random_context(rng, batch), feedback=feedback)


@st.composite
def code_batches(draw: st.DrawFn, distinct: bool = False) -> RewardInput:
    """Generated code slates: legal, illegal and out-of-range codes; distinct tuples if asked."""
    batch, slate = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if distinct:
        keys = np.stack([rng.permutation(CODEBOOK**LEVELS)[:slate] for _ in range(batch)])
        codes = np.stack([keys // CODEBOOK, keys % CODEBOOK], -1)
    else:
        codes = rng.integers(0, 4, size=(batch, slate, LEVELS))  # small range: many repeats
    corrupt = rng.random((batch, slate)) < draw(st.sampled_from([0.0, 0.2]))
    codes[corrupt, 0] = -1
    return RewardInput.from_codes(codes, CODEC, random_context(rng, batch))


def permuted(batch: RewardInput, order: torch.Tensor) -> RewardInput:
    """The same slates in another batch order."""
    return RewardInput(
        items=batch.items[order],
        context={key: value[order] for key, value in batch.context.items()},
        codes=None if batch.codes is None else batch.codes[order],
        feedback=None if batch.feedback is None else batch.feedback[order],
    )


# ---------------------------------------------------------------- P-score


@SETTINGS
@given(
    rows=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(0.0, 5.0),
)
def test_pareto_monotonicity_of_the_fused_score(rows: int, seed: int, scale: float) -> None:
    """An item at least as good on every predicted objective (higher on positive objectives,
    lower on hate) never gets a lower P-score, for any non-negative fusion weights."""
    rng = np.random.default_rng(seed)
    logits = torch.as_tensor(rng.normal(size=(rows, NUM_OBJECTIVES)) * 4, dtype=torch.float32)
    better = logits + SIGNS * torch.as_tensor(
        rng.random((rows, NUM_OBJECTIVES)) * scale, dtype=torch.float32
    )
    weights = torch.as_tensor(
        rng.random(NUM_OBJECTIVES) * (rng.random(NUM_OBJECTIVES) < 0.8), dtype=torch.float32
    )
    worse_score = torch.sigmoid(fuse_logits(logits, weights, SIGNS))
    better_score = torch.sigmoid(fuse_logits(better, weights, SIGNS))
    assert (better_score >= worse_score).all()


@SETTINGS
@given(
    watch=st.lists(st.floats(0.0, 1e4), min_size=1, max_size=12),
    scale=st.floats(0.01, 1e3),
)
def test_watch_time_target_is_monotone_in_seconds_and_halves_at_the_scale(
    watch: list[float], scale: float
) -> None:
    """The watch-time tower's soft target lies in [0, 1] and never falls as watch seconds
    rise (more watching never teaches a lower score); its AUC label is "w >= tau", so every
    positive's target is at least every negative's."""
    feedback = np.zeros((len(watch), NUM_FEEDBACK), dtype=np.float32)
    feedback[:, FEEDBACK_FIELDS.index("watch_time")] = watch
    seconds = torch.as_tensor(feedback[:, FEEDBACK_FIELDS.index("watch_time")])
    target = objective_targets(feedback, ("watch_time",), scale)[:, 0]
    label = objective_labels(feedback, ("watch_time",), scale)[:, 0]
    assert ((target >= 0) & (target <= 1)).all()
    assert (target[seconds.argsort()].diff() >= 0).all()
    assert label.tolist() == (seconds >= scale).tolist()
    if label.any() and (~label).any():
        assert target[label].min() >= target[~label].max()


@SETTINGS
@given(rows=st.integers(1, 6), columns=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_min_norm_point_raises_every_objective_or_is_zero(
    rows: int, columns: int, seed: int
) -> None:
    """MGDA's min-norm point d of the hull of objective gradients g is a common ascent
    direction: g . d >= |d|^2 for every g (so d != 0 raises all at first order), and it is
    no longer than the shortest gradient."""
    vectors = torch.as_tensor(np.random.default_rng(seed).normal(size=(rows, columns)))
    point = min_norm_point(vectors)
    squared = float(point @ point)
    assert (vectors @ point >= squared - 1e-6).all()
    assert point.norm() <= vectors.norm(dim=1).min() + 1e-9


@SETTINGS
@given(batch=item_batches())
def test_pscore_is_a_probability_and_zero_on_blanks(batch: RewardInput) -> None:
    """P-scores of shown items lie in [0, 1]; blanks score exactly 0; so does the slate mean."""
    reward = build("pscore", **RESOURCES)
    scores = reward.item_scores(batch)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert (scores[batch.items == -1] == 0).all()
    total = reward(batch).total
    assert ((total >= 0) & (total <= 1)).all()


@SETTINGS
@given(batch=item_batches(), seed=st.integers(0, 1000))
def test_rewards_are_equivariant_to_batch_permutation(batch: RewardInput, seed: int) -> None:
    """Reordering the slates of a batch reorders their rewards and nothing else."""
    reward = build("business(pscore, alpha=0.5, f=0.2) + 0.5*format + 0.1*oracle", **RESOURCES)
    order = torch.randperm(batch.batch_size, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(reward(permuted(batch, order)).total, reward(batch).total[order])


@SETTINGS
@given(batch=item_batches(), seed=st.integers(0, 1000))
def test_pscore_slate_reward_ignores_slot_order(batch: RewardInput, seed: int) -> None:
    """The P-score of a slate does not depend on the order of its items (each item attends
    over the user's history, not over its neighbours)."""
    reward = build("pscore", **RESOURCES)
    slots = torch.randperm(batch.items.shape[1], generator=torch.Generator().manual_seed(seed))
    shuffled = RewardInput(items=batch.items[:, slots], context=batch.context)
    torch.testing.assert_close(reward(shuffled).total, reward(batch).total)


@SETTINGS
@given(batch=item_batches())
def test_same_inputs_give_the_same_rewards(batch: RewardInput) -> None:
    """Scoring the same batch twice (with freshly built rewards) gives identical numbers."""
    spec = "pscore + 0.5*format - 0.2*oracle(field='hate')"
    first, second = build(spec, **RESOURCES)(batch), build(spec, **RESOURCES)(batch)
    torch.testing.assert_close(first.total, second.total, rtol=0, atol=0)
    for name in first.components:
        torch.testing.assert_close(first.components[name], second.components[name], rtol=0, atol=0)


@SETTINGS
@given(
    scores=st.lists(st.floats(-5, 5), min_size=1, max_size=8),
    items=st.lists(st.integers(-1, 3), min_size=8, max_size=8),
)
def test_slate_mean_counts_blanks_and_repeats_as_zero(
    scores: list[float], items: list[int]
) -> None:
    """The slate reward of a per-item reward is (sum over shown items) / S: a blank or a
    repeat of an earlier item adds zero and still counts in S, so neither an illegal code
    nor copying the best item can raise the reward of a slate."""
    slate = items[: len(scores)]
    first = [item >= 0 and item not in slate[:slot] for slot, item in enumerate(slate)]
    expected = sum(score for score, shown in zip(scores, first, strict=True) if shown) / len(scores)
    mean = slate_mean(torch.tensor([scores]), torch.tensor([slate]))
    assert float(mean[0]) == pytest.approx(expected, abs=1e-5)


# ---------------------------------------------------------------- format


@SETTINGS
@given(batch=code_batches(distinct=True))
def test_format_reward_equals_the_codec_legal_share(batch: RewardInput) -> None:
    """With distinct codes in a slate, the format reward is the share of codes the codec
    calls legal."""
    expected = CODEC.is_legal(batch.codes).float().mean(1)
    torch.testing.assert_close(build("format", codec=CODEC)(batch).total, expected)


@SETTINGS
@given(batch=code_batches())
def test_duplicates_count_as_illegal_after_the_first(batch: RewardInput) -> None:
    """The format reward is the number of DISTINCT legal items in the slate over S."""
    reward = build("format", codec=CODEC)(batch).total
    for row in range(batch.batch_size):
        items = CODEC.decode(batch.codes[row])
        distinct = len(set(items[items >= 0].tolist()))
        assert float(reward[row]) == pytest.approx(distinct / batch.items.shape[1])


@SETTINGS
@given(batch=code_batches(distinct=True), source=st.integers(0, 5), target=st.integers(0, 5))
def test_copying_an_item_into_another_slot_never_raises_format(
    batch: RewardInput, source: int, target: int
) -> None:
    """Overwriting a slot with a copy of another slot's code never raises the format reward,
    and lowers it when the overwritten slot was legal and the copy is legal."""
    slate = batch.codes.shape[1]
    source, target = source % slate, target % slate
    assume(source != target)
    codes = batch.codes.clone()
    codes[:, target] = codes[:, source]
    before = build("format", codec=CODEC)(batch).total
    after = build("format", codec=CODEC)(RewardInput.from_codes(codes, CODEC)).total
    assert (after <= before + 1e-6).all()
    legal = CODEC.is_legal(batch.codes)
    dropped = legal[:, target] & legal[:, source]
    assert (after[dropped] < before[dropped]).all()


@SETTINGS
@given(batch=code_batches())
def test_format_of_code_slates_matches_format_of_their_decoded_items(batch: RewardInput) -> None:
    """Scoring codes through the codec and scoring the decoded item slates agree."""
    decoded = RewardInput(items=batch.items)
    torch.testing.assert_close(FormatReward(CODEC)(batch).total, FormatReward()(decoded).total)


@SETTINGS
@given(
    legal=st.lists(st.lists(st.booleans(), min_size=6, max_size=6), min_size=1, max_size=5),
    k=st.integers(1, 6),
    seed=st.integers(0, 2**31),
)
def test_format_selection_keeps_only_legal_samples_and_never_penalises(
    legal: list[list[bool]], k: int, seed: int
) -> None:
    """The report's rule: of K random samples per group, legal ones get advantage 1 and
    illegal ones are dropped; no advantage is ever negative, at most K per group are kept,
    and with every sample legal exactly K are kept."""
    mask = torch.tensor(legal)
    selected, advantages = format_selection(mask, k, torch.Generator().manual_seed(seed))
    assert not (selected & ~mask).any()
    assert (advantages >= 0).all() and torch.equal(advantages, selected.float())
    assert (selected.sum(1) <= k).all()
    everything, _ = format_selection(torch.ones_like(mask), k, torch.Generator().manual_seed(seed))
    assert (everything.sum(1) == k).all()


# ---------------------------------------------------------------- business


@SETTINGS
@given(
    batch=item_batches(),
    alpha=st.floats(0.05, 1.0),
    threshold=st.floats(0.0, 0.95),
)
def test_business_changes_only_flagged_items_above_the_threshold(
    batch: RewardInput, alpha: float, threshold: float
) -> None:
    """The content-farm rule multiplies a flagged item's reward by alpha exactly when the
    share of its slate's slots that are flagged or not shown (blank, repeat) exceeds f;
    every other item keeps its reward, and so does a negative reward (a hated item's
    engagement): a demotion never raises."""
    inner = build("oracle", **RESOURCES)
    business = BusinessWeighting(inner, CATALOG, BusinessConfig(alpha=alpha, f=threshold))
    before, after = inner.item_scores(batch), business.item_scores(batch)
    flagged = torch.as_tensor(CATALOG.content_farm)[batch.items.clamp(min=0)] & batch.shown
    share = (flagged | ~batch.shown).sum(1) / batch.items.shape[1]
    demoted = flagged & (share > threshold)[:, None]
    torch.testing.assert_close(after[~demoted], before[~demoted])
    torch.testing.assert_close(
        after[demoted], torch.where(before >= 0, alpha * before, before)[demoted]
    )


@SETTINGS
@given(batch=item_batches(), alpha=st.floats(0.05, 1.0), threshold=st.floats(0.0, 0.95))
def test_business_is_non_decreasing_in_alpha(
    batch: RewardInput, alpha: float, threshold: float
) -> None:
    """A milder demotion (larger alpha) never lowers a slate's business reward."""
    inner = build("oracle", **RESOURCES)
    milder = min(1.0, alpha + 0.1)
    strict = BusinessWeighting(inner, CATALOG, BusinessConfig(alpha=alpha, f=threshold))
    mild = BusinessWeighting(inner, CATALOG, BusinessConfig(alpha=milder, f=threshold))
    assert (mild(batch).total >= strict(batch).total - 1e-6).all()


@SETTINGS
@given(batch=item_batches())
def test_neutral_business_weighting_is_the_identity(batch: RewardInput) -> None:
    """alpha = 1 without boosts leaves any wrapped reward unchanged."""
    plain = build("pscore + 0.5*format", **RESOURCES)
    wrapped = build("business(pscore + 0.5*format, alpha=1)", **RESOURCES)
    torch.testing.assert_close(wrapped(batch).total, plain(batch).total)


@SETTINGS
@given(
    batch=item_batches(),
    fresh_boost=st.floats(0.0, 2.0),
    tail_boost=st.floats(0.0, 2.0),
    quantile=st.floats(0.05, 0.95),
)
def test_boosts_multiply_exactly_the_fresh_and_long_tail_items(
    batch: RewardInput, fresh_boost: float, tail_boost: float, quantile: float
) -> None:
    """A fresh item's reward is multiplied by (1 + fresh_boost), a long-tail item's by
    (1 + long_tail_boost), both for an item that is both; other items, and negative
    rewards (a boost never lowers), are untouched."""
    inner = build("oracle", **RESOURCES)
    config = BusinessConfig(
        alpha=1.0,
        fresh_days=10.0,
        fresh_boost=fresh_boost,
        long_tail_quantile=quantile,
        long_tail_boost=tail_boost,
    )
    after = BusinessWeighting(inner, CATALOG, config).item_scores(batch)
    ids = batch.items.clamp(min=0).numpy()
    fresh = torch.as_tensor(CATALOG.age_days[ids] < 10.0) & batch.shown
    tail = (
        torch.as_tensor(CATALOG.popularity[ids] < np.quantile(CATALOG.popularity, quantile))
        & batch.shown
    )
    factor = (1 + fresh_boost * fresh.float()) * (1 + tail_boost * tail.float())
    before = inner.item_scores(batch)
    torch.testing.assert_close(after, torch.where(before >= 0, before * factor, before))


# ---------------------------------------------------------------- composition and specs


@SETTINGS
@given(
    batch=item_batches(),
    weights=st.lists(st.floats(-3, 3, allow_subnormal=False), min_size=3, max_size=3),
)
def test_composition_is_linear_in_its_weights(batch: RewardInput, weights: list[float]) -> None:
    """build('a*x + b*y + c*z').total == a*x.total + b*y.total + c*z.total."""
    names = ("pscore", "format", "oracle(field='like')")
    spec = " + ".join(f"({weight!r})*{name}" for weight, name in zip(weights, names, strict=True))
    total = build(spec, **RESOURCES)(batch).total
    expected = sum(
        weight * build(name, **RESOURCES)(batch).total
        for weight, name in zip(weights, names, strict=True)
    )
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-5)


@SETTINGS
@given(batch=item_batches(), first=st.floats(0.1, 5), second=st.floats(0.1, 5))
def test_components_are_unweighted_and_do_not_depend_on_weights(
    batch: RewardInput, first: float, second: float
) -> None:
    """The breakdown of a weighted sum holds each term's own, unweighted value."""
    output = build(f"{first!r}*pscore + {second!r}*format", **RESOURCES)(batch)
    torch.testing.assert_close(
        output.components["pscore"], build("pscore", **RESOURCES)(batch).total
    )
    torch.testing.assert_close(
        output.components["format"], build("format", **RESOURCES)(batch).total
    )


spec_terms = st.tuples(
    st.floats(-4, 4, allow_subnormal=False).filter(lambda value: abs(value) > 1e-3),
    st.sampled_from(
        [
            "pscore",
            "format",
            "oracle",
            "oracle(field='like')",
            "business(pscore, alpha=0.5, f=0.3)",
            "business(pscore + 0.5*oracle, f=0.2)",
        ]
    ),
)


@SETTINGS
@given(terms=st.lists(spec_terms, min_size=1, max_size=4))
def test_spec_text_round_trips(terms: list[tuple[float, str]]) -> None:
    """The canonical text of a parsed spec parses back to the same weighted sum."""
    spec = " + ".join(f"{weight!r}*{name}" for weight, name in terms)
    parsed = parse_spec(spec)
    again = parse_spec(parsed.text)
    assert [call.text for _, call in again.terms] == [call.text for _, call in parsed.terms]
    for (weight, _), (weight_again, _) in zip(parsed.terms, again.terms, strict=True):
        assert weight_again == weight  # exactly: the text is the number's shortest repr


@SETTINGS
@given(value=st.one_of(st.floats(allow_nan=False, allow_infinity=False, min_value=0,
                                 exclude_min=True), st.integers(0, 10**30)))
def test_numbers_print_exactly_in_spec_text(value: float | int) -> None:
    """`parse(print(x)) == x` for every finite positive float and every int: calls are
    merged by their text, so a rounded number would merge different rewards."""
    call = parse_spec(f"x(n={value!r})").terms[0][1]
    assert dict(parse_spec(call.text).terms[0][1].kwargs)["n"] == value
    weight = parse_spec(f"{value!r}*format").terms[0][0]
    assert parse_spec(parse_spec(f"{value!r}*format").text).terms[0][0] == weight


@settings(max_examples=200, deadline=None)  # the share must cross f: a narrow event
@given(batch=item_batches(), alpha=st.floats(0.05, 1.0), threshold=st.floats(0.0, 0.95),
       slot=st.integers(0, 100), copy=st.booleans(),
       inner=st.sampled_from(["format", "pscore", "pscore + 0.5*format"]))
def test_a_blank_or_a_copy_never_raises_business(batch: RewardInput, alpha: float,
                                                 threshold: float, slot: int, copy: bool,
                                                 inner: str) -> None:
    """README's promise holds under business(...) too: replacing a slot by a blank, or by a
    copy of the slate's first item, never raises a slate's reward (non-negative inner)."""
    farms = dataclasses.replace(CATALOG, content_farm=np.arange(CATALOG.num_items) % 2 == 0)
    reward = BusinessWeighting(build(inner, **RESOURCES), farms,  # every other item flagged
                               BusinessConfig(alpha=alpha, f=threshold))
    items = batch.items.clone()
    column = slot % items.shape[1]
    if copy and column > 0:
        items[:, column] = items[:, 0]
    else:
        items[:, column] = -1
    changed = dataclasses.replace(batch, items=items)
    assert (reward(changed).total <= reward(batch).total + 1e-6).all()


@settings(max_examples=200, deadline=None)
@given(
    spec=st.text(alphabet=st.sampled_from(list("pscoreformat+-*/(),=.0123456789 '_x")), max_size=30)
)
def test_any_string_parses_or_fails_with_a_positioned_spec_error(spec: str) -> None:
    """The grammar never crashes: a string is a valid spec, or a SpecError (a ValueError)
    whose position lies inside the string and whose message shows the spec."""
    try:
        parse_spec(spec)
    except SpecError as error:
        assert 0 <= error.position <= len(spec)
        assert spec in str(error)


@SETTINGS
@given(name=st.from_regex(r"[a-z][a-z_]{2,10}", fullmatch=True))
def test_an_unknown_reward_name_is_named_in_the_error(name: str) -> None:
    """Building a spec with an unregistered name raises a SpecError naming it."""
    assume(name not in REGISTRY)
    with pytest.raises(SpecError, match=name):
        build(f"pscore + 0.5*{name}", **RESOURCES)


# ---------------------------------------------------------------- TRL adapter


@SETTINGS
@given(batch=code_batches(), seed=st.integers(0, 1000))
def test_trl_adapter_gives_one_value_per_completion_equal_to_the_direct_call(
    batch: RewardInput, seed: int
) -> None:
    """The TRL-convention function returns exactly one float per completion, the same
    numbers as calling the reward on the same codes and contexts directly."""
    reward = build("pscore + 0.5*format", **RESOURCES)
    vocabulary = SemanticIdVocabulary.from_codec(CODEC, offset=5)
    users = list(range(batch.batch_size))

    def contexts(indices: np.ndarray) -> dict[str, torch.Tensor]:
        return {key: value[torch.as_tensor(indices)] for key, value in batch.context.items()}

    function = TRLRewardFunction(reward, CODEC, vocabulary, batch.codes.shape[1], contexts)
    completion_ids = vocabulary.tokens(batch.codes.clamp(min=0)).tolist()
    direct_batch = RewardInput.from_codes(batch.codes.clamp(min=0), CODEC, batch.context)
    values = function(
        prompts=["p"] * len(users),
        completions=["c"] * len(users),
        completion_ids=completion_ids,
        user_index=users,
    )
    assert len(values) == batch.batch_size and all(isinstance(value, float) for value in values)
    torch.testing.assert_close(torch.tensor(values), reward(direct_batch).total)


@SETTINGS
@given(batch=code_batches(), missing=st.lists(st.booleans(), min_size=5, max_size=5))
def test_trl_adapter_has_no_opinion_without_a_context(
    batch: RewardInput, missing: list[bool]
) -> None:
    """A completion whose row has no user index gets None; the others keep their values."""
    reward = build("pscore", **RESOURCES)
    vocabulary = SemanticIdVocabulary.from_codec(CODEC)

    def contexts(indices: np.ndarray) -> dict[str, torch.Tensor]:
        return {key: value[torch.as_tensor(indices)] for key, value in batch.context.items()}

    function = TRLRewardFunction(reward, CODEC, vocabulary, batch.codes.shape[1], contexts)
    completion_ids = vocabulary.tokens(batch.codes).tolist()
    users = [None if missing[row] else row for row in range(batch.batch_size)]
    everyone = function(completion_ids=completion_ids, user_index=list(range(batch.batch_size)))
    values = function(completion_ids=completion_ids, user_index=users)
    for row, value in enumerate(values):
        assert (value is None) == missing[row]
        if value is not None:
            assert value == pytest.approx(everyone[row], abs=1e-6)


@SETTINGS
@given(batch=code_batches(), offset=st.integers(0, 50))
def test_vocabulary_tokens_and_codes_are_inverse(batch: RewardInput, offset: int) -> None:
    """Codes written as tokens read back as the same codes (out-of-range codes as -1)."""
    vocabulary = SemanticIdVocabulary.from_codec(CODEC, offset=offset)
    codes = batch.codes.clamp(min=0)
    tokens = vocabulary.tokens(codes).tolist()
    torch.testing.assert_close(vocabulary.codes(tokens, codes.shape[1]), codes)


# ---------------------------------------------------------------- oracle


@SETTINGS
@given(batch=item_batches(), field=st.sampled_from(ORACLE_FIELDS))
def test_oracle_is_the_slate_mean_of_the_true_outcome(batch: RewardInput, field: str) -> None:
    """The oracle of a slate is the mean over its S slots of the true per-item outcome of the
    shown items (engagement: watch minutes plus behaviour bonuses, as the simulator counts
    it), and it refuses to score without a simulator outcome."""
    per_item = (
        item_engagement(batch.feedback)
        if field == "engagement"
        else batch.feedback[..., FEEDBACK_FIELDS.index(field)]
    )
    expected = (per_item * batch.shown).sum(1) / batch.items.shape[1]
    torch.testing.assert_close(OracleReward(field)(batch).total, expected)
    with pytest.raises(ValueError, match="true outcome"):
        OracleReward(field)(RewardInput(items=batch.items, context=batch.context))


# ---------------------------------------------------------------- bad input


@SETTINGS
@given(
    row=st.integers(0, 3),
    column=st.integers(0, NUM_OBJECTIVES - 1),
    bad=st.sampled_from([float("nan"), float("inf"), float("-inf")]),
)
def test_non_finite_predictions_are_rejected(row: int, column: int, bad: float) -> None:
    """A NaN or infinite tower prediction anywhere is a ValueError, never a silent score."""
    logits = torch.zeros(4, NUM_OBJECTIVES)
    logits[row, column] = bad
    weights = torch.full((NUM_OBJECTIVES,), 1.0 / NUM_OBJECTIVES)
    with pytest.raises(ValueError, match="NaN or infinite"):
        fuse_logits(logits, weights, SIGNS)
    labels = torch.zeros(4, NUM_OBJECTIVES, dtype=torch.bool)
    with pytest.raises(ValueError, match="NaN or infinite"):
        pareto_search(logits, labels, SIGNS, ParetoConfig(steps=1))


@SETTINGS
@given(batch=st.integers(1, 4), slate=st.integers(1, 4), extra=st.integers(1, 3))
def test_mismatched_shapes_are_rejected_with_the_shapes_named(
    batch: int, slate: int, extra: int
) -> None:
    """Codes, feedback or context rows that do not match the item slates are a ValueError
    that names the expected and the given shape."""
    items = np.zeros((batch, slate), dtype=np.int64)
    with pytest.raises(ValueError, match=r"codes must be \(B, S, L\)"):
        RewardInput(items=items, codes=np.zeros((batch, slate + extra, LEVELS), dtype=np.int64))
    with pytest.raises(ValueError, match="feedback must be"):
        RewardInput(items=items, feedback=np.zeros((batch, slate, NUM_FEEDBACK + extra)))
    with pytest.raises(ValueError, match="batch dimension"):
        RewardInput(items=items, context={"static": np.zeros((batch + extra, 5), dtype=np.int64)})


# ---------------------------------------------------------------- AUC and the Pareto search


@SETTINGS
@given(
    scores=st.lists(st.integers(0, 4), min_size=2, max_size=12),
    labels=st.lists(st.booleans(), min_size=12, max_size=12),
)
def test_auc_is_the_pairwise_win_rate_with_ties_as_half(
    scores: list[int], labels: list[bool]
) -> None:
    """AUC equals the share of (positive, negative) pairs the score orders correctly, ties
    counting one half, and 1 - AUC for the negated score."""
    labels = labels[: len(scores)]
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    assume(positives and negatives)
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    expected = wins / (len(positives) * len(negatives))
    values, truth = torch.tensor(scores, dtype=torch.float64), torch.tensor(labels)
    assert float(auc(values, truth)) == pytest.approx(expected)
    assert float(auc(-values, truth)) == pytest.approx(1 - expected)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(20, 200))
def test_pareto_search_never_lowers_any_objective(seed: int, rows: int) -> None:
    """Every objective's AUC after the search is at least its AUC at the starting weights,
    on the data the search ran on; the weights stay non-negative and sum to one."""
    rng = np.random.default_rng(seed)
    labels = torch.as_tensor(rng.random((rows, NUM_OBJECTIVES)) < 0.3)
    logits = torch.as_tensor(rng.normal(size=(rows, NUM_OBJECTIVES))) + labels.double() * SIGNS
    result = pareto_search(logits, labels, SIGNS, ParetoConfig(steps=30, seed=seed % 100))
    defined = ~torch.isnan(result.start_auc)
    assert (result.final_auc[defined] >= result.start_auc[defined]).all()
    assert (result.weights >= 0).all() and float(result.weights.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(
        result.final_auc, fused_auc(logits, labels, result.weights, SIGNS), equal_nan=True
    )
    z = paired_auc_z(logits.double() @ (result.weights * SIGNS.double()),
                     placements(logits.double() @ (SIGNS.double() / NUM_OBJECTIVES), labels),
                     labels, SIGNS)
    kept = ~torch.isnan(z)  # a kept step clears min_z on every objective where z is defined
    assert result.accepted == 0 or bool((z[kept] >= ParetoConfig().min_z - 1e-9).all())


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), positives=st.integers(2, 12),
       negatives=st.integers(2, 12), ties=st.booleans())
def test_paired_auc_z_is_delongs_statistic(seed: int, positives: int, negatives: int,
                                           ties: bool) -> None:
    """`paired_auc_z` equals DeLong's paired z computed from its definition, pair by pair:
    psi(x, y) = 1 if x > y, 1/2 if equal, 0 below; each positive's placement is its mean psi
    over the negatives, each negative's over the positives; z = difference of the AUCs over
    sqrt(var(positive placement differences) / P + var(negative ones) / Q). Antisymmetric
    in the two rankings, and the sign flips for a negative objective."""
    rng = np.random.default_rng(seed)
    rows = positives + negatives
    first, second = rng.normal(size=rows), rng.normal(size=rows)
    if ties:
        first, second = np.round(first), np.round(second)
    labels = np.zeros(rows, dtype=bool)
    labels[:positives] = True

    def psi(scores: np.ndarray) -> np.ndarray:  # (P, Q)
        pos, neg = scores[labels][:, None], scores[~labels][None, :]
        return (pos > neg) + 0.5 * (pos == neg)

    first_psi, second_psi = psi(first), psi(second)
    below = first_psi.mean(1) - second_psi.mean(1)  # (P,)
    above = first_psi.mean(0) - second_psi.mean(0)  # (Q,)
    variance = below.var(ddof=1) / positives + above.var(ddof=1) / negatives
    assume(variance > 1e-12)
    expected = (first_psi.mean() - second_psi.mean()) / np.sqrt(variance)
    truth = torch.as_tensor(labels)[:, None]
    values = [torch.as_tensor(first), torch.as_tensor(second)]
    for sign in (1.0, -1.0):
        signs = torch.tensor([sign], dtype=torch.float64)
        forward = paired_auc_z(values[0], placements(values[1], truth), truth, signs)
        backward = paired_auc_z(values[1], placements(values[0], truth), truth, signs)
        assert float(forward[0]) == pytest.approx(sign * expected, rel=1e-9, abs=1e-9)
        assert float(backward[0]) == pytest.approx(-sign * expected, rel=1e-9, abs=1e-9)
