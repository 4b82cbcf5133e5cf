"""Logging policies, the runner, the writer and the reader of logged sessions."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from gymnasium.wrappers import TimeLimit

from envs.catalog import CatalogConfig, generate_synthetic_catalog
from envs.logging_policies import PopularPolicy, RandomPolicy, make_logging_policy
from envs.logs import SESSIONS_FILE, LoggedSessions, collect_sessions, summarise
from envs.session_env import OneRecSession
from envs.simulator import SessionConfig
from envs.users import PopulationConfig

CATALOG = generate_synthetic_catalog(CatalogConfig(num_items=700, num_creators=90), seed=2)
SMALL = SessionConfig(population=PopulationConfig(warm_history=400))


@pytest.fixture(scope="module")
def logs() -> LoggedSessions:
    policy = PopularPolicy(CATALOG, pool_size=100)
    return collect_sessions(policy, CATALOG, num_users=7, max_requests=6, seed=9, config=SMALL,
                            batch_size=3, policy_name="popular")


@pytest.mark.parametrize("policy", [RandomPolicy(CATALOG), PopularPolicy(CATALOG, pool_size=40)])
def test_policies_give_distinct_valid_items(policy) -> None:
    slates = policy.act({"static": np.zeros((50, 5))}, np.random.default_rng(0))
    assert slates.shape == (50, 10) and slates.dtype == np.int64
    assert ((slates >= 0) & (slates < CATALOG.num_items)).all()
    assert all(len(set(row)) == 10 for row in slates.tolist())


def test_popular_policy_stays_in_its_pool_and_unknown_names_are_errors() -> None:
    policy = PopularPolicy(CATALOG, pool_size=40)
    slates = policy.act({"static": np.zeros((20, 5))}, np.random.default_rng(1))
    assert np.isin(slates, np.argsort(-CATALOG.popularity)[:40]).all()
    with pytest.raises(ValueError, match="unknown logging policy 'best'"):
        make_logging_policy("best", CATALOG)


def test_contexts_are_the_observations_the_env_showed(logs: LoggedSessions) -> None:
    contexts = logs.contexts(np.arange(logs.num_requests))
    for session in range(logs.num_sessions):
        env = TimeLimit(OneRecSession(catalog=CATALOG, config=SMALL), max_episode_steps=6)
        observation, _ = env.reset(seed=int(logs.columns["session_seed"][session]))
        rows = np.flatnonzero(logs.columns["session"] == session)
        assert logs.columns["request"][rows].tolist() == list(range(rows.size))
        for row in rows:
            for key, value in observation.items():
                assert np.array_equal(contexts[key][row], value), (session, row, key)
            observation, _, terminated, truncated, info = env.step(logs.slates[row])
            assert np.array_equal(info["feedback"], logs.feedback[row])
            assert info["true_engagement"] == logs.outcomes["true_engagement"][row]
        assert terminated or truncated  # a session is logged to its end


def test_save_and_load_round_trip_with_the_catalog(logs: LoggedSessions, tmp_path: Path) -> None:
    logs.save(tmp_path)
    loaded = LoggedSessions.load(tmp_path)
    assert loaded.num_requests == logs.num_requests and loaded.num_sessions == 7
    assert np.array_equal(loaded.slates, logs.slates)
    assert np.array_equal(loaded.catalog.content, CATALOG.content)
    assert loaded.catalog_fingerprint == CATALOG.fingerprint()
    assert sorted(path.name for path in tmp_path.iterdir()) == [SESSIONS_FILE]  # one file
    rows = np.array([0, logs.num_requests - 1])
    for key, value in loaded.contexts(rows).items():
        assert np.array_equal(value, logs.contexts(rows)[key])
    summary = summarise(loaded)
    assert summary["sessions"] == 7 and summary["impressions"] == int(logs.shown.sum())


def test_a_truncated_file_is_a_clear_error(logs: LoggedSessions, tmp_path: Path) -> None:
    path = logs.save(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{SESSIONS_FILE}.*truncated"):
        LoggedSessions.load(tmp_path)


def _rewrite(path: Path, edit) -> None:
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    edit(arrays)
    np.savez(path, **arrays)


def test_another_schema_version_is_a_clear_error(logs: LoggedSessions, tmp_path: Path) -> None:
    path = logs.save(tmp_path)

    def bump(arrays: dict) -> None:
        header = json.loads(str(arrays["__header__"]))
        arrays["__header__"] = np.array(json.dumps({**header, "schema_version": 99}))

    _rewrite(path, bump)
    with pytest.raises(ValueError, match="schema_version 99.*versions 1, 2"):
        LoggedSessions.load(path)


def test_a_missing_column_is_a_clear_error(logs: LoggedSessions, tmp_path: Path) -> None:
    path = logs.save(tmp_path)
    _rewrite(path, lambda arrays: arrays.pop("shown"))
    with pytest.raises(ValueError, match="lacks the columns \\['shown'\\]"):
        LoggedSessions.load(path)
    assert zipfile.is_zipfile(path)


def test_bad_rows_are_a_clear_error(logs: LoggedSessions) -> None:
    with pytest.raises(ValueError, match="rows must be"):
        logs.contexts(np.array([logs.num_requests]))
