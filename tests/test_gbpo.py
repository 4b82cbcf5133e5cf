"""GBPO (OneRec-V2's Gradient-Bounded Policy Optimization) against values computed by hand,
and the bound it promises: a sample's gradient is at most binary cross-entropy's."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from onerec_lab.experiment import method
from trainers.grpo import GRPOConfig, loss_options
from trainers.losses import POLICY_LOSSES, gbpo_loss, grpo_loss, sample_weights

PI_OLD = [0.2, 0.5, 0.2, 0.5]
PI = [0.4, 0.25, 0.6, 0.1]
ADVANTAGES = [1.0, 1.0, -1.0, -1.0]


def _probabilities(values: list[float]) -> torch.Tensor:
    """A (1, G) leaf of probabilities: gradients come out per unit of pi, as BCE's do."""
    return torch.tensor([values], dtype=torch.float64, requires_grad=True)


def test_gbpo_on_a_four_sample_group_by_hand() -> None:
    """pi_old 0.2, 0.5, 0.2, 0.5; pi 0.4, 0.25, 0.6, 0.1; A +1, +1, -1, -1:
    sample 1: pi'_old = max(0.2, 0.4) = 0.4, ratio 1, d/d pi = A / 0.4 = 2.5 (= A / pi);
    sample 2: pi'_old = max(0.5, 0.25) = 0.5, ratio 0.5, d/d pi = 1 / 0.5 = 2;
    sample 3: pi'_old = max(0.2, 1 - 0.6) = 0.4, ratio 1.5, d/d pi = -1 / 0.4 = -2.5
              (= -|A| / (1 - pi); GRPO's ratio is 3 and unclipped);
    sample 4: pi'_old = max(0.5, 1 - 0.1) = 0.9, ratio 1/9, d/d pi = -1 / 0.9.
    J = (1 + 0.5 - 1.5 - 1/9) / 4; the bound is active on samples 1, 3, 4."""
    pi = _probabilities(PI)
    old = torch.log(torch.tensor([PI_OLD], dtype=torch.float64))
    advantages = torch.tensor([ADVANTAGES], dtype=torch.float64)
    output = gbpo_loss(torch.log(pi), old, advantages)
    assert output.loss.item() == pytest.approx(-(1 + 0.5 - 1.5 - 1 / 9) / 4)
    torch.testing.assert_close(output.ratio,
                               torch.tensor([[1.0, 0.5, 1.5, 1 / 9]], dtype=torch.float64))
    output.loss.backward()
    objective_gradient = torch.tensor([[2.5, 2.0, -2.5, -1 / 0.9]], dtype=torch.float64) / 4
    torch.testing.assert_close(pi.grad, -objective_gradient)
    assert float(output.clip_fraction) == pytest.approx(3 / 4)


def test_gbpo_bounds_the_negative_sample_where_grpo_grows() -> None:
    """A negative sample whose probability rose 10-fold (pi_old 0.05 -> pi 0.5): GRPO weighs
    its grad log pi by rho |A| = 10, GBPO by |A| pi / max(pi_old, 1 - pi) = 1."""
    old = torch.log(torch.tensor([[0.05, 0.3]], dtype=torch.float64))
    advantages = torch.tensor([[-1.0, 1.0]], dtype=torch.float64)
    factors = {}
    for name, loss_fn in (("grpo", grpo_loss), ("gbpo", gbpo_loss)):
        log_probs = torch.log(torch.tensor([[0.5, 0.3]], dtype=torch.float64)).requires_grad_()
        factors[name] = sample_weights(loss_fn(log_probs, old, advantages).loss, log_probs)
    assert factors["grpo"][0, 0].item() == pytest.approx(10.0)
    assert factors["gbpo"][0, 0].item() == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(1e-4, 1 - 1e-4), st.floats(1e-4, 1 - 1e-4),
                          st.floats(-3, 3)), min_size=1, max_size=8))
def test_each_samples_gradient_is_at_most_binary_cross_entropys(
        samples: list[tuple[float, float, float]]) -> None:
    """For any pi_old, pi and A: |dJ / d pi_i| <= A_i / (G pi_i) if A_i >= 0 (BCE, label 1)
    and <= |A_i| / (G (1 - pi_i)) if A_i < 0 (BCE, label 0); the bound is attained where the
    stop-gradient term is the larger, and below it J is the plain importance ratio."""
    old_pi, now_pi, advantage = (list(column) for column in zip(*samples, strict=True))
    size = len(samples)
    pi = _probabilities(now_pi)
    old = torch.log(torch.tensor([old_pi], dtype=torch.float64))
    advantages = torch.tensor([advantage], dtype=torch.float64)
    gbpo_loss(torch.log(pi), old, advantages).loss.backward()
    gradient = -pi.grad[0] * size  # dJ / d pi_i, times G
    for i, (before, now, a) in enumerate(samples):
        bound = a / now if a >= 0 else abs(a) / (1 - now)
        assert abs(gradient[i].item()) <= bound * (1 + 1e-9) + 1e-12
        reference = max(before, now if a >= 0 else 1 - now)
        assert gradient[i].item() == pytest.approx(a / reference, rel=1e-9, abs=1e-12)


def test_gbpo_keeps_every_sample_and_respects_the_mask() -> None:
    """No sample is dropped by a clip (each gradient is non-zero where A != 0); a masked
    sample counts zero and still divides by G (TRL's aggregation, as the other losses)."""
    log_probs = torch.log(torch.tensor([[0.9, 0.01, 0.5]], dtype=torch.float64)).requires_grad_()
    old = torch.log(torch.tensor([[0.01, 0.9, 0.5]], dtype=torch.float64))
    advantages = torch.tensor([[2.0, -2.0, 1.0]], dtype=torch.float64)
    output = gbpo_loss(log_probs, old, advantages, mask=torch.tensor([[True, True, False]]))
    output.loss.backward()
    assert (log_probs.grad[0, :2] != 0).all() and log_probs.grad[0, 2] == 0
    # sample 1: ratio 0.9 / max(0.01, 0.9) = 1; sample 2: 0.01 / max(0.9, 0.99) = 1/99
    assert output.loss.item() == pytest.approx(-(2.0 - 2.0 / 99) / 3)


def test_a_probability_of_one_or_rounding_above_it_stays_finite() -> None:
    """log pi = 0 (pi = 1) makes 1 - pi = 0: pi'_old falls back to pi_old, no NaN; a log
    probability rounded just above 0 is treated as 0."""
    log_probs = torch.tensor([[0.0, 1e-9]], dtype=torch.float64, requires_grad=True)
    old = torch.log(torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    output = gbpo_loss(log_probs, old, torch.tensor([[-1.0, -1.0]], dtype=torch.float64))
    output.loss.backward()
    assert torch.isfinite(output.loss) and torch.isfinite(log_probs.grad).all()
    assert output.ratio[0, 0].item() == pytest.approx(2.0)


def test_gbpo_is_a_method_and_takes_no_clip_settings() -> None:
    config = method("gbpo").make_config()
    assert isinstance(config, GRPOConfig) and config.loss_type == "gbpo"
    assert loss_options(config) == {}
    assert POLICY_LOSSES["gbpo"] is gbpo_loss
    assert loss_options(GRPOConfig(loss_type="ecpo", delta=0.3)) == {
        "epsilon": 0.2, "epsilon_high": None, "delta": 0.3}
    with pytest.raises(ValueError, match="same"):
        gbpo_loss(torch.zeros(1, 2), torch.zeros(1, 3), torch.zeros(1, 2))
    assert math.isfinite(gbpo_loss(torch.zeros(1, 2), torch.zeros(1, 2),
                                   torch.ones(1, 2)).loss.item())
