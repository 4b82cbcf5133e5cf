"""Gymnasium's conventions in `OneRecSession` and `OneRecVectorEnv`: vector infos with `_key`
masks, no step after the end of an episode, and a clear error naming every bad input
(constructor arguments, seeds, options, actions, a `reward_fn`'s output)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.wrappers.vector import DictInfoToList

import envs
from envs.catalog import CatalogConfig, generate_synthetic_catalog
from envs.session_env import OneRecSession
from envs.simulator import SessionConfig, true_engagement_reward
from envs.spec import BLANK
from envs.users import PopulationConfig
from envs.vector_env import OneRecVectorEnv

CATALOG = generate_synthetic_catalog(CatalogConfig(num_items=300, num_creators=40), seed=2)
SMALL = SessionConfig(population=PopulationConfig(warm_history=200))
USERS = 3
BLANKS = np.full(SMALL.slate_size, BLANK)


def _single(**kwargs: object) -> OneRecSession:
    return OneRecSession(catalog=CATALOG, config=SMALL, **kwargs)


def _vector(**kwargs: object) -> OneRecVectorEnv:
    return OneRecVectorEnv(num_envs=USERS, catalog=CATALOG, config=SMALL, **kwargs)


class Returns:
    """A reward_fn that returns `value` whatever it is asked (the error names `Returns`)."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __call__(self, observation, slate, feedback) -> object:
        return self.value


# ---- 1. vector infos: Gymnasium's `_key` masks -------------------------------------------


def _slates(seed: int, steps: int) -> np.ndarray:
    """Random slates, with some all-blank rows so that users leave early: (steps, N, S)."""
    rng = np.random.default_rng(seed)
    slates = rng.integers(-1, CATALOG.num_items, size=(steps, USERS, SMALL.slate_size))
    slates[rng.random((steps, USERS)) < 0.5] = BLANK
    return slates


def test_masks_mark_the_restarted_envs_at_an_episode_end() -> None:
    vector = _vector(max_episode_steps=2)
    vector.reset(seed=0)
    slates = np.tile(np.arange(SMALL.slate_size), (USERS, 1))
    _, _, _, _, first = vector.step(slates)
    _, _, _, truncated, second = vector.step(slates)
    _, rewards, _, _, third = vector.step(slates)  # every env starts its next user
    assert truncated.all()
    for name in ("true_watch_time", "left", "feedback", "shown", "duplicates", "request"):
        assert first[f"_{name}"].tolist() == second[f"_{name}"].tolist() == [True] * USERS
        assert third[f"_{name}"].tolist() == [False] * USERS
        assert third[f"_{name}"].dtype == np.bool_ and not third[name].any()
    assert not rewards.any()
    assert {key for key in third if not key.startswith("_")} == {
        key[1:] for key in third if key.startswith("_")}


def test_infos_and_masks_equal_a_sync_vector_env_of_single_envs() -> None:
    native = _vector(max_episode_steps=4)
    reference = gym.vector.SyncVectorEnv(
        [lambda: gym.wrappers.TimeLimit(_single(), 4) for _ in range(USERS)])
    native_observation, _ = native.reset(seed=30)
    reference_observation, _ = reference.reset(seed=[30 + i for i in range(USERS)])
    restarts = 0
    for slate in _slates(30, 14):
        native_observation, rewards, terminated, truncated, info = native.step(slate)
        reference_observation, ref_rewards, ref_terminated, ref_truncated, ref_info = (
            reference.step(slate))
        assert np.array_equal(rewards, ref_rewards)
        assert np.array_equal(terminated, ref_terminated)
        assert np.array_equal(truncated, ref_truncated)
        for key, value in reference_observation.items():
            assert np.array_equal(native_observation[key], value), key
        for key in ref_info:
            if not key.startswith("_"):
                mask = ref_info[f"_{key}"]
                assert np.array_equal(info[f"_{key}"], mask), key
                assert np.array_equal(info[key][mask], ref_info[key][mask]), key
        restarts += int((~info["_shown"]).sum())
    assert restarts >= USERS  # episode ends happened, so the masks were not all true


def test_dict_info_to_list_gives_no_entries_to_a_restarted_env() -> None:
    vector = DictInfoToList(_vector(max_episode_steps=1))
    vector.reset(seed=4)
    _, _, _, truncated, infos = vector.step(np.full((USERS, SMALL.slate_size), BLANK))
    assert truncated.all() and all(info["request"] == 1 for info in infos)
    _, _, _, _, infos = vector.step(np.full((USERS, SMALL.slate_size), BLANK))
    assert infos == [{}] * USERS


# ---- 2. no step after the end of an episode -----------------------------------------------


def _until_the_user_leaves(env: gym.Env) -> None:
    env.reset(seed=11)
    for _ in range(20):  # blank slates drain patience: the user leaves within a few requests
        _, _, terminated, _, _ = env.step(BLANKS)
        if terminated:
            return
    raise AssertionError("the user of blank slates never left")


@pytest.mark.parametrize("make", [
    pytest.param(_single, id="OneRecSession"),
    pytest.param(lambda: gym.make(envs.ENV_ID, catalog=CATALOG, config=SMALL), id="gym.make"),
])
def test_a_step_after_termination_needs_a_reset(make) -> None:
    env = make()
    _until_the_user_leaves(env)
    with pytest.raises(gym.error.ResetNeeded, match=r"episode ended \(terminated"):
        env.step(BLANKS)
    env.reset()
    _, reward, terminated, _, _ = env.step(np.arange(SMALL.slate_size))
    assert np.isfinite(reward) and not terminated


@pytest.mark.parametrize("make", [_single, _vector], ids=["OneRecSession", "OneRecVectorEnv"])
def test_a_step_before_any_reset_needs_a_reset(make) -> None:
    with pytest.raises(gym.error.ResetNeeded, match=r"call reset\(\) before step\(\)"):
        make().step(BLANKS)


def test_check_env_passes_on_the_single_env() -> None:
    check_env(_single(), skip_render_check=True)


def test_a_numpy_integer_seed_is_the_same_seed() -> None:
    env = _single()
    first, _ = env.reset(seed=np.int64(5))
    second, _ = env.reset(seed=5)
    for key, value in first.items():
        assert np.array_equal(value, second[key]), key


def test_the_largest_seeds_are_accepted() -> None:
    _single().reset(seed=2**63 - 1)
    _vector().reset(seed=2**63 - USERS)
    _vector().reset(seed=[0, 1, 2**63 - 1])


# ---- 3. a reward_fn's output --------------------------------------------------------------


@pytest.mark.parametrize(("output", "match"), [
    (np.ones(3), r"reward_fn Returns returned ndarray of shape \(3,\) .*shape \(1,\) or a scalar"),
    (np.ones((1, 1)), r"reward_fn Returns returned ndarray of shape \(1, 1\)"),
    (None, r"reward_fn Returns returned NoneType"),
    ("1.0", r"reward_fn Returns returned str of shape \(\) and dtype <U3"),
    (np.array([True]), r"reward_fn Returns returned ndarray of shape \(1,\) and dtype bool"),
    (np.array([np.nan]), r"reward_fn Returns returned non-finite rewards \[nan\] for users \[0\]"),
    (float("inf"), r"reward_fn Returns returned non-finite rewards \[inf\]"),
    (np.array([-np.inf], dtype=np.float32), r"reward_fn Returns returned non-finite rewards"),
])
def test_a_bad_reward_of_the_single_env_names_the_reward_fn(output: object, match: str) -> None:
    env = _single(reward_fn=Returns(output))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(np.arange(SMALL.slate_size))


@pytest.mark.parametrize(("output", "expected"), [
    (2.5, 2.5), (3, 3.0), (np.float32(0.25), 0.25), (np.array([-1.5]), -1.5),
    (np.array([4], dtype=np.int64), 4.0),
])
def test_a_real_scalar_or_one_element_reward_is_accepted(output: object, expected: float) -> None:
    env = _single(reward_fn=Returns(output))
    env.reset(seed=0)
    _, reward, _, _, _ = env.step(np.arange(SMALL.slate_size))
    assert type(reward) is float and reward == expected


@pytest.mark.parametrize(("output", "match"), [
    (np.ones(USERS + 1), rf"reward_fn Returns returned ndarray of shape \({USERS + 1},\) "
                         rf".*shape \({USERS},\)"),
    (1.0, r"reward_fn Returns returned float of shape \(\)"),
    (np.array([0.0, np.nan, 1.0]), r"non-finite rewards \[nan\] for users \[1\]"),
])
def test_a_bad_reward_of_the_vector_env_names_the_reward_fn(output: object, match: str) -> None:
    vector = _vector(reward_fn=Returns(output))
    vector.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        vector.step(np.tile(np.arange(SMALL.slate_size), (USERS, 1)))


def test_the_rewards_of_restarted_envs_are_not_checked_and_an_error_leaves_the_env_steppable(
) -> None:
    vector = _vector(max_episode_steps=1, reward_fn=Returns(np.full(USERS, np.nan)))
    vector.reset(seed=0)
    with pytest.raises(ValueError, match="non-finite rewards"):
        vector.step(np.full((USERS, SMALL.slate_size), BLANK))  # every env truncates
    _, rewards, _, _, info = vector.step(np.full((USERS, SMALL.slate_size), BLANK))
    assert rewards.tolist() == [0.0] * USERS and not info["_request"].any()  # all restarted


def test_the_default_reward_still_passes_the_check() -> None:
    vector = _vector()
    observation, _ = vector.reset(seed=1)
    slates = np.tile(np.arange(SMALL.slate_size), (USERS, 1))
    _, rewards, _, _, info = vector.step(slates)
    assert rewards.dtype == np.float64 and rewards.shape == (USERS,)
    assert np.allclose(rewards, info["true_engagement"])
    assert np.array_equal(rewards, true_engagement_reward(observation, slates, info["feedback"]))


# ---- 4. constructor arguments -------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"config": "x"}, ValueError,
     r"OneRecSession config must be an envs.simulator.SessionConfig or None, got str 'x'"),
    ({"catalog": 5}, ValueError, r"OneRecSession catalog must be an envs.catalog.Catalog .*got int"),
    ({"reward_fn": 3}, ValueError, r"OneRecSession reward_fn must be a callable .*got int 3"),
    ({"num_items": "10"}, ValueError, r"OneRecSession num_items must be an int, got str '10'"),
    ({"num_items": 1}, ValueError, r"OneRecSession num_items must be >= 2, got 1"),
    ({"catalog_seed": -1}, ValueError, r"OneRecSession catalog_seed must be >= 0, got -1"),
    ({"catalog_seed": True}, ValueError, r"OneRecSession catalog_seed must be an int, got bool"),
    ({"foo": 1}, TypeError, r"unexpected keyword argument 'foo'"),
])
def test_gym_make_names_a_bad_constructor_argument(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        gym.make(envs.ENV_ID, **kwargs)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"config": SMALL.response}, ValueError,
     r"OneRecVectorEnv config must be an envs.simulator.SessionConfig or None, got "
     r"ResponseConfig"),
    ({"num_envs": 0}, ValueError, r"OneRecVectorEnv num_envs must be >= 1, got 0"),
    ({"num_envs": 2.0}, ValueError, r"OneRecVectorEnv num_envs must be an int, got float 2.0"),
    ({"max_episode_steps": 0}, ValueError, r"OneRecVectorEnv max_episode_steps must be >= 1"),
    ({"autoreset_mode": "SameStep"}, ValueError,
     r"autoreset_mode 'SameStep' is not supported; use 'NextStep' or 'Disabled'"),
    ({"foo": 1}, TypeError, r"unexpected keyword argument 'foo'"),
])
def test_make_vec_names_a_bad_constructor_argument(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        gym.make_vec(envs.ENV_ID, **{"num_envs": 2, **kwargs})


# ---- 5. seeds -----------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "match"), [
    (2**70, rf"seed {2**70} is outside \[0, 2\*\*63 - 1\]"),
    (2**63, rf"seed {2**63} is outside \[0, 2\*\*63 - 1\]"),
    (-1, r"seed -1 is outside \[0, 2\*\*63 - 1\]"),
    (1.5, r"seed 1.5 \(float\) must be an int in \[0, 2\*\*63 - 1\] or None"),
    ("3", r"seed '3' \(str\) must be an int"),
    (True, r"seed True \(bool\) must be an int"),
])
def test_a_bad_seed_of_the_single_env_is_a_value_error_naming_it(seed: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _single().reset(seed=seed)


@pytest.mark.parametrize(("seed", "match"), [
    (2**63 - 1, rf"seed {2**63 - 1} is outside \[0, 2\*\*63 - {USERS}\]"),
    (2**70, rf"seed {2**70} is outside \[0, 2\*\*63 - {USERS}\]"),
    (-2, r"seed -2 is outside"),
    ([1, 2, 2**70], rf"seed \[1, 2, {2**70}\] must be an int or a list of {USERS} ints .*"
                    r"dtype object"),
    ([1, -3, 2], r"seed \[1, -3, 2\] holds \[-3\], outside \[0, 2\*\*63 - 1\]"),
    ([1, 2], rf"seed \[1, 2\] must be an int or a list of {USERS} ints .*shape \(2,\)"),
    ([1.0, 2.0, 3.0], r"seed \[1.0, 2.0, 3.0\] must be .*dtype float64"),
    (1.5, r"seed 1.5 must be an int or a list"),
])
def test_a_bad_seed_of_the_vector_env_is_a_value_error_naming_it(seed: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _vector().reset(seed=seed)


# ---- 6. options and actions ---------------------------------------------------------------


@pytest.mark.parametrize(("make", "options", "match"), [
    (_single, {"reset_mask": np.ones(1, dtype=bool)},
     r"OneRecSession.reset options has unknown keys \['reset_mask'\]; it takes no options"),
    (_single, "fast", r"OneRecSession.reset options must be a dict or None, got str 'fast'"),
    (_vector, {"reset_msk": np.ones(USERS, dtype=bool)},
     r"OneRecVectorEnv.reset options has unknown keys \['reset_msk'\]; it takes 'reset_mask'"),
    (_vector, {"reset_mask": [1, 0, 1]},
     rf"options\['reset_mask'\] must be a bool array of shape \({USERS},\), got int64 \(3,\)"),
    (_vector, {"reset_mask": np.ones(USERS + 1, dtype=bool)},
     rf"options\['reset_mask'\] must be a bool array .*got bool \({USERS + 1},\)"),
], ids=["single-reset_mask", "single-not-a-dict", "vector-typo", "vector-int-mask",
        "vector-mask-length"])
def test_bad_options_are_a_value_error_naming_them(make, options: object, match: str) -> None:
    env = make()
    with pytest.raises(ValueError, match=match):
        env.reset(seed=0, options=options)


def test_empty_options_are_fine() -> None:
    _single().reset(seed=0, options={})
    _vector().reset(seed=0, options={})


_SLATE = SMALL.slate_size
_LAST = CATALOG.num_items - 1


@pytest.mark.parametrize(("action", "match"), [
    (np.arange(_SLATE - 1), r"action .* has shape \(9,\), expected \(10,\)"),
    (np.full(_SLATE, np.nan), r"action .* has dtype float64; item ids must be integers"),
    (np.ones(_SLATE, dtype=bool), r"action .* has dtype bool"),
    (np.array(["1"] * _SLATE), r"action .* has dtype <U1"),
    (np.full(_SLATE, _LAST + 1), rf"holds item ids \[{_LAST + 1}, .*\] outside \[-1, {_LAST}\]"),
    (np.full(_SLATE, -2), rf"holds item ids \[-2, .*\] outside \[-1, {_LAST}\]"),
], ids=["short", "nan", "bool", "text", "past-the-catalog", "below-blank"])
def test_a_bad_action_of_the_single_env_is_a_value_error_naming_it(
    action: np.ndarray, match: str
) -> None:
    env = _single()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)


@pytest.mark.parametrize(("actions", "match"), [
    (np.arange(_SLATE), rf"action .* has shape \(10,\), expected \({USERS}, 10\)"),
    (np.zeros((USERS + 1, _SLATE), dtype=np.int64), rf"expected \({USERS}, 10\)"),
    (np.full((USERS, _SLATE), np.nan), r"(?s)action .* has dtype float64"),  # 2-D: multi-line
    (np.full((USERS, _SLATE), _LAST + 1),
     rf"(?s)action .* holds item ids \[{_LAST + 1}, .*\] outside \[-1, {_LAST}\]"),
], ids=["one-slate", "too-many-users", "nan", "past-the-catalog"])
def test_a_bad_action_of_the_vector_env_is_a_value_error_naming_it(
    actions: np.ndarray, match: str
) -> None:
    vector = _vector()
    vector.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        vector.step(actions)


def test_a_bad_action_leaves_the_env_as_it_was() -> None:
    env = _single()
    observation, _ = env.reset(seed=3)
    with pytest.raises(ValueError, match="action"):
        env.step(np.full(SMALL.slate_size, np.nan))
    again = _single()
    again.reset(seed=3)
    first, *_ = env.step(np.arange(SMALL.slate_size))
    second, *_ = again.step(np.arange(SMALL.slate_size))
    for key, value in first.items():
        assert np.array_equal(value, second[key]), key
