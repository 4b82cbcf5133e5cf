"""`OneRecSession`: the Gymnasium contract, determinism, blanks, leaving, bad actions."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import envs
from envs.catalog import CatalogConfig, generate_synthetic_catalog
from envs.session_env import OneRecSession
from envs.simulator import SessionConfig
from envs.spec import BEHAVIOURS, BLANK, FEEDBACK_FIELDS, NUM_FEEDBACK, STATIC_FIELDS
from envs.users import PopulationConfig

CATALOG = generate_synthetic_catalog(CatalogConfig(num_items=800, num_creators=100), seed=1)
SMALL = SessionConfig(population=PopulationConfig(warm_history=400))


@pytest.fixture(scope="module")
def env() -> OneRecSession:
    return OneRecSession(catalog=CATALOG, config=SMALL)


def _rollout(env: OneRecSession, seed: int, steps: int) -> list:
    observation, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    trace = [observation]
    for _ in range(steps):
        step = env.step(rng.integers(-1, CATALOG.num_items, size=SMALL.slate_size))
        trace.append(step)
        if step[2]:
            break
    return trace


def test_check_env_passes_with_default_sizes() -> None:
    check_env(OneRecSession(catalog=CATALOG), skip_render_check=True)


def test_registered_id_has_a_time_limit_and_the_documented_spaces() -> None:
    env = gym.make(envs.ENV_ID, catalog=CATALOG, config=SMALL, max_episode_steps=2)
    observation, _ = env.reset(seed=0)
    assert set(observation) == {"static", "short_term_items", "short_term_feedback",
                                "positive_items", "positive_feedback", "lifelong_items",
                                "lifelong_features"}
    assert observation["static"].shape == (len(STATIC_FIELDS),)
    assert observation["short_term_feedback"].shape == (20, NUM_FEEDBACK)
    assert observation["positive_items"].shape == (256,)
    assert observation["lifelong_features"].shape == (128, NUM_FEEDBACK + 1)
    assert (observation["short_term_items"] >= 0).all()  # the warm history fills every slot
    assert (observation["lifelong_items"] >= 0).any() and (observation["positive_items"] >= 0).any()
    slate = np.arange(10)
    _, _, terminated, truncated, _ = env.step(slate)
    if not terminated:
        _, _, terminated, truncated, _ = env.step(slate)
        assert truncated or terminated


def test_same_seed_same_rollout(env: OneRecSession) -> None:
    first, second = _rollout(env, 5, 12), _rollout(env, 5, 12)
    assert len(first) == len(second)
    for a, b in zip(first[1:], second[1:], strict=True):
        for key in a[0]:
            assert np.array_equal(a[0][key], b[0][key])
        assert a[1:4] == b[1:4]
        assert np.array_equal(a[4]["feedback"], b[4]["feedback"])
    assert not np.array_equal(_rollout(env, 6, 1)[0]["lifelong_items"],
                              first[0]["lifelong_items"])


def test_a_slate_of_blanks_yields_no_engagement_and_the_user_leaves(env: OneRecSession) -> None:
    observation, _ = env.reset(seed=11)
    blanks = np.full(SMALL.slate_size, BLANK)
    for _ in range(100):
        observation_next, reward, terminated, truncated, info = env.step(blanks)
        assert reward == 0.0 and info["true_watch_time"] == 0.0
        assert all(info[f"true_{name}"] == 0 for name in BEHAVIOURS)
        assert not info["feedback"].any() and not info["shown"].any()
        assert np.array_equal(observation_next["short_term_items"],
                              observation["short_term_items"])  # nothing was shown
        if terminated:
            break
    assert terminated and info["left"] and not truncated
    assert info["request"] <= max(SMALL.response.initial_patience) + 1


def test_the_reward_callable_sees_the_batched_context(env: OneRecSession) -> None:
    calls = []

    def watched_items(observation, slate, feedback):
        calls.append((observation["positive_items"].shape, slate.shape, feedback.shape))
        return feedback[..., FEEDBACK_FIELDS.index("watch_ratio")].sum(-1)

    custom = OneRecSession(catalog=CATALOG, config=SMALL, reward_fn=watched_items)
    custom.reset(seed=3)
    _, reward, _, _, info = custom.step(np.arange(10))
    assert calls == [((1, 256), (1, 10), (1, 10, NUM_FEEDBACK))]
    assert reward == pytest.approx(info["feedback"][:, 1].sum(), rel=1e-6)


def test_duplicates_are_shown_once(env: OneRecSession) -> None:
    env.reset(seed=2)
    _, _, _, _, info = env.step(np.array([4, 4, 5, 4, -1, 6, 7, 8, 9, 5]))
    assert info["shown"].tolist() == [True, False, True, False, False,
                                      True, True, True, True, False]
    assert info["duplicates"] == 3


@settings(max_examples=60, deadline=None)
@given(action=st.one_of(
    st.lists(st.integers(-3, CATALOG.num_items + 2), min_size=0, max_size=12),
    st.lists(st.floats(), min_size=10, max_size=10),
))
def test_fuzzed_actions_either_step_or_raise_a_value_error_naming_the_action(
    env: OneRecSession, action: list
) -> None:
    env.reset(seed=0)
    array = np.asarray(action)
    valid = (array.shape == (10,) and np.issubdtype(array.dtype, np.integer)
             and ((array >= -1) & (array < CATALOG.num_items)).all())
    if valid:
        _, reward, _, _, info = env.step(array)
        assert np.isfinite(reward) and info["shown"].sum() <= len(set(action) - {-1})
    else:
        with pytest.raises(ValueError, match="action"):
            env.step(array)


def test_step_before_reset_is_a_clear_error() -> None:
    with pytest.raises(gym.error.ResetNeeded):
        OneRecSession(catalog=CATALOG, config=SMALL).step(np.arange(10))
