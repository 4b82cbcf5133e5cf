"""Feedback RL (OneRec-V2): the observed reaction, duration buckets, history percentiles and
the +1 / -1 / dropped advantages, against values by hand; a run through the trainer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from envs.catalog import CatalogConfig, generate_synthetic_catalog
from envs.response import NUM_DRAWS
from envs.simulator import SessionConfig, SessionSimulator
from envs.spec import feedback_index
from onerec_lab.experiment import method
from trainers.feedback_rl import (
    FeedbackRLConfig,
    FeedbackRLTrainer,
    duration_buckets,
    feedback_advantages,
    history_percentiles,
)


def test_duration_buckets_by_hand() -> None:
    """floor(log2(d + 1)): 0 s -> 0, 1 s -> 1, 7 s -> 3, 8 s -> 3, 15 s -> 4, 300 s -> 8."""
    durations = torch.tensor([0.0, 1.0, 7.0, 8.0, 15.0, 300.0])
    assert duration_buckets(durations, 2.0, 1.0).tolist() == [0, 1, 3, 3, 4, 8]


def test_percentiles_count_only_the_same_bucket() -> None:
    """History (play, bucket): (10, 3), (20, 3), (30, 3), (5, 4), padding (99, 3). An item
    of bucket 3 played 20 s is above 10, ties 20: q = (1 + 0.5) / 3 = 0.5; one played 40 s:
    q = 1; one of bucket 4 played 1 s: below 5: q = 0; one of bucket 9: no history: 0.5."""
    history_play = torch.tensor([[10.0, 20.0, 30.0, 5.0, 99.0]])
    history_buckets = torch.tensor([[3, 3, 3, 4, 3]])
    valid = torch.tensor([[True, True, True, True, False]])
    play = torch.tensor([[20.0, 40.0, 1.0, 7.0]])
    buckets = torch.tensor([[3, 3, 4, 9]])
    q = history_percentiles(play, buckets, history_play, history_buckets, valid)
    torch.testing.assert_close(q, torch.tensor([[0.5, 1.0, 0.0, 0.5]]), check_dtype=False)


def test_advantages_are_plus_one_minus_one_or_dropped() -> None:
    """Eight shown items, q = 0.1 ... 0.8: the top 25% (q above the 0.75 quantile, 0.625)
    get +1 unless hated; a hate is -1 wherever its q; the rest, and an unshown item, are
    dropped (mask False, A 0). No normalisation."""
    q = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]])
    hated = torch.tensor([[True, False, False, False, False, False, False, True, False]])
    shown = torch.tensor([[True] * 8 + [False]])
    advantages, mask = feedback_advantages(q, hated, shown, top_share=0.25)
    assert advantages.tolist() == [[-1, 0, 0, 0, 0, 0, 1, -1, 0]]
    assert mask.tolist() == [[True, False, False, False, False, False, True, True, False]]


def test_an_observed_reaction_is_a_draw_whose_mean_is_the_expectation() -> None:
    """The reaction feedback RL sees is drawn (two draws differ), leaves the user's state as
    it was, and over many draws averages to the oracle's expected feedback (watch time
    within 5%, hate rate within 0.02): the same user model, observed instead of expected."""
    catalog = generate_synthetic_catalog(CatalogConfig(num_items=300, num_creators=20), seed=0)
    simulator = SessionSimulator(catalog, SessionConfig(slate_size=4), num_users=2)
    simulator.reset(np.arange(2), np.array([11, 12]))
    candidates = np.array([[3, 50, 7], [100, 3, -1]])
    before = simulator.state.fatigue.copy()
    rng = np.random.default_rng(0)
    draws = [simulator.observed_feedback(np.arange(2), candidates,
                                         rng.random((2, 3, NUM_DRAWS)).clip(1e-9, 1 - 1e-9))
             for _ in range(3000)]
    assert np.array_equal(simulator.state.fatigue, before)
    assert not np.array_equal(draws[0], draws[1])
    mean = np.mean(draws, 0)
    expected = simulator.expected_feedback(np.arange(2), candidates)
    watch, hate = feedback_index("watch_time"), feedback_index("hate")
    np.testing.assert_allclose(mean[..., watch], expected[..., watch], rtol=0.05, atol=0.05)
    np.testing.assert_allclose(mean[..., hate], expected[..., hate], atol=0.02)
    assert (mean[1, 2] == 0).all()  # a blank is never shown


def test_feedback_rl_trains_and_charts_its_advantages(logs, codec) -> None:
    """A short run: the method is registered, takes GBPO by default, moves the policy and
    charts the shares of +1 and -1 samples and the observed watch time."""
    from tests.test_align_trainers import FAST, make_trainer

    config = method("feedback_rl").make_config(max_steps=2, **FAST)
    assert isinstance(config, FeedbackRLConfig) and config.loss_type == "gbpo"
    trainer = make_trainer(FeedbackRLTrainer, config, logs, codec)
    before = {key: value.clone() for key, value in trainer.policy.state_dict().items()}
    history = trainer.train().history
    assert trainer.method == "feedback_rl" and len(history) == 2
    for step in history:
        assert 0 <= step["charts/feedback_negative_share"] <= 1
        assert 0 < step["charts/feedback_positive_share"] <= 0.25 + 1e-6
        assert step["charts/observed_watch_time"] > 0
    assert any(not torch.equal(value, before[key])
               for key, value in trainer.policy.state_dict().items())
    with pytest.raises(ValueError, match="do not apply"):
        dataclasses.replace(config, format_selection_k=2)
    with pytest.raises(ValueError, match="duration_base"):
        FeedbackRLConfig(duration_base=1.0)


def test_a_hybrid_adds_the_reward_models_advantage(logs, codec) -> None:
    """reward_model_weight w = 0.5: every advantage is the feedback's (+1, -1 or 0) plus w x
    GRPO's group-normalised advantage of the spec on the same rollout, and a sample counts
    where either source keeps it (so a sample feedback drops is trained on the model's)."""
    from tests.test_align_trainers import FAST, make_trainer
    from trainers.grpo import GRPOTrainer

    seen = []

    class Recording(FeedbackRLTrainer):
        def prepare(self, batch):
            prepared = super().prepare(batch)
            seen.append((prepared, GRPOTrainer.advantages(self, batch)))
            return prepared

    config = FeedbackRLConfig(max_steps=2, reward_model_weight=0.5, **FAST)
    make_trainer(Recording, config, logs, codec).train()
    assert len(seen) == 2
    for (advantages, mask), (model, model_mask) in seen:
        feedback = (advantages - 0.5 * model).round(decimals=5)
        assert torch.isin(feedback, torch.tensor([-1.0, 0.0, 1.0])).all()
        assert torch.equal(mask, model_mask | (feedback != 0))  # kept by either source
        assert model_mask.any() and (model[model_mask] != 0).any()
    with pytest.raises(ValueError, match="reward_model_weight"):
        FeedbackRLConfig(reward_model_weight=-1.0)


def test_feedback_advantages_never_read_the_simulators_expectation(logs, codec) -> None:
    """The advantages come from drawn reactions only: with `expected_feedback` (the oracle's
    expectation, which the run still charts as the truth) made to fail while they are
    computed, a run trains as before; the draws are read."""
    from tests.test_align_trainers import FAST, make_trainer

    calls = {"observed": 0}

    class Guarded(FeedbackRLTrainer):
        def advantages(self, batch):
            users = self.users
            expected, observed = users.expected_feedback, users.observed_feedback

            def refuse(*args, **kwargs):
                raise AssertionError("feedback RL read the simulator's expected feedback")

            def counted(*args, **kwargs):
                calls["observed"] += 1
                return observed(*args, **kwargs)

            users.expected_feedback, users.observed_feedback = refuse, counted
            try:
                return super().advantages(batch)
            finally:
                users.expected_feedback, users.observed_feedback = expected, observed

    history = make_trainer(Guarded, FeedbackRLConfig(max_steps=2, **FAST), logs, codec).train()
    assert len(history.history) == 2 and calls["observed"] == 2
