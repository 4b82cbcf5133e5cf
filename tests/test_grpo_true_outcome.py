"""The oracle's expected outcome of an item (the true-outcome curves and the `oracle` RL
reward) is the mean of what the simulator draws, without drawing."""

from __future__ import annotations

import numpy as np
import pytest

from envs.catalog import CatalogConfig, generate_synthetic_catalog
from envs.response import NUM_DRAWS, respond
from envs.simulator import SessionConfig, SessionSimulator
from envs.spec import FEEDBACK_FIELDS
from envs.streams import seed_roots
from envs.users import PopulationConfig

DRAWS = 200_000


@pytest.fixture(scope="module")
def simulator() -> SessionSimulator:
    catalog = generate_synthetic_catalog(CatalogConfig(num_items=300, num_creators=30), seed=2)
    config = SessionConfig(positive_length=24, lifelong_history=48, lifelong_length=12,
                           population=PopulationConfig(warm_history=80))
    simulator = SessionSimulator(catalog, config, num_users=2)
    simulator.reset(np.arange(2), seed_roots(np.arange(2)))
    simulator.step(np.tile(np.arange(10), (2, 1)))  # some fatigue to account for
    return simulator


def test_expected_feedback_is_the_mean_of_the_draws(simulator: SessionSimulator) -> None:
    candidates = np.array([[3, 150, -1], [4, 5, 299]])
    expected = simulator.expected_feedback(np.arange(2), candidates)  # (2, 3, F)
    assert expected.shape == (2, 3, len(FEEDBACK_FIELDS))
    assert (expected[0, 2] == 0).all()  # a blank shows nothing
    rng = np.random.default_rng(0)
    state, items = simulator.state, simulator.items
    for user, slot in [(0, 0), (0, 1), (1, 0), (1, 2)]:
        item = candidates[user, slot]
        fatigue = np.full((DRAWS, 1), state.fatigue[user, items.fatigue_topic[item]])
        drawn = respond(simulator.config.response, items,
                        np.repeat(state.interest[[user]], DRAWS, 0),
                        np.repeat(state.activity[[user]], DRAWS, 0), np.full((DRAWS, 1), item),
                        np.ones((DRAWS, 1), dtype=bool), fatigue,
                        rng.random((DRAWS, 1, NUM_DRAWS)))[:, 0].astype(np.float64)
        standard_error = drawn.std(0) / np.sqrt(DRAWS)
        # within 4.5 standard errors (plus a hair for the quadrature) on every field
        assert (np.abs(expected[user, slot] - drawn.mean(0))
                <= 4.5 * standard_error + 1e-3 * np.abs(drawn.mean(0)) + 1e-6).all(), (
            expected[user, slot], drawn.mean(0))


def test_expected_feedback_changes_no_state(simulator: SessionSimulator) -> None:
    before = simulator.observation()
    interest = simulator.state.interest.copy()
    simulator.expected_feedback(np.arange(2), np.array([[1, 2], [3, 4]]))
    after = simulator.observation()
    assert all(np.array_equal(before[key], after[key]) for key in before)
    assert np.array_equal(interest, simulator.state.interest)
