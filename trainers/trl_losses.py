"""TRL 1.16's GRPO loss types on OneRec's codes: `dapo`, `bnpo`, `cispo`, `sapo`, with
`importance_sampling_level` "token" or "sequence", `epsilon_high` and TRL's `delta`.

The lab's own losses (`trainers.losses`: grpo, ecpo, dr_grpo, gbpo) take one ratio per item:
an item is one "token" whose log-probability is the sum of its codes'. These follow TRL's
`GRPOTrainer._compute_loss` exactly with a code as a token and an item as a sequence (a
completion of L tokens, every one valid), so that a researcher moving between TRL and the lab
meets the same numbers (`tests/test_trl_loss_types.py` runs TRL's own code on the same
tensors). With r_t = pi_theta(c_t) / pi_old(c_t) per code and A the item's advantage:

- level "token": the ratio of each code, r_t; "sequence" (GSPO): one ratio per item, the
  geometric mean exp(mean_t log r_t), shared by its codes;
- `dapo`, `bnpo` (and TRL's grpo / dr_grpo, not offered here: the item-level ones are the
  lab's): per code -min(r A, clip(r, 1 - eps, 1 + eps_high) A), with TRL's two-sided cap
  r <= `delta` on the unclipped term when `delta` is set (INTELLECT-2); `dapo` sums over every
  counted code and divides by their number in the batch; `bnpo` does the same (the two differ
  in TRL only across gradient-accumulation windows, which one step here does not have);
- `cispo`: -sg(min(r, eps_high)) A log pi(c_t): the ratio is clipped, never the gradient
  (ScaleRL's CISPO; `epsilon_high` is its absolute cap eps_max), summed over counted codes
  and divided by their number;
- `sapo`: -sigmoid(tau (r - 1)) 4 / tau A per code, tau = `sapo_temperature_pos` for A > 0
  else `sapo_temperature_neg` (Soft Adaptive Policy Optimization), averaged over each item's
  codes, then over the B x G items.

A sample outside `mask` has all its codes uncounted (TRL's completion mask).

Letters used in shape comments: B users, G samples per user, L codes per item.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from trainers.losses import PolicyLossOutput

TRLLossType = Literal["dapo", "bnpo", "cispo", "sapo"]
TRL_LOSS_TYPES: tuple[str, ...] = ("dapo", "bnpo", "cispo", "sapo")
ImportanceSamplingLevel = Literal["token", "sequence"]
IMPORTANCE_SAMPLING_LEVELS: tuple[str, ...] = ("token", "sequence")


@dataclass(frozen=True)
class TRLLossSettings:
    """The settings of one TRL loss, named as TRL's GRPOConfig names them."""

    loss_type: TRLLossType = "dapo"  # TRL 1.16's default
    importance_sampling_level: ImportanceSamplingLevel = "token"  # a code, or a whole item
    epsilon: float = 0.2  # epsilon_low of the clip
    epsilon_high: float | None = None  # None = epsilon (cispo: its absolute cap eps_max)
    delta: float | None = None  # TRL's two-sided cap on the unclipped ratio; None = off
    sapo_temperature_pos: float = 1.0  # SAPO's tau for A > 0 (TRL's default)
    sapo_temperature_neg: float = 1.05  # SAPO's tau for A <= 0 (TRL's default)

    def __post_init__(self) -> None:
        if self.loss_type not in TRL_LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {TRL_LOSS_TYPES}, got {self.loss_type!r}")
        if self.importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
            raise ValueError(f"importance_sampling_level must be one of "
                             f"{IMPORTANCE_SAMPLING_LEVELS}, got {self.importance_sampling_level!r}")
        if self.epsilon <= 0 or (self.epsilon_high is not None and self.epsilon_high <= 0):
            raise ValueError(f"epsilon and epsilon_high must be > 0, got {self.epsilon}, "
                             f"{self.epsilon_high}")
        if self.delta is not None and self.delta <= 1:
            raise ValueError(f"delta (TRL's cap on the ratio) must be > 1 or None, got {self.delta}")
        if self.sapo_temperature_pos <= 0 or self.sapo_temperature_neg <= 0:
            raise ValueError("sapo_temperature_pos and sapo_temperature_neg must be > 0, got "
                             f"{self.sapo_temperature_pos}, {self.sapo_temperature_neg}")

    @property
    def upper(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


def trl_policy_loss(token_log_probs: Tensor, old_token_log_probs: Tensor, advantages: Tensor,
                    settings: TRLLossSettings, mask: Tensor | None = None) -> PolicyLossOutput:
    """TRL's loss (module docstring) on code log-probabilities (B, G, L) with gradient, their
    values under pi_old (B, G, L) and the items' advantages (B, G); `mask` (B, G) bool."""
    if token_log_probs.shape != old_token_log_probs.shape or token_log_probs.dim() != 3 or \
            advantages.shape != token_log_probs.shape[:2]:
        raise ValueError(
            f"token_log_probs {tuple(token_log_probs.shape)} and old_token_log_probs "
            f"{tuple(old_token_log_probs.shape)} must be (B, G, L) and advantages "
            f"{tuple(advantages.shape)} (B, G)")
    counted = (torch.ones_like(advantages, dtype=torch.bool) if mask is None
               else mask.bool())[..., None].expand_as(token_log_probs)  # (B, G, L)
    log_ratio = token_log_probs - old_token_log_probs  # (B, G, L)
    if settings.importance_sampling_level == "sequence":  # GSPO: one ratio per item
        log_ratio = log_ratio.mean(-1, keepdim=True)  # (B, G, 1), every code counted
    ratio = torch.exp(log_ratio)  # (B, G, L) or (B, G, 1)
    advantage = advantages[..., None].to(ratio.dtype)  # (B, G, 1)
    clip_region = torch.zeros_like(counted)
    if settings.loss_type == "cispo":
        capped = ratio.clamp(max=settings.upper).detach()
        per_code = -capped * advantage * token_log_probs
        clip_region = (ratio > settings.upper).expand_as(counted)
    elif settings.loss_type == "sapo":
        tau = torch.where(advantage > 0, settings.sapo_temperature_pos,
                          settings.sapo_temperature_neg)
        per_code = (-torch.sigmoid(tau * (ratio - 1)) * 4 / tau * advantage).expand_as(
            token_log_probs)
    else:  # dapo, bnpo
        clipped = ratio.clamp(1 - settings.epsilon, 1 + settings.upper)
        unclipped = ratio if settings.delta is None else ratio.clamp(max=settings.delta)
        per_code = (-torch.minimum(unclipped * advantage, clipped * advantage)).expand_as(
            token_log_probs)
        clip_region = (((ratio < 1 - settings.epsilon) & (advantage < 0))
                       | ((ratio > 1 + settings.upper) & (advantage > 0))).expand_as(counted)
    per_code = torch.where(counted, per_code, 0.0)  # (B, G, L)
    if settings.loss_type == "sapo":  # mean over each item's codes, then over items
        codes = counted.sum(-1).clamp(min=1)  # (B, G)
        loss = (per_code.sum(-1) / codes).mean()
    else:  # over every counted code of the batch
        loss = per_code.sum() / counted.sum().clamp(min=1)
    item_ratio = ratio.mean(-1).detach()  # (B, G): a sequence's ratio, or its codes' mean
    share = (clip_region & counted).sum() / counted.sum().clamp(min=1)
    return PolicyLossOutput(loss, item_ratio, share, torch.zeros(()))
