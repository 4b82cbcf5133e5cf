"""The alignment losses and advantages against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.advantages import STD_EPSILON, group_advantages, normalize_then_sum
from trainers.grpo import GRPOConfig
from trainers.losses import POLICY_LOSSES, dpo_loss, ecpo_loss, grpo_loss, sample_weights
from trainers.rsft import RSFTConfig, keep_top

EPS, DELTA = 0.2, 0.1


def _leaf(values: list[float]) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float64, requires_grad=True)


def test_grpo_on_a_four_sample_group_by_hand() -> None:
    """ratios 1.0, 1.5, 0.5, 1.5 with advantages +1, +1, -1, -1 (eps = 0.2):
    sample 1: min(1.5, 1.2) = 1.2, clipped: no gradient;
    sample 2: min(-0.5, -0.8) = -0.8, clipped: no gradient;
    sample 3: min(-1.5, -1.2) = -1.5, unclipped: gradient -1.5 (it grows with the ratio)."""
    old = torch.zeros(1, 4, dtype=torch.float64)
    log_probs = _leaf([0.0, math.log(1.5), math.log(0.5), math.log(1.5)])
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0]], dtype=torch.float64)
    output = grpo_loss(log_probs, old, advantages, EPS)
    objective = [1.0, 1.2, -0.8, -1.5]
    assert output.loss.item() == pytest.approx(-sum(objective) / 4)
    output.loss.backward()
    # d loss / d log pi_i = -(1/G) A_i rho_i where unclipped, 0 where the clip is active
    expected = torch.tensor([[-1.0, 0.0, 0.0, 1.5]], dtype=torch.float64) / 4
    torch.testing.assert_close(log_probs.grad, expected)
    assert float(output.clip_fraction) == pytest.approx(0.5)  # samples 1 and 2


def test_ecpo_equals_grpo_below_the_early_bound() -> None:
    old = torch.zeros(1, 3, dtype=torch.float64)
    values = [0.0, math.log(1.25), math.log(0.7)]  # all ratios below 1 + eps + delta = 1.3
    advantages = torch.tensor([[0.5, -1.0, 0.5]], dtype=torch.float64)
    grpo_log_probs, ecpo_log_probs = _leaf(values), _leaf(values)
    grpo = grpo_loss(grpo_log_probs, old, advantages, EPS)
    ecpo = ecpo_loss(ecpo_log_probs, old, advantages, EPS, delta=DELTA)
    (grpo.loss + ecpo.loss).backward()
    assert ecpo.loss.item() == pytest.approx(grpo.loss.item())
    torch.testing.assert_close(ecpo_log_probs.grad, grpo_log_probs.grad)
    assert float(ecpo.early_clip_fraction) == 0.0


def test_ecpo_caps_the_negative_advantage_gradient_above_one_plus_eps_plus_delta() -> None:
    """Ratios 2 and 5 with A = -1: GRPO's objective is -rho with gradient rho (2, 5: growing
    with the ratio); ECPO's ratio is 1 + eps + delta = 1.3, value -1.3, gradient 1.3 each:
    bounded and not zero. A positive advantage at ratio 5 is clipped by both (no gradient)."""
    old = torch.zeros(1, 3, dtype=torch.float64)
    values = [math.log(2.0), math.log(5.0), math.log(5.0)]
    advantages = torch.tensor([[-1.0, -1.0, 1.0]], dtype=torch.float64)
    grpo_log_probs, ecpo_log_probs = _leaf(values), _leaf(values)
    grpo = grpo_loss(grpo_log_probs, old, advantages, EPS)
    ecpo = ecpo_loss(ecpo_log_probs, old, advantages, EPS, delta=DELTA)
    grpo.loss.backward()
    ecpo.loss.backward()
    assert grpo.loss.item() == pytest.approx(-(-2.0 - 5.0 + 1.2) / 3)
    assert ecpo.loss.item() == pytest.approx(-(-1.3 - 1.3 + 1.2) / 3)
    torch.testing.assert_close(grpo_log_probs.grad,
                               torch.tensor([[2.0, 5.0, 0.0]], dtype=torch.float64) / 3)
    torch.testing.assert_close(ecpo_log_probs.grad,
                               torch.tensor([[1.3, 1.3, 0.0]], dtype=torch.float64) / 3)
    torch.testing.assert_close(ecpo.ratio, torch.tensor([[1.3, 1.3, 1.3]], dtype=torch.float64))
    assert float(ecpo.early_clip_fraction) == pytest.approx(2 / 3)


def test_sample_weights_are_each_samples_gradient_factor() -> None:
    """The trainers' `charts/negative_weight_max` reads these factors: on the case above GRPO
    weighs the negative samples by their ratios 2 and 5, ECPO by 1.3 each; the clipped
    positive sample by 0. The graph survives for the trainer's own backward."""
    old = torch.zeros(1, 3, dtype=torch.float64)
    values = [math.log(2.0), math.log(5.0), math.log(5.0)]
    advantages = torch.tensor([[-2.0, -1.0, 1.0]], dtype=torch.float64)
    expected = {grpo_loss: [4.0, 5.0, 0.0], ecpo_loss: [2.6, 1.3, 0.0]}
    for loss_fn, factors in expected.items():
        log_probs = _leaf(values)
        loss = loss_fn(log_probs, old, advantages, EPS).loss
        torch.testing.assert_close(sample_weights(loss, log_probs),
                                   torch.tensor([factors], dtype=torch.float64))
        loss.backward()  # still possible
        assert log_probs.grad is not None


def test_asymmetric_clip_and_masked_samples() -> None:
    """epsilon_high = 0.5 lets ratio 1.4 through for A > 0; a masked sample counts zero but
    still divides (1/G over the whole group, TRL's aggregation)."""
    old = torch.zeros(1, 3)
    log_probs = torch.log(torch.tensor([[1.4, 1.4, 3.0]]))
    advantages = torch.tensor([[1.0, -2.0, -1.0]])
    mask = torch.tensor([[True, True, False]])
    output = grpo_loss(log_probs, old, advantages, epsilon=0.2, epsilon_high=0.5, mask=mask)
    assert output.loss.item() == pytest.approx(-(1.4 - 2.0 * 1.4) / 3)
    ecpo = ecpo_loss(log_probs, old, advantages, epsilon=0.2, epsilon_high=0.5, delta=0.1,
                     mask=mask)
    assert float(ecpo.ratio[0, 2]) == pytest.approx(1.6)  # early bound 1 + 0.5 + 0.1


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-3, 3), min_size=2, max_size=6),
       st.lists(st.floats(-2, 2), min_size=2, max_size=6))
def test_ecpo_gradient_is_bounded_where_grpo_grows(log_ratios: list[float],
                                                   advantages: list[float]) -> None:
    """|d J_ECPO / d log pi_i| <= (1 + eps + delta) |A_i| / G for any ratio; GRPO's is not."""
    size = min(len(log_ratios), len(advantages))
    log_probs = torch.tensor([log_ratios[:size]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([advantages[:size]], dtype=torch.float64)
    ecpo_loss(log_probs, torch.zeros_like(adv), adv, EPS, delta=DELTA).loss.backward()
    bound = (1 + EPS + DELTA) * adv.abs() / size
    assert (log_probs.grad.abs() <= bound + 1e-12).all()


def test_advantages_by_hand_and_a_constant_group_is_zero_not_nan() -> None:
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.3, 0.3, 0.3, 0.3]])
    advantages = group_advantages(rewards, "group")
    std = torch.tensor([1.0, 2.0, 3.0, 6.0]).std()  # unbiased, as TRL
    torch.testing.assert_close(advantages[0], (rewards[0] - 3.0) / (std + STD_EPSILON))
    assert torch.equal(advantages[1], torch.zeros(4))
    torch.testing.assert_close(group_advantages(rewards, "none")[0], rewards[0] - 3.0)
    batch_std = torch.cat([rewards[0], rewards[1]]).std()
    torch.testing.assert_close(group_advantages(rewards, "batch")[0],
                               (rewards[0] - 3.0) / (batch_std + STD_EPSILON))


def test_masked_samples_leave_the_statistics_and_get_zero() -> None:
    rewards = torch.tensor([[1.0, 3.0, 100.0], [5.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    advantages = group_advantages(rewards, "group", mask)
    std = torch.tensor([1.0, 3.0]).std()
    torch.testing.assert_close(advantages[0], torch.tensor([-1.0, 1.0, 0.0]) / (std + STD_EPSILON))
    assert torch.equal(advantages[1], torch.zeros(3))  # one sample: no group to compare with


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        GRPOConfig(num_generations=1)
    with pytest.raises(ValueError, match="at least 2 samples"):
        group_advantages(torch.ones(3, 1))
    with pytest.raises(ValueError, match="NaN or infinite"):
        group_advantages(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="loss_type must be one of"):
        GRPOConfig(loss_type="ppo")
    with pytest.raises(ValueError, match="format_selection_k must be in"):
        GRPOConfig(num_generations=4, format_selection_k=5)
    with pytest.raises(ValueError, match="keep_fraction"):
        RSFTConfig(keep_fraction=0.0)
    assert GRPOConfig(loss_type="dr_grpo").scale_rewards == "none"  # Dr. GRPO's default
    assert set(POLICY_LOSSES) == {"grpo", "ecpo", "dr_grpo", "gbpo"}


def test_dpo_loss_matches_its_formula() -> None:
    chosen = torch.tensor([-1.0, -2.0], requires_grad=True)
    rejected = torch.tensor([-3.0, -1.0], requires_grad=True)
    reference_chosen, reference_rejected = torch.tensor([-1.5, -2.0]), torch.tensor([-2.5, -1.5])
    output = dpo_loss(chosen, rejected, reference_chosen, reference_rejected, beta=0.5)
    margins = 0.5 * torch.tensor([(-1.0 + 1.5) - (-3.0 + 2.5), (-2.0 + 2.0) - (-1.0 + 1.5)])
    expected = -torch.log(torch.sigmoid(margins)).mean()
    assert output.loss.item() == pytest.approx(float(expected))
    torch.testing.assert_close(output.margin, margins)
    output.loss.backward()
    # d/d chosen = -beta (1 - sigmoid(margin)) / P, and the opposite for rejected
    expected_grad = -0.5 * (1 - torch.sigmoid(margins)) / 2
    torch.testing.assert_close(chosen.grad, expected_grad)
    torch.testing.assert_close(rejected.grad, -expected_grad)
    assert float(output.accuracy) == 0.5


def test_rsft_keeps_exactly_the_top_fraction_of_scorable_samples() -> None:
    rewards = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.4, 0.2, 0.8, 0.0], [1.0, 1.0, 1.0, 1.0]])
    scorable = torch.tensor([[True] * 4, [True, True, True, False], [True] * 4])
    kept = keep_top(rewards, scorable, 0.5)
    assert kept.tolist() == [[False, True, False, True],  # the best 2 of 4
                             [True, False, True, False],  # ceil(0.5 x 3) = 2 of 3 scorable
                             [True, True, False, False]]  # ties: the earlier samples


def test_normalize_then_sum_by_hand() -> None:
    """GDPO / TRL's normalize_then_sum: two terms over one group of three (the second has
    no opinion on sample 3). Term a = 1, 2, 3 -> (-1, 0, 1) / (1 + eps); term b = 0, 2, NaN
    -> (-1, 1) / (sqrt(2) + eps), none for sample 3; weighted 1 and 0.5, summed, then the
    sums normalised over the batch."""
    terms = {"a": torch.tensor([[1.0, 2.0, 3.0]]),
             "b": torch.tensor([[0.0, 2.0, float("nan")]])}
    a = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64) / (1 + STD_EPSILON)
    b = torch.tensor([-1.0, 1.0, 0.0], dtype=torch.float64) / (math.sqrt(2) + STD_EPSILON)
    summed = a + 0.5 * b
    expected = (summed - summed.mean()) / (summed.std() + STD_EPSILON)
    result = normalize_then_sum(terms, {"a": 1.0, "b": 0.5})
    torch.testing.assert_close(result[0], expected.float())


def test_normalize_then_sum_leaves_out_samples_no_term_scores() -> None:
    terms = {"a": torch.tensor([[1.0, float("nan"), 3.0], [5.0, 5.0, float("nan")]])}
    result = normalize_then_sum(terms, {"a": 2.0})
    assert result[0, 1] == 0 and result[1, 2] == 0
    # a constant group normalises to zeros, so only the first group carries a signal
    assert result[1, 0] == result[1, 1] and result[0, 0] < result[1, 0] < result[0, 2]
    with pytest.raises(ValueError, match="same reward terms"):
        normalize_then_sum(terms, {"b": 1.0})
    with pytest.raises(ValueError, match="choose one"):
        GRPOConfig(multi_objective_aggregation="normalize_then_sum", format_selection_k=2)
    with pytest.raises(ValueError, match="multi_objective_aggregation must be one of"):
        GRPOConfig(multi_objective_aggregation="sum")
