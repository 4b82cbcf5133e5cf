"""Group-relative advantages: how much better each of a user's G samples is than its group.

GRPO and ECPO (PAPER.md, Post-training) score G items per user and normalise in the group:

    A_i = (r_i - mean(r)) / std(r)

computed as TRL's GRPOTrainer does: the mean is the group's, the standard deviation is the
group's (`scale_rewards="group"`), the whole batch's (`"batch"`, PPO-Lite) or not used
(`"none"`, Dr. GRPO), always the unbiased one plus `STD_EPSILON`, so a constant group gets
zero advantages, never NaN. Samples outside `mask` (those no reward has an opinion on, e.g.
an illegal code under a P-score) take no part in the statistics and get advantage 0.

Letters used in shape comments: B users (groups), G samples per group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor

ScaleRewards = Literal["group", "batch", "none"]
SCALE_REWARDS: tuple[str, ...] = ("group", "batch", "none")
STD_EPSILON = 1e-4  # TRL's: added to the std, so a near-constant group cannot explode


def _masked_std(values: Tensor, mask: Tensor, dim: int | None) -> Tensor:
    """Unbiased standard deviation over `mask`; 0 where fewer than two samples count."""
    count = mask.sum() if dim is None else mask.sum(dim, keepdim=True)
    total = torch.where(mask, values, 0.0)
    mean = total.sum() if dim is None else total.sum(dim, keepdim=True)
    mean = mean / count.clamp(min=1)
    squares = torch.where(mask, (values - mean) ** 2, 0.0)
    squares = squares.sum() if dim is None else squares.sum(dim, keepdim=True)
    return torch.where(count > 1, squares / (count - 1).clamp(min=1), 0.0).sqrt()


def group_advantages(
    rewards: Tensor, scale_rewards: ScaleRewards = "group", mask: Tensor | None = None
) -> Tensor:
    """A_i = (r_i - mean_group(r)) / (std(r) + STD_EPSILON): rewards (B, G) -> (B, G).

    `mask` (B, G) bool selects the samples that count (default: all); the others get 0.
    Rewards must be finite where they count: a NaN is a broken reward, not "no opinion".
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (B, G), one group per row, got {tuple(rewards.shape)}")
    if rewards.shape[1] < 2:
        raise ValueError(
            f"a group needs at least 2 samples for group-relative advantages, got G = "
            f"{rewards.shape[1]}; raise num_generations"
        )
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {SCALE_REWARDS}, got {scale_rewards!r}")
    mask = torch.ones_like(rewards, dtype=torch.bool) if mask is None else mask.bool()
    if mask.shape != rewards.shape:
        raise ValueError(f"mask {tuple(mask.shape)} must match rewards {tuple(rewards.shape)}")
    if not torch.isfinite(rewards[mask]).all():
        raise ValueError(
            "rewards contain NaN or infinite values; the reward function is broken (mark a "
            "sample it has no opinion on through the mask instead)"
        )
    rewards = torch.where(mask, rewards, 0.0).double()
    counts = mask.sum(1, keepdim=True)
    mean = rewards.sum(1, keepdim=True) / counts.clamp(min=1)  # (B, 1)
    advantages = rewards - mean  # (B, G)
    if scale_rewards == "group":
        advantages = advantages / (_masked_std(rewards, mask, dim=1) + STD_EPSILON)
    elif scale_rewards == "batch":
        advantages = advantages / (_masked_std(rewards, mask, dim=None) + STD_EPSILON)
    highest = torch.where(mask, rewards, -torch.inf).amax(1, keepdim=True)
    lowest = torch.where(mask, rewards, torch.inf).amin(1, keepdim=True)
    constant = highest <= lowest  # (B, 1): exactly 0, not the rounding error of the mean
    return torch.where(mask & ~constant, advantages, 0.0).float()  # (B, G)


MultiObjectiveAggregation = Literal["sum_then_normalize", "normalize_then_sum"]
MULTI_OBJECTIVE_AGGREGATIONS: tuple[str, ...] = ("sum_then_normalize", "normalize_then_sum")


def normalize_then_sum(terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """TRL's `multi_objective_aggregation="normalize_then_sum"` (GDPO): each term is
    normalised in its group, (r_k - mean_k) / (std_k + STD_EPSILON) over the samples it has an
    opinion on (NaN = none), the normalised terms are summed with their weights, and the sum
    is normalised over the whole batch. `terms` name -> (B, G) with NaN for no opinion;
    returns (B, G) advantages, 0 where no term has an opinion.

    (`"sum_then_normalize"`, TRL's default, is `group_advantages` of the weighted total.)"""
    if set(terms) != set(weights):
        raise ValueError(f"terms {sorted(terms)} and weights {sorted(weights)} must name the "
                         "same reward terms")
    first = next(iter(terms.values()))
    total = torch.zeros_like(first, dtype=torch.float64)  # (B, G)
    scorable = torch.zeros_like(first, dtype=torch.bool)
    for name, values in terms.items():
        opinion = ~torch.isnan(values)  # (B, G)
        counts = opinion.sum(1, keepdim=True)
        values = torch.where(opinion, values, 0.0).double()
        mean = values.sum(1, keepdim=True) / counts.clamp(min=1)  # (B, 1)
        normalised = (values - mean) / (_masked_std(values, opinion, dim=1) + STD_EPSILON)
        total += torch.where(opinion, weights[name] * normalised, 0.0)
        scorable |= opinion
    if not scorable.any():
        return torch.zeros_like(first, dtype=torch.float32)
    count = scorable.sum()
    mean = torch.where(scorable, total, 0.0).sum() / count
    advantages = (total - mean) / (_masked_std(total, scorable, dim=None) + STD_EPSILON)
    return torch.where(scorable, advantages, 0.0).float()  # (B, G)
