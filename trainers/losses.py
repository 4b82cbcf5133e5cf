"""The alignment losses as pure functions on tensors, each reading like its paper's equation.

A sample o_i is a whole item (its L codes), so log pi(o_i | u) is the sum of the item's code
log-probabilities (`OneRecPolicy.log_prob`). Every loss is the negative of an objective to
maximise and averages over all B x G samples, a sample outside `mask` counting zero: TRL's
`grpo` aggregation with one "token" per item (`tests/test_grpo_trl_equivalence.py` checks the
values and gradients against TRL's own code). No KL term: OneRec co-trains with the
next-token loss instead.

Letters used in shape comments: B users, G samples per user (the group).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional


class PolicyLossOutput(NamedTuple):
    """A policy-gradient loss and what the clip did."""

    loss: Tensor  # () -J, to minimise
    ratio: Tensor  # (B, G) rho_i (detached), as the objective used it
    clip_fraction: Tensor  # () share of counted samples whose clip bound was active
    early_clip_fraction: Tensor  # () share capped at 1 + eps + delta (ECPO only; else 0)


def _clipped_surrogate(
    ratio: Tensor, advantages: Tensor, epsilon: float, epsilon_high: float, mask: Tensor
) -> tuple[Tensor, Tensor]:
    """-1/(B G) sum_i mask_i min(rho_i A_i, clip(rho_i, 1 - eps, 1 + eps_high) A_i), and the
    share of counted samples where the clip bound is the smaller term (TRL's clip region)."""
    clipped = ratio.clamp(1.0 - epsilon, 1.0 + epsilon_high)
    objective = torch.minimum(ratio * advantages, clipped * advantages)  # (B, G)
    loss = -torch.where(mask, objective, 0.0).sum() / objective.numel()
    in_clip_region = ((ratio < 1.0 - epsilon) & (advantages < 0)) | (
        (ratio > 1.0 + epsilon_high) & (advantages > 0)
    )
    return loss, _share(in_clip_region, mask)


def _share(flags: Tensor, mask: Tensor) -> Tensor:
    return (flags & mask).sum() / mask.sum().clamp(min=1)


def _check(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor,
           mask: Tensor | None, epsilon: float, epsilon_high: float | None) -> tuple[Tensor, float]:
    if not log_probs.shape == old_log_probs.shape == advantages.shape:
        raise ValueError(
            f"log_probs {tuple(log_probs.shape)}, old_log_probs {tuple(old_log_probs.shape)} "
            f"and advantages {tuple(advantages.shape)} must have the same (B, G) shape"
        )
    if epsilon <= 0 or (epsilon_high is not None and epsilon_high <= 0):
        raise ValueError(f"epsilon and epsilon_high must be > 0, got {epsilon}, {epsilon_high}")
    mask = torch.ones_like(advantages, dtype=torch.bool) if mask is None else mask.bool()
    return mask, epsilon if epsilon_high is None else epsilon_high


def grpo_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    mask: Tensor | None = None,
) -> PolicyLossOutput:
    """GRPO's clipped surrogate (Shao et al. 2024, DeepSeekMath eq. 3, without the KL term):

        J = 1/G sum_i min(rho_i A_i, clip(rho_i, 1 - eps, 1 + eps_high) A_i),
        rho_i = pi_theta(o_i | u) / pi_old(o_i | u).

    log_probs (B, G) with gradient, old_log_probs (B, G) of pi_old, advantages (B, G);
    `epsilon_high` defaults to `epsilon` (DAPO's asymmetric clip when larger). For A_i < 0
    and rho_i > 1 + eps the min picks rho_i A_i: its gradient grows without bound with rho.
    """
    mask, epsilon_high = _check(log_probs, old_log_probs, advantages, mask, epsilon,
                                epsilon_high)
    ratio = torch.exp(log_probs - old_log_probs)  # (B, G)
    loss, clip_fraction = _clipped_surrogate(ratio, advantages, epsilon, epsilon_high, mask)
    return PolicyLossOutput(loss, ratio.detach(), clip_fraction, torch.zeros(()))


def ecpo_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    delta: float = 0.1,
    mask: Tensor | None = None,
) -> PolicyLossOutput:
    """ECPO, Early Clipped GRPO (OneRec Technical Report, section 4.3, eq. for J_ECPO):

        J = 1/G sum_i min(rho_i A_i, clip(rho_i, 1 - eps, 1 + eps) A_i),
        rho_i = pi_theta(o_i | u) / pi'_old(o_i | u),
        pi'_old(o_i | u) = max(sg(pi_theta(o_i | u)) / (1 + eps + delta), pi_old(o_i | u)),

    sg = stop-gradient (detach). Where pi_theta <= (1 + eps + delta) pi_old this is GRPO;
    above, rho_i equals 1 + eps + delta with gradient (1 + eps + delta) grad log pi_theta,
    so a negative advantage pushes down with a bounded, non-zero force. With an asymmetric
    clip the early bound is 1 + epsilon_high + delta.
    """
    if delta < 0:
        raise ValueError(f"delta must be >= 0 (ECPO's margin above the clip), got {delta}")
    mask, epsilon_high = _check(log_probs, old_log_probs, advantages, mask, epsilon,
                                epsilon_high)
    early_bound = math.log1p(epsilon_high + delta)  # log(1 + eps + delta)
    log_pi_old_prime = torch.maximum(log_probs.detach() - early_bound, old_log_probs)
    ratio = torch.exp(log_probs - log_pi_old_prime)  # (B, G), at most 1 + eps + delta
    loss, clip_fraction = _clipped_surrogate(ratio, advantages, epsilon, epsilon_high, mask)
    early = (log_probs.detach() - old_log_probs > early_bound) & (advantages < 0)
    return PolicyLossOutput(loss, ratio.detach(), clip_fraction, _share(early, mask))


def _log_one_minus(log_probs: Tensor) -> Tensor:
    """log(1 - p) from log p <= 0, accurate at both ends (-inf where p = 1)."""
    return torch.where(log_probs > -math.log(2), torch.log(-torch.expm1(log_probs)),
                       torch.log1p(-torch.exp(log_probs)))


def gbpo_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    mask: Tensor | None = None,
) -> PolicyLossOutput:
    """GBPO, Gradient-Bounded Policy Optimization (OneRec-V2, arXiv 2508.20900, sec. 3.1.2):

        J = 1/G sum_i pi_theta(o_i | u) / pi'_old(o_i | u) * A_i,
        pi'_old(o_i | u) = max(pi_old, sg(pi_theta))       if A_i >= 0,
                           max(pi_old, 1 - sg(pi_theta))   if A_i < 0.

    No clipping and no sample dropped. The gradient of a sample is A_i grad pi / pi'_old: for
    A_i >= 0 at most A_i grad pi / pi (binary cross-entropy with label 1), for A_i < 0 at most
    |A_i| grad pi / (1 - pi) (label 0), so a negative sample of low probability cannot push
    with the unbounded force rho |A| of GRPO. `clip_fraction` is the share of counted samples
    whose bound is active (pi'_old above pi_old); `ratio` is pi_theta / pi'_old.
    """
    mask, _ = _check(log_probs, old_log_probs, advantages, mask, 1.0, None)
    current = log_probs.detach().clamp(max=0.0)  # log pi <= 0 (rounding can cross it)
    bound = torch.where(advantages >= 0, current, _log_one_minus(current))  # log of sg term
    log_pi_old_prime = torch.maximum(old_log_probs, bound)
    ratio = torch.exp(log_probs - log_pi_old_prime)  # (B, G)
    objective = ratio * advantages
    loss = -torch.where(mask, objective, 0.0).sum() / objective.numel()
    return PolicyLossOutput(loss, ratio.detach(), _share(bound > old_log_probs, mask),
                            torch.zeros(()))


def sample_weights(loss: Tensor, log_probs: Tensor) -> Tensor:
    """|d J / d log pi(o_i | u)| x B G for each sample: the factor in front of grad log pi_i in
    the policy gradient (GRPO, A_i < 0, ratio above 1 - eps: rho_i |A_i|, unbounded in rho;
    ECPO: at most (1 + eps + delta) |A_i|; GBPO: at most |A_i| pi_i / (1 - pi_i) for A_i < 0). `loss` () from one of the losses above, computed
    from `log_probs` (B, G); the graph is kept for the caller's backward. Returns (B, G)."""
    (slope,) = torch.autograd.grad(loss, log_probs, retain_graph=True)
    return slope.abs() * slope.numel()


# loss_type -> loss. Dr. GRPO (Liu et al. 2025) makes two corrections to GRPO: a constant
# normaliser instead of each sequence's length, which changes nothing for items of exactly L
# codes (its loss here is GRPO's, as TRL's `dr_grpo` is on equal-length completions), and no
# std scaling of the rewards, which is `scale_rewards="none"`, its default in GRPOConfig.
POLICY_LOSSES: dict[str, Callable[..., PolicyLossOutput]] = {
    "grpo": grpo_loss,
    "dr_grpo": grpo_loss,
    "ecpo": ecpo_loss,
    "gbpo": gbpo_loss,
}


class PreferenceLossOutput(NamedTuple):
    """A DPO loss and its implicit reward margin."""

    loss: Tensor  # () mean over pairs
    margin: Tensor  # (P,) beta * (chosen log-ratio - rejected log-ratio), detached
    accuracy: Tensor  # () share of pairs whose margin is positive


def dpo_loss(
    chosen_log_probs: Tensor,
    rejected_log_probs: Tensor,
    reference_chosen_log_probs: Tensor,
    reference_rejected_log_probs: Tensor,
    beta: float = 0.1,
) -> PreferenceLossOutput:
    """DPO (Rafailov et al. 2023, eq. 7), over P (chosen, rejected) pairs:

        L = -log sigmoid(beta * (log pi(y_w|u) / pi_ref(y_w|u) - log pi(y_l|u) / pi_ref(y_l|u)))

    Each argument (P,): log-probabilities of the chosen (y_w) and rejected (y_l) items under
    the policy (with gradient) and under the reference.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0 (DPO's inverse temperature), got {beta}")
    shapes = {tuple(t.shape) for t in (chosen_log_probs, rejected_log_probs,
                                       reference_chosen_log_probs, reference_rejected_log_probs)}
    if len(shapes) != 1:
        raise ValueError(f"the four log-probability tensors must share one shape (P,), got {shapes}")
    margin = beta * ((chosen_log_probs - reference_chosen_log_probs)
                     - (rejected_log_probs - reference_rejected_log_probs))  # (P,)
    loss = -functional.logsigmoid(margin).mean()
    return PreferenceLossOutput(loss, margin.detach(), (margin.detach() > 0).float().mean())
