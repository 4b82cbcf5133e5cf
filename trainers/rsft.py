"""RSFT, rejection-sampling fine-tuning: keep the best samples, fine-tune by next-token loss.

Two variants:

- online (`RSFTTrainer`): for each user the policy proposes G items (beam or sampling), the
  reward spec scores them, the top `keep_fraction` of each group's scorable samples is kept
  and the policy fine-tunes on those by next-token loss (with the shared co-training);
- logged (`top_sessions`, `rsft_examples`): the report's recipe: drop the bottom 50% of
  logged sessions by play duration (total watch time) and pre-train further on the
  high-quality exposures of the rest (`trainers.pretrain.pretrain` on these examples).

Letters used in shape comments: B users, G samples per user, L levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from envs.logs import LoggedSessions
from trainers.online import OnlineConfig, OnlineTrainer, RolloutBatch
from trainers.pretrain_data import LoggedExamples, QualityFilter


@dataclass
class RSFTConfig(OnlineConfig):
    """RSFT settings plus the shared `OnlineConfig`."""

    keep_fraction: float = 0.5  # share of each group kept (the report drops the bottom 50%)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.keep_fraction <= 1:
            raise ValueError(f"keep_fraction must be in (0, 1], got {self.keep_fraction}")


def keep_top(rewards: Tensor, scorable: Tensor, keep_fraction: float) -> Tensor:
    """(B, G) bool: per group, the ceil(keep_fraction x n) best of its n scorable samples
    (ties: the earlier sample). rewards (B, G) float, scorable (B, G) bool."""
    counts = scorable.sum(1, keepdim=True)  # (B, 1)
    keep = torch.ceil(counts * keep_fraction - 1e-9).long()  # (B, 1)
    order = torch.where(scorable, rewards, -torch.inf).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(rewards.shape[1]).expand_as(order))
    return scorable & (rank < keep)  # (B, G)


class RSFTTrainer(OnlineTrainer):
    """Online RSFT: next-token loss on the best `keep_fraction` of every group."""

    method = "rsft"
    config: RSFTConfig

    def prepare(self, batch: RolloutBatch) -> Tensor:
        return keep_top(batch.rewards.total, batch.rewards.scorable, self.config.keep_fraction)

    def loss(self, batch: RolloutBatch, prepared: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        kept = prepared.to(self.device)  # (B, G)
        log_probs = self.policy.log_prob(batch.context, batch.rollout.codes)  # (B, G)
        levels = batch.rollout.codes.shape[-1]
        # Mean cross-entropy per code over the kept items (the next-token loss).
        loss = -torch.where(kept, log_probs, 0.0).sum() / (kept.sum().clamp(min=1) * levels)
        kept_reward = batch.rewards.total[prepared]
        return loss, {"losses/rsft": loss.detach(),
                      "rewards/kept": kept_reward.mean() if kept_reward.numel() else
                      torch.tensor(float("nan"))}


def top_sessions(logs: LoggedSessions, keep_fraction: float = 0.5) -> np.ndarray:
    """Indices of the ceil(keep_fraction x sessions) logged sessions with the longest play
    duration (sum of `true_watch_time` over their requests); ties: the earlier session."""
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    duration = np.bincount(logs.columns["session"], weights=logs.columns["true_watch_time"],
                           minlength=logs.num_sessions)  # (sessions,)
    keep = math.ceil(keep_fraction * logs.num_sessions - 1e-9)
    return np.sort(np.argsort(-duration, kind="stable")[:keep])


def rsft_examples(logs: LoggedSessions, keep_fraction: float = 0.5,
                  quality_filter: QualityFilter | None = None) -> LoggedExamples:
    """The report's RSFT data: high-quality exposures of the top sessions by play duration."""
    return LoggedExamples(logs, quality_filter, source="the kept logged sessions",
                          sessions=top_sessions(logs, keep_fraction))
