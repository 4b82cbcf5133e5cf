"""`OneRec/Days-v0`: the return model by hand, Gymnasium's contracts, the vector env against
single envs, and what carries from one session to the next."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.catalog import CatalogConfig, generate_synthetic_catalog
from envs.days import DaysConfig
from envs.days_env import OneRecDays, OneRecDaysVectorEnv
from envs.retention import (
    ReturnConfig,
    SessionRecord,
    churn_probability,
    draw_return,
    return_log_rate,
    staleness,
    variety,
)
from envs.session_env import OneRecSession
from envs.simulator import SessionConfig
from envs.users import PopulationConfig

CATALOG = generate_synthetic_catalog(CatalogConfig(num_items=800, num_creators=100), seed=1)
SMALL = SessionConfig(population=PopulationConfig(warm_history=400))
SHORT = DaysConfig(days=1.0, session_requests=4)  # a few sessions per episode


def _record(**changes: float) -> SessionRecord:
    """One neutral full_active session: 20 watch minutes, 100 shown, no likes or hates."""
    values = {"activity": 3, "watch_s": 1200.0, "impressions": 100, "likes": 0.0, "hates": 0.0,
              "variety": 0.5, "staleness": 0.0, **changes}
    return SessionRecord(**{name: np.array([value]) for name, value in values.items()})


def test_a_neutral_session_keeps_the_base_rate_and_each_effect_moves_it_its_way() -> None:
    """At the reference watch time, no mood, variety 1/2 and nothing stale the log rate is
    log base_rate[activity]; more watch time, likes, variety raise it; hates and a stale
    topic mix lower it, by the configured effects."""
    config = ReturnConfig()
    base = float(return_log_rate(config, _record())[0])
    assert base == pytest.approx(math.log(config.base_rate[3]))
    assert float(return_log_rate(config, _record(watch_s=4800.0))[0]) == pytest.approx(
        base + config.watch_effect * (math.log1p(80.0) - math.log1p(20.0)))
    assert float(return_log_rate(config, _record(likes=10.0))[0]) == pytest.approx(
        base + config.mood_effect * 0.1)
    assert float(return_log_rate(config, _record(hates=1.0))[0]) == pytest.approx(
        base - config.mood_effect * config.hate_weight / 100)
    assert return_log_rate(config, _record(variety=1.0))[0] > base
    assert return_log_rate(config, _record(staleness=1.0))[0] == pytest.approx(
        base - config.staleness_effect)
    assert churn_probability(config, _record(likes=10.0))[0] < churn_probability(
        config, _record())[0] < churn_probability(config, _record(hates=5.0))[0]


def test_return_delays_are_exponential_at_the_rate_and_churn_is_infinite() -> None:
    """20,000 draws: the mean delay is 1 / rate within 3%, P(back within a day) is
    1 - exp(-rate) (for full_active users 0.84: KuaiRand's engaged users came back the next
    day 88% of the time); a churn draw gives inf, and no delay is under min_gap_hours."""
    config = ReturnConfig()
    count = 20_000
    records = SessionRecord(*(np.repeat(field, count) for field in _record()))
    draws = np.random.default_rng(0).uniform(size=(count, 2))
    delays = draw_return(config, records, draws)
    churned = ~np.isfinite(delays)
    assert churned.mean() == pytest.approx(churn_probability(config, _record())[0], abs=0.003)
    rate = config.base_rate[3]
    assert delays[~churned].mean() == pytest.approx(1 / rate, rel=0.03)
    assert (delays[~churned] < 1).mean() == pytest.approx(1 - math.exp(-rate), abs=0.01)
    assert delays[~churned].min() >= config.min_gap_hours / 24
    certain = draw_return(config, _record(), np.array([[1e-12, 0.5]]))
    assert np.isinf(certain[0])


def test_variety_and_staleness_by_hand() -> None:
    """Counts over 4 topics: (5, 5, 0, 0) -> 2 distinct of min(10, 4) = 0.5; (1, 0, 0, 0)
    -> 1; nothing shown -> 1. Staleness of shares (0.5, 0.5, 0, 0) against exposure
    (1.4, 0.2, 0, 0): 0.5 x 1 + 0.5 x 0.2 = 0.6."""
    counts = np.array([[5.0, 5.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(variety(counts), [0.5, 1.0, 1.0])
    exposure = np.array([[1.4, 0.2, 0.0, 0.0]] * 3)
    np.testing.assert_allclose(staleness(counts, exposure), [0.6, 1.0, 0.0])


def test_bad_return_and_days_configs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="base_rate"):
        ReturnConfig(base_rate=(1.0, 1.0))
    with pytest.raises(ValueError, match="exposure_half_life_days"):
        ReturnConfig(exposure_half_life_days=0.0)
    with pytest.raises(ValueError, match="days"):
        DaysConfig(days=100.0)
    with pytest.raises(ValueError, match="session_requests"):
        DaysConfig(session_requests=0)
    with pytest.raises(ValueError, match="days_config"):
        OneRecDays(catalog=CATALOG, days_config="7 days")


def test_check_env_passes() -> None:
    check_env(OneRecDays(catalog=CATALOG, config=SMALL, days_config=SHORT),
              skip_render_check=True)


def test_make_and_make_vec_give_the_days_envs() -> None:
    single = gym.make(envs.DAYS_ENV_ID, catalog=CATALOG, config=SMALL)
    assert isinstance(single.unwrapped, OneRecDays)
    vector = gym.make_vec(envs.DAYS_ENV_ID, num_envs=2, catalog=CATALOG, config=SMALL)
    assert isinstance(vector.unwrapped, OneRecDaysVectorEnv)
    observation, _ = vector.reset(seed=0)
    assert observation in vector.observation_space


def test_the_first_session_is_the_session_envs_user_request_for_request() -> None:
    """Seed 3: the days env answers every request of the first session exactly as the session
    env does, until the session ends; then the days env goes on (the user comes back)."""
    session = OneRecSession(catalog=CATALOG, config=SMALL)
    days = OneRecDays(catalog=CATALOG, config=SMALL, days_config=DaysConfig(days=7.0))
    first, _ = session.reset(seed=3)
    other, _ = days.reset(seed=3)
    assert all(np.array_equal(first[key], other[key]) for key in first)
    rng = np.random.default_rng(0)
    for _ in range(DaysConfig().session_requests):
        slate = rng.integers(0, CATALOG.num_items, size=10)
        _, reward, left, _, info = session.step(slate)
        _, days_reward, terminated, truncated, days_info = days.step(slate)
        assert reward == days_reward and np.array_equal(info["feedback"], days_info["feedback"])
        if left or days_info["session_end"]:
            break
    assert days_info["session_end"] and not truncated
    assert terminated == days_info["churned"]
    if days_info["new_session"]:
        assert days_info["gap_days"] > 0 and days_info["session"] == 1


def test_env_i_of_the_vector_env_is_the_single_env_reset_with_seed_plus_i() -> None:
    """Three users over a 1-day horizon of 4-request sessions, autoreset included: the same
    observations, rewards, ends and long-term figures, step for step."""
    users, steps, seed = 3, 60, 11
    vector = OneRecDaysVectorEnv(num_envs=users, catalog=CATALOG, config=SMALL,
                                 days_config=SHORT)
    singles = [OneRecDays(catalog=CATALOG, config=SMALL, days_config=SHORT)
               for _ in range(users)]
    vector_observation, _ = vector.reset(seed=seed)
    single_observations = [env.reset(seed=seed + i)[0] for i, env in enumerate(singles)]
    done, restarts, sessions = [False] * users, 0, 0
    slates = np.random.default_rng(seed).integers(-1, CATALOG.num_items, size=(steps, users, 10))
    for slate in slates:
        vector_observation, rewards, terminated, truncated, info = vector.step(slate)
        assert info["shown"].dtype == bool and info["session_end"].dtype == bool
        for i, env in enumerate(singles):
            if done[i]:
                single_observations[i], _ = env.reset()
                assert rewards[i] == 0 and not info["_day"][i]
                done[i], restarts = False, restarts + 1
            else:
                single_observations[i], reward, ended, cut, single_info = env.step(slate[i])
                assert rewards[i] == reward and (terminated[i], truncated[i]) == (ended, cut)
                for key in ("true_watch_time", "day", "session", "horizon_watch_s",
                            "horizon_active_days", "new_session"):
                    assert info[key][i] == single_info[key], key
                sessions += single_info["new_session"]
                done[i] = ended or cut
            for key, value in single_observations[i].items():
                assert np.array_equal(vector_observation[key][i], value), key
    assert restarts >= users and sessions >= users  # episodes ended, users came back


def test_a_returning_user_keeps_its_history_and_starts_fresh() -> None:
    """After a session ends and the user comes back, the short-term pathway still holds the
    last session's impressions, the clock moved by the gap, and patience is refilled."""
    env = OneRecDays(catalog=CATALOG, config=SMALL, days_config=SHORT)
    env.reset(seed=5)
    rng = np.random.default_rng(1)
    for _ in range(200):
        slate = rng.choice(CATALOG.num_items, size=10, replace=False)
        observation, _, terminated, truncated, info = env.step(slate)
        if info["new_session"] or terminated or truncated:
            break
    assert info["new_session"], "the user never came back within 200 requests"
    shown = slate[info["shown"]]
    assert np.array_equal(observation["short_term_items"][-shown.size:], shown)
    assert info["day"] >= info["gap_days"] > 0
    simulator = env.unwrapped.simulator
    assert simulator.session_request[0] == 0 and simulator.sessions.state.patience[0] > 0
    assert info["horizon_sessions"] == 2 and info["horizon_returns"] == 1


def test_serving_one_topic_all_along_brings_users_back_less_often() -> None:
    """Over a 3-day horizon, 40 users served the same 10 items at every request (one topic
    mix, stale from the second session on) start fewer sessions than users served a fresh
    random slate each time (the return model's variety and staleness terms at work)."""
    catalog = CATALOG
    same = np.argsort(-catalog.popularity)[:10]
    counts = {}
    for name in ("same", "random"):
        vector = OneRecDaysVectorEnv(num_envs=40, catalog=catalog, config=SMALL,
                                     days_config=DaysConfig(days=3.0, session_requests=5),
                                     autoreset_mode="Disabled")
        vector.reset(seed=0)
        rng = np.random.default_rng(0)
        done = np.zeros(40, dtype=bool)
        sessions = np.zeros(40)
        while not done.all():
            slate = (np.tile(same, (40, 1)) if name == "same"
                     else rng.integers(0, catalog.num_items, size=(40, 10)))
            _, _, terminated, truncated, info = vector.step(slate)
            sessions = np.where(done, sessions, info["horizon_sessions"])
            done |= terminated | truncated
        counts[name] = sessions.mean()
    assert counts["same"] < counts["random"], counts
