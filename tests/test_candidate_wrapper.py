"""`CandidateSlateEnv`: the Gymnasium contract, determinism, serving, the default source,
bad configs and bad actions."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.candidate_wrapper import (
    CandidateConfig,
    CandidateSlateEnv,
    PopularRecentCandidates,
    item_feature_table,
    rank_candidates,
)
from envs.catalog import CatalogConfig, generate_synthetic_catalog
from envs.session_env import OneRecSession
from envs.simulator import SessionConfig
from envs.spec import BLANK
from envs.users import PopulationConfig

CATALOG = generate_synthetic_catalog(CatalogConfig(num_items=800, num_creators=100), seed=1)
SMALL = SessionConfig(population=PopulationConfig(warm_history=400))


def _env(config: CandidateConfig | None = None, source=None, session=SMALL) -> CandidateSlateEnv:
    return CandidateSlateEnv(OneRecSession(catalog=CATALOG, config=session), config, source)


def _fixed_source(candidates: list[int]):
    """A source that always proposes `candidates` (N,), for hand-checked serving."""
    def source(observation: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        return np.tile(np.asarray(candidates, dtype=np.int64), (len(observation["static"]), 1))
    return source


def _rollout(env: gym.Env, seed: int, steps: int) -> list:
    observation, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    trace = [observation]
    for _ in range(steps):
        step = env.step(env.action_space.sample())
        trace.append(step)
        if step[2] or step[3]:
            break
    return trace


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")
def test_check_env_passes() -> None:
    check_env(_env(), skip_render_check=True)


def test_spaces_add_the_candidates_to_the_session_observation() -> None:
    env = _env(CandidateConfig(num_candidates=30))
    observation, _ = env.reset(seed=3)
    table = item_feature_table(CATALOG)
    assert env.action_space.shape == (30,)
    assert set(env.observation_space.spaces) == set(env.unwrapped.observation_space.spaces) | {
        "candidate_items", "candidate_features"}
    assert observation["candidate_items"].shape == (30,)
    assert observation["candidate_features"].shape == (30, CATALOG.content.shape[1] + 2)
    np.testing.assert_array_equal(observation["candidate_features"],
                                  table[observation["candidate_items"]])
    assert env.observation_space.contains(observation)


def test_item_features_are_the_observable_ones() -> None:
    table = item_feature_table(CATALOG)
    item = 17
    expected = [*CATALOG.content[item], np.log(CATALOG.duration_s[item] / 30.0),
                np.log(CATALOG.popularity[item] * CATALOG.num_items)]
    np.testing.assert_allclose(table[item], expected, rtol=1e-5)


def test_same_seed_same_rollout_and_another_seed_other_candidates() -> None:
    env = gym.wrappers.TimeLimit(_env(), 20)
    first, second = _rollout(env, 5, 20), _rollout(env, 5, 20)
    assert len(first) == len(second) > 2
    for a, b in zip(first[1:], second[1:], strict=True):
        for key in a[0]:
            np.testing.assert_array_equal(a[0][key], b[0][key])
        assert a[1:4] == b[1:4]
        np.testing.assert_array_equal(a[4]["candidate_positions"], b[4]["candidate_positions"])
    other = _rollout(env, 6, 0)[0]["candidate_items"]
    assert not np.array_equal(other, first[0]["candidate_items"])


def test_unseeded_resets_continue_a_reproducible_stream() -> None:
    env = _env()
    runs = []
    for _ in range(2):
        env.reset(seed=9)
        runs.append([env.reset()[0]["candidate_items"] for _ in range(2)])
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0][0], runs[0][1])  # the next user gets new candidates


def test_the_highest_scores_are_served_in_order_blanks_last() -> None:
    session = SessionConfig(slate_size=3, population=PopulationConfig(warm_history=400))
    env = _env(CandidateConfig(num_candidates=5), _fixed_source([5, BLANK, 7, 3, 9]), session)
    env.reset(seed=0)
    # The BLANK candidate's top score is skipped; items 7, 3, 5 in score order.
    _, _, _, _, info = env.step(np.array([0.1, 0.9, 0.6, 0.5, -0.2], dtype=np.float32))
    np.testing.assert_array_equal(info["candidate_positions"], [2, 3, 0])
    assert info["shown"].all()
    # Fewer than S real candidates: the BLANK one fills the last slot, as a blank.
    env = _env(CandidateConfig(num_candidates=3), _fixed_source([BLANK, 4, 8]), session)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([1.0, 0.0, 0.5], dtype=np.float32))
    np.testing.assert_array_equal(info["candidate_positions"], [2, 1, 0])
    np.testing.assert_array_equal(info["shown"], [True, True, False])


def test_ties_are_broken_at_random_by_the_env_and_by_position_without_a_generator() -> None:
    scores = np.array([[0.2, 1.0, 1.0, 1.0, -1.0]])  # three clipped at the bound
    candidates = np.arange(5)[None]
    np.testing.assert_array_equal(rank_candidates(scores, candidates, 4), [[1, 2, 3, 0]])
    session = SessionConfig(slate_size=2, population=PopulationConfig(warm_history=400))
    env = _env(CandidateConfig(num_candidates=5), _fixed_source([10, 11, 12, 13, 14]), session)
    env.reset(seed=0)
    served = {tuple(env.serve(scores[0])) for _ in range(60)}
    assert served == {(1, 2), (2, 1), (1, 3), (3, 1), (2, 3), (3, 2)}  # each tied pair, any order


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_default_source_proposes_distinct_unseen_items_from_engaged_categories(
    share: float,
) -> None:
    config = CandidateConfig(num_candidates=40, personal_share=share)
    env = _env(config)
    observation, _ = env.reset(seed=2)
    candidates = observation["candidate_items"]
    assert (candidates >= 0).all() and np.unique(candidates).size == candidates.size
    seen = np.concatenate([observation["short_term_items"], observation["positive_items"]])
    assert not np.isin(candidates, seen).any()
    engaged = CATALOG.category[observation["positive_items"][observation["positive_items"] >= 0],
                               config.category_level]
    personal = round(share * config.num_candidates)
    assert np.isin(CATALOG.category[candidates[:personal], config.category_level], engaged).all()
    top_pool = np.argsort(-CATALOG.popularity, kind="stable")[:config.popular_pool]
    assert np.isin(candidates[personal:], top_pool).all()


def test_default_source_pads_with_blank_when_the_pool_runs_out() -> None:
    source = PopularRecentCandidates(CATALOG, CandidateConfig(num_candidates=20,
                                                              personal_share=0.0, popular_pool=5))
    observation = {"positive_items": np.full((2, 4), BLANK), "short_term_items": np.full((2, 3),
                                                                                         BLANK)}
    candidates = source(observation, np.random.default_rng(0))
    assert candidates.shape == (2, 20)
    assert (candidates[:, :5] >= 0).all() and (candidates[:, 5:] == BLANK).all()


def test_a_custom_source_is_used_verbatim() -> None:
    env = _env(CandidateConfig(num_candidates=12), _fixed_source(list(range(100, 112))))
    observation, _ = env.reset(seed=0)
    np.testing.assert_array_equal(observation["candidate_items"], np.arange(100, 112))


def test_bad_configs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="slate_size 10 exceeds num_candidates 8"):
        _env(CandidateConfig(num_candidates=8))
    with pytest.raises(ValueError, match="personal_share"):
        CandidateConfig(personal_share=1.5)
    with pytest.raises(ValueError, match="num_candidates"):
        CandidateConfig(num_candidates=0)
    with pytest.raises(ValueError, match="category_level"):
        CandidateConfig(category_level=3)
    with pytest.raises(TypeError, match="wraps a OneRecSession"):
        CandidateSlateEnv(gym.make("CartPole-v1"))


def test_bad_actions_and_bad_sources_are_clear_errors() -> None:
    env = _env(CandidateConfig(num_candidates=20))
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.zeros(20, dtype=np.float32))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="20 numeric scores"):
        env.step(np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(20, np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match=r"expected \(1, 12\)"):
        _env(CandidateConfig(num_candidates=12), _fixed_source([1, 2, 3])).reset(seed=0)
    with pytest.raises(ValueError, match="outside"):
        _env(CandidateConfig(num_candidates=10), _fixed_source([5000] * 10)).reset(seed=0)
