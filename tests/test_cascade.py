"""The cascade learns a known user-item rule from a fake log, and saves/loads exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from envs.catalog import CatalogConfig, generate_synthetic_catalog
from envs.simulator import SessionConfig
from envs.spec import (
    LIFELONG_LENGTH,
    NUM_FEEDBACK,
    POSITIVE_LENGTH,
    SHORT_TERM_LENGTH,
    feedback_index,
)
from policies.cascade import CascadeConfig, CascadeRecommender, bootstrap_cascade, fit_cascade
from policies.interface import Recommender

CATALOG = generate_synthetic_catalog(
    CatalogConfig(num_items=240, categories_per_level=(4, 2, 2)), seed=0
)
TOP_CATEGORY = CATALOG.category[:, 0]
CONFIG = CascadeConfig(width=16, candidates=30, retrieval_steps=80, ranking_steps=200,
                       batch_size=64, learning_rate=1e-2, exclude_seen=False, seed=0)
SLATE = 6


class FakeLogs:
    """Logged sessions where a user engages items of one top category, set by user_bucket.

    Stands in for `envs.logs.LoggedSessions`: `contexts(rows)`, `slates`, `feedback`, `shown`.
    """

    def __init__(self, rows: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.static = np.zeros((rows, 5), dtype=np.int64)
        self.static[:, 0] = rng.integers(0, 1024, size=rows)
        liked = self.static[:, 0] % 4  # (rows,) the preferred top category
        self.positive_items = np.full((rows, POSITIVE_LENGTH), -1, dtype=np.int64)
        for row in range(rows):
            self.positive_items[row, :8] = rng.choice(np.flatnonzero(TOP_CATEGORY == liked[row]), 8)
        self.slates = rng.integers(0, CATALOG.num_items, size=(rows, SLATE))
        self.shown = np.ones((rows, SLATE), dtype=bool)
        engaged_rate = np.where(TOP_CATEGORY[self.slates] == liked[:, None], 0.8, 0.05)
        self.feedback = np.zeros((rows, SLATE, NUM_FEEDBACK), dtype=np.float32)
        self.feedback[..., feedback_index("click")] = rng.random((rows, SLATE)) < engaged_rate
        clicked = self.feedback[..., feedback_index("click")]
        self.feedback[..., feedback_index("watch_time")] = 10.0 * clicked

    def contexts(self, row_indices: np.ndarray) -> dict[str, np.ndarray]:
        rows = len(row_indices)
        positive_feedback = np.zeros((rows, POSITIVE_LENGTH, NUM_FEEDBACK), dtype=np.float32)
        positive_feedback[:, :8, feedback_index("click")] = 1.0
        return {
            "static": self.static[row_indices],
            "short_term_items": np.full((rows, SHORT_TERM_LENGTH), -1, dtype=np.int64),
            "short_term_feedback": np.zeros((rows, SHORT_TERM_LENGTH, NUM_FEEDBACK), np.float32),
            "positive_items": self.positive_items[row_indices],
            "positive_feedback": positive_feedback,
            "lifelong_items": np.full((rows, LIFELONG_LENGTH), -1, dtype=np.int64),
            "lifelong_features": np.zeros((rows, LIFELONG_LENGTH, NUM_FEEDBACK + 1), np.float32),
        }


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a positive outscores a negative (ties count half)."""
    positives, negatives = scores[labels], scores[~labels]
    wins = (positives[:, None] > negatives[None, :]).mean()
    ties = (positives[:, None] == negatives[None, :]).mean()
    return float(wins + 0.5 * ties)


@pytest.fixture(scope="module")
def cascade() -> CascadeRecommender:
    return fit_cascade(FakeLogs(rows=600, seed=1), CATALOG, CONFIG)


def test_retrieval_beats_random_and_the_ranker_orders_engagement(cascade) -> None:
    held_out = FakeLogs(rows=300, seed=2)
    rows = np.arange(300)
    observation = held_out.contexts(rows)
    engaged = held_out.feedback[..., feedback_index("click")] > 0  # (rows, S)
    retrieved = cascade.retrieve(observation, CONFIG.candidates)  # (rows, R)
    hits = (retrieved[:, None, :] == held_out.slates[:, :, None]).any(axis=2)  # (rows, S)
    recall = hits[engaged].mean()
    assert recall > 2 * CONFIG.candidates / CATALOG.num_items  # random retrieval recalls R / N
    scores = cascade.ranking_scores(observation, held_out.slates)
    assert auc(scores.ravel(), engaged.ravel()) > 0.6


def test_slates_have_the_logged_width_and_no_repeats(cascade) -> None:
    assert isinstance(cascade, Recommender)
    slates = cascade.act(FakeLogs(rows=5, seed=3).contexts(np.arange(5)), np.random.default_rng(0))
    assert slates.shape == (5, SLATE) and slates.dtype == np.int64
    assert all(len(set(row)) == SLATE for row in slates.tolist())


def test_save_load_gives_identical_scores(cascade, tmp_path) -> None:
    path = tmp_path / "cascade.pt"
    cascade.save(path)
    loaded = CascadeRecommender.load(path)
    observation = FakeLogs(rows=7, seed=4).contexts(np.arange(7))
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(
        cascade.recommend(observation, 9, rng), loaded.recommend(observation, 9, rng)
    )
    items = np.tile(np.arange(12), (7, 1))
    np.testing.assert_array_equal(
        cascade.ranking_scores(observation, items), loaded.ranking_scores(observation, items)
    )
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable cascade"):
        CascadeRecommender.load(path)


def test_same_seed_same_cascade() -> None:
    config = dataclasses.replace(CONFIG, retrieval_steps=3, ranking_steps=3, batch_size=16)
    logs = FakeLogs(rows=40, seed=5)
    first, second = (fit_cascade(logs, CATALOG, config).model.state_dict() for _ in range(2))
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name


def test_bootstrap_logs_with_popular_then_with_its_own_cascade() -> None:
    config = dataclasses.replace(CONFIG, retrieval_steps=3, ranking_steps=3, batch_size=32)
    session_config = SessionConfig(slate_size=4, lifelong_history=128)
    cascade, logs = bootstrap_cascade(CATALOG, config, num_users=8, max_requests=3, seed=0,
                                      rounds=1, session_config=session_config)
    assert [round_logs.header["policy"] for round_logs in logs] == ["popular", "cascade"]
    assert cascade.slate_size == 4 and logs[1].slates.shape[1] == 4
    assert (logs[1].slates >= 0).all()
