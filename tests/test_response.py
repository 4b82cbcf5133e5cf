"""The response, fatigue, drift and leave models, against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.catalog import CatalogConfig, generate_synthetic_catalog
from envs.response import (
    DRAWS,
    NUM_DRAWS,
    ItemTable,
    ResponseConfig,
    click_logit,
    decay_fatigue,
    oracle_outcome,
    respond,
    satisfaction_mean,
    slate_fatigue,
    true_engagement,
    update_patience,
)
from envs.simulator import SessionConfig, SessionSimulator
from envs.spec import FEEDBACK_FIELDS, STATIC_FIELDS, feedback_index
from envs.streams import (
    PURPOSE_WARM_HISTORY,
    episode_keys,
    purpose_keys,
    seed_roots,
    uniform_columns,
    uniforms,
)
from envs.users import PopulationConfig

CATALOG = generate_synthetic_catalog(CatalogConfig(num_items=600, num_creators=100), seed=3)
ITEMS = ItemTable.from_catalog(CATALOG)
SMALL = SessionConfig(population=PopulationConfig(warm_history=300))


def _draws(users: int, slots: int, **fixed: float) -> np.ndarray:
    draws = np.full((users, slots, NUM_DRAWS), 0.5)
    for name, value in fixed.items():
        draws[..., DRAWS.index(name)] = value
    return draws


def _one_impression(draws: np.ndarray, config: ResponseConfig | None = None) -> np.ndarray:
    interest = ITEMS.topics[[7]]  # the user likes item 7's topic exactly
    return respond(config or ResponseConfig(), ITEMS, interest, np.array([3]),
                   np.array([[7]]), np.array([[True]]), np.zeros((1, 1)), draws)[0, 0]


def test_click_follows_its_uniform_against_the_hand_computed_probability() -> None:
    config = ResponseConfig()
    logit = (config.click_bias + config.click_affinity * 1.0
             + config.click_clickbait * ITEMS.clickbait[7] + config.click_activity[3])
    probability = 1 / (1 + np.exp(-logit))
    below = _one_impression(_draws(1, 1, click=probability - 1e-6))
    above = _one_impression(_draws(1, 1, click=probability + 1e-6))
    assert below[feedback_index("click")] == 1 and above[feedback_index("click")] == 0


def test_a_glance_lasts_glance_seconds_times_its_uniform() -> None:
    feedback = _one_impression(_draws(1, 1, click=0.999999, watch=0.25))
    expected = min(ResponseConfig().glance_seconds * 0.25, 3 * ITEMS.duration_s[7])
    assert feedback[feedback_index("watch_time")] == pytest.approx(expected, rel=1e-5)
    assert feedback[feedback_index("watch_ratio")] == pytest.approx(
        expected / ITEMS.duration_s[7], rel=1e-5)


def test_long_view_is_kuairands_rule_18_seconds_or_the_whole_video() -> None:
    feedback = _one_impression(_draws(1, 1, click=1e-6))
    watch, ratio = feedback[feedback_index("watch_time")], feedback[feedback_index("watch_ratio")]
    assert feedback[feedback_index("long_view")] == float(watch >= 18.0 or ratio >= 1.0)


def test_unshown_slots_have_no_feedback_and_like_excludes_hate() -> None:
    draws = _draws(2, 3, like=1e-6, hate=1e-6)
    feedback = respond(ResponseConfig(), ITEMS, ITEMS.topics[[1, 2]], np.array([0, 3]),
                       np.array([[1, 2, 3], [4, 5, 6]]),
                       np.array([[True, False, True], [False, False, False]]),
                       np.zeros((2, 3)), draws)
    assert feedback.shape == (2, 3, len(FEEDBACK_FIELDS)) and feedback.dtype == np.float32
    assert not feedback[0, 1].any() and not feedback[1].any()
    assert (feedback[0, [0, 2], feedback_index("like")] == 1).all()
    assert (feedback[..., feedback_index("hate")] == 0).all()


def test_a_warm_history_is_the_response_model_answering_its_draws() -> None:
    # the warm history computes each user's affinity once per distinct item and lays the
    # feedback out field by field: it must still be, bit for bit, `respond` on its draws
    simulator = SessionSimulator(CATALOG, SMALL, num_users=3)
    population, length = simulator.population, SMALL.population.warm_history
    keys = episode_keys(seed_roots(np.arange(3)), np.zeros(3, dtype=np.int64))
    profiles = population.draw_profiles(keys)
    items, feedback = population.warm_history(keys, profiles, SMALL.response, 4)
    draws = uniform_columns(purpose_keys(keys, PURPOSE_WARM_HISTORY), length, 2 + NUM_DRAWS)
    expected = respond(SMALL.response, ITEMS, profiles.interest,
                       profiles.static[:, STATIC_FIELDS.index("activity_level")], items,
                       np.ones(items.shape, dtype=bool), np.zeros(items.shape),
                       draws[2:].transpose(1, 2, 0), positions=np.arange(length) % 4)
    assert feedback.shape == (3, length, len(FEEDBACK_FIELDS)) and feedback.dtype == np.float32
    assert np.array_equal(feedback, expected)
    assert len(np.unique(items[0])) < length  # items repeat: the per-item affinity is used


def test_true_engagement_and_oracle_counts_by_hand() -> None:
    feedback = np.zeros((1, 2, len(FEEDBACK_FIELDS)), dtype=np.float32)
    feedback[0, 0, feedback_index("watch_time")] = 90.0
    feedback[0, 1, feedback_index("watch_time")] = 30.0
    feedback[0, 0, feedback_index("like")] = 1
    feedback[0, 1, feedback_index("follow")] = 1
    feedback[0, 1, feedback_index("hate")] = 1
    assert true_engagement(feedback)[0] == pytest.approx(2.0 + 0.5 + 1.0 - 1.0)
    outcome = oracle_outcome(feedback, np.array([True]))
    assert outcome["true_watch_time"][0] == 120.0 and outcome["true_like"][0] == 1
    assert outcome["true_hate"][0] == 1 and outcome["true_click"][0] == 0 and outcome["left"][0]


def test_fatigue_counts_recent_and_earlier_same_topic_impressions() -> None:
    state = np.array([[0.0, 2.0, 0.5]])
    topics = np.array([[1, 1, 2, 1]])
    shown = np.array([[True, True, True, False]])
    assert slate_fatigue(state, topics, shown).tolist() == [[2.0, 3.0, 0.5, 4.0]]
    after = decay_fatigue(ResponseConfig(fatigue_decay=0.5), state, topics, shown)
    assert after.tolist() == [[0.0, 3.0, 1.25]]


def test_patience_spends_one_request_and_refills_by_slate_value() -> None:
    config = ResponseConfig(refill_per_value=0.5, patience_cap=3.0)
    feedback = np.zeros((2, 2, len(FEEDBACK_FIELDS)), dtype=np.float32)
    feedback[0, :, feedback_index("long_view")] = 1
    feedback[0, :, feedback_index("like")] = 1  # value 4 -> +2, then capped
    patience, left = update_patience(config, np.array([2.8, 1.0]), feedback)
    assert patience.tolist() == [3.0, 0.0] and left.tolist() == [False, True]


@settings(max_examples=30, deadline=None)
@given(fatigue=st.floats(0, 30), extra=st.floats(0.1, 10), affinity=st.floats(-1, 1))
def test_fatigue_lowers_click_and_satisfaction(fatigue: float, extra: float,
                                                affinity: float) -> None:
    config = ResponseConfig()
    low, high = np.array([[fatigue]]), np.array([[fatigue + extra]])
    args = (np.array([[affinity]]), np.array([[0.1]]))
    assert click_logit(config, *args, 2, high, 0) < click_logit(config, *args, 2, low, 0)
    assert (satisfaction_mean(config, args[0], np.array([[0.6]]), args[1], high)
            < satisfaction_mean(config, args[0], np.array([[0.6]]), args[1], low))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), repeats=st.integers(1, 4))
def test_repeating_one_topic_lowers_the_users_click_probability(seed: int, repeats: int) -> None:
    simulator = SessionSimulator(CATALOG, SMALL, num_users=1)
    simulator.reset(np.array([0]), seed_roots(np.array([seed])))
    topic = ITEMS.fatigue_topic
    members = np.flatnonzero(topic == topic[np.argmax(CATALOG.popularity)])
    probe = np.resize(members, SMALL.slate_size)[None]
    probe = np.where(np.arange(SMALL.slate_size) < members.size, probe, -1)
    before = simulator.click_probability(probe)
    for _ in range(repeats):
        simulator.step(probe)
    after = simulator.click_probability(probe)
    shown = probe >= 0
    assert (after[shown] < before[shown]).all()


def test_uniforms_of_a_stream_do_not_depend_on_the_batch() -> None:
    keys = seed_roots(np.arange(5))
    batch = uniforms(keys, np.array([0, 3, 1, 0, 7]), 9)
    alone = uniforms(keys[[1]], 3, 9)
    assert np.array_equal(batch[1], alone[0])
    assert ((batch > 0) & (batch < 1)).all() and len(np.unique(batch)) == batch.size


def test_uniform_columns_are_the_same_uniforms_draw_major() -> None:
    keys = seed_roots(np.arange(3))
    columns = uniform_columns(keys, 7, 4)  # (per_row, N, rows)
    assert np.array_equal(columns, uniforms(keys, 0, 28).reshape(3, 7, 4).transpose(2, 0, 1))
    with pytest.raises(ValueError, match="per_row"):
        uniform_columns(keys, 7, 3)


@pytest.mark.parametrize("change, field", [
    ({"click_activity": (0.0, 1.0)}, "click_activity"),
    ({"fatigue_decay": 1.0}, "fatigue_decay"),
    ({"glance_seconds": -1.0}, "glance_seconds"),
    ({"patience_cap": 0.0}, "patience_cap"),
])
def test_config_errors_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ResponseConfig(**change)
