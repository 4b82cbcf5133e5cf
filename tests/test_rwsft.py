"""Reward-weighted SFT: weights exp(r / lambda) over the batch, against values by hand."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from onerec_lab.experiment import method
from trainers.rsft import RWSFTConfig, RWSFTTrainer, reward_weights


def test_weights_by_hand() -> None:
    """Rewards 1, 0 / 0.5, (unscorable) at lambda 0.5: e^2, e^0, e^1 over their sum; the
    unscorable sample gets 0 however high its number."""
    rewards = torch.tensor([[1.0, 0.0], [0.5, 9.0]])
    scorable = torch.tensor([[True, True], [True, False]])
    total = math.exp(2) + 1 + math.exp(1)
    expected = torch.tensor([[math.exp(2), 1.0], [math.exp(1), 0.0]]) / total
    torch.testing.assert_close(reward_weights(rewards, scorable, 0.5), expected)
    assert torch.equal(reward_weights(rewards, torch.zeros_like(scorable), 0.5),
                       torch.zeros(2, 2))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=4, max_size=4), st.floats(0.01, 100))
def test_weights_are_a_distribution_ordered_as_the_rewards(values: list[float],
                                                          temperature: float) -> None:
    """The weights sum to 1, never reverse the rewards' order, and as lambda grows they
    flatten toward uniform (RSFT's hard threshold is the other end)."""
    rewards = torch.tensor([values])
    scorable = torch.ones_like(rewards, dtype=torch.bool)
    weights = reward_weights(rewards, scorable, temperature)
    assert float(weights.sum()) == pytest.approx(1.0)
    order = rewards[0].argsort()
    assert (weights[0, order].diff() >= -1e-7).all()
    flatter = reward_weights(rewards, scorable, temperature * 10)
    assert float(flatter.max()) <= float(weights.max()) + 1e-7


def test_a_small_lambda_keeps_only_the_best_and_a_large_one_is_plain_sft() -> None:
    rewards = torch.tensor([[0.2, 0.9, 0.5]])
    scorable = torch.ones_like(rewards, dtype=torch.bool)
    torch.testing.assert_close(reward_weights(rewards, scorable, 1e-3),
                               torch.tensor([[0.0, 1.0, 0.0]]))
    torch.testing.assert_close(reward_weights(rewards, scorable, 1e6),
                               torch.full((1, 3), 1 / 3))


def test_the_loss_is_the_weighted_next_token_loss() -> None:
    """loss = -sum_i w_i log pi(o_i | u) / L: its gradient on log pi_i is -w_i / L, and a
    zero-weight sample with log pi = -inf does not make it NaN."""

    class Policy:
        def __init__(self, log_probs: torch.Tensor) -> None:
            self.values = log_probs

        def log_prob(self, context, codes):
            return self.values

    class Rollout:
        codes = torch.zeros(1, 3, 2, dtype=torch.long)  # L = 2

    class Batch:
        context = None
        rollout = Rollout()

    log_probs = torch.tensor([[-1.0, -2.0, -torch.inf]], requires_grad=True)
    trainer = object.__new__(RWSFTTrainer)  # the loss needs only the policy and device
    trainer.policy, trainer.device = Policy(log_probs), torch.device("cpu")
    weights = torch.tensor([[0.25, 0.75, 0.0]])
    loss, charts = trainer.loss(Batch(), weights)
    assert loss.item() == pytest.approx((0.25 * 1.0 + 0.75 * 2.0) / 2)
    loss.backward()
    torch.testing.assert_close(log_probs.grad, torch.tensor([[-0.125, -0.375, 0.0]]))
    assert charts["charts/weight_max"].item() == pytest.approx(0.75)
    assert charts["charts/effective_samples"].item() == pytest.approx(1 / (0.25**2 + 0.75**2))


def test_rwsft_is_a_method_with_a_checked_temperature() -> None:
    config = method("rwsft").make_config(reward_temperature=0.5)
    assert isinstance(config, RWSFTConfig) and config.reward_temperature == 0.5
    assert config.temperature == 1.0  # the sampling temperature is another setting
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="reward_temperature"):
            RWSFTConfig(reward_temperature=bad)
