"""RSFT, rejection-sampling fine-tuning: keep the best samples, fine-tune by next-token loss;
and its soft relative, reward-weighted SFT.

Three variants:

- online (`RSFTTrainer`): for each user the policy proposes G items (beam or sampling), the
  reward spec scores them, the top `keep_fraction` of each group's scorable samples is kept
  and the policy fine-tunes on those by next-token loss (with the shared co-training);
- reward-weighted (`RWSFTTrainer`, `reward_weights`): every scorable sample is kept, weighted
  w_i = exp(r_i / lambda) / sum_j exp(r_j / lambda) over the batch (exponential reward-weighted
  SFT, arXiv 2603.10279: robust to noisy rewards, lambda the knob): lambda -> 0 keeps only the
  batch's best sample, lambda -> infinity is plain SFT on the policy's own samples; RSFT is
  the hard-threshold relative (the top fraction per group, weight 1);
- logged (`LoggedRSFTTrainer`, `top_sessions`, `rsft_examples`): the report's recipe: drop
  the bottom 50% of logged sessions by play duration (total watch time) and pre-train further
  on the high-quality exposures of the rest (the pre-training task on these examples).

Letters used in shape comments: B users, G samples per user, L levels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from envs.logs import LoggedSessions
from trainers.loop import TrainingResult, run_training
from trainers.online import OnlineConfig, OnlineTrainer, RolloutBatch
from trainers.pretrain import NextTokenTask, PretrainConfig
from trainers.pretrain_data import ExampleSource, LoggedExamples, QualityFilter


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


@dataclass
class RWSFTConfig(OnlineConfig):
    """Reward-weighted SFT settings plus the shared `OnlineConfig`."""

    reward_temperature: float = 0.1  # lambda in exp(r / lambda) (not the sampling
    # temperature): a P-score + 0.5 format reward spans about 1.5, so 0.1 weighs a sample e^5
    # times one 0.5 below it (not tuned)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.reward_temperature) and self.reward_temperature > 0):
            raise ValueError(f"reward_temperature (lambda) must be a positive number, got "
                             f"{self.reward_temperature}")


def reward_weights(rewards: Tensor, scorable: Tensor, temperature: float) -> Tensor:
    """(B, G) weights exp(r_i / lambda) normalised to sum 1 over the batch's scorable samples
    (a softmax, computed stably); 0 where not scorable, all 0 if none is."""
    logits = torch.where(scorable, rewards.double() / temperature, -torch.inf)  # (B, G)
    if not scorable.any():
        return torch.zeros_like(rewards)
    return torch.softmax(logits.flatten(), 0).view_as(rewards).to(rewards.dtype)  # (B, G)


class RWSFTTrainer(OnlineTrainer):
    """Reward-weighted SFT: next-token loss on every scorable sample, weighted exp(r / lambda)
    normalised over the batch (module docstring)."""

    method = "rwsft"
    config: RWSFTConfig

    def prepare(self, batch: RolloutBatch) -> Tensor:
        return reward_weights(batch.rewards.total, batch.rewards.scorable,
                              self.config.reward_temperature)

    def loss(self, batch: RolloutBatch, prepared: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        weights = prepared.to(self.device)  # (B, G), summing to 1 (or all 0)
        log_probs = self.policy.log_prob(batch.context, batch.rollout.codes)  # (B, G)
        levels = batch.rollout.codes.shape[-1]
        # Weighted mean cross-entropy per code (the next-token loss, samples weighted).
        loss = -(weights * torch.where(weights > 0, log_probs, 0.0)).sum() / levels
        return loss, {"losses/rwsft": loss.detach(),
                      "charts/weight_max": prepared.max(),
                      # Kish's effective sample size 1 / sum w^2: B G for uniform weights, 1
                      # when one sample takes all
                      "charts/effective_samples": 1.0 / prepared.square().sum().clamp(min=1e-12)
                      if prepared.sum() > 0 else prepared.new_zeros(())}


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


@dataclass
class LoggedRSFTConfig(PretrainConfig):
    """The logged RSFT's settings: pre-training's, with fine-tuning defaults."""

    learning_rate: float = 1e-4  # AdamW peak step: a fine-tune moves less than pre-training
    max_steps: int = 50  # optimizer steps on the kept sessions' exposures
    warmup_steps: int = 0  # the policy is trained already: no warm-up
    keep_fraction: float = 0.5  # share of logged sessions kept, longest play first (the report: 50%)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.keep_fraction <= 1:
            raise ValueError(f"keep_fraction must be in (0, 1], got {self.keep_fraction}")


class LoggedRSFTTrainer(NextTokenTask):
    """The report's RSFT: next-token training on the logged sessions with the longest play,
    no rollouts and no reward model (an alignment method with the online trainers' signature;
    `reward`, `resources`, `catalog` and `session_config` are not used)."""

    def __init__(self, policy: Any, reward: Any, resources: Mapping[str, Any], catalog: Any,
                 session_config: Any, config: LoggedRSFTConfig,
                 ntp_data: ExampleSource | None = None,
                 metadata: Mapping[str, Any] | None = None) -> None:
        if not isinstance(ntp_data, LoggedExamples):
            raise ValueError("the logged RSFT selects logged sessions: give it the logs' "
                             "exposures (LoggedExamples) as ntp_data")
        super().__init__(rsft_examples(ntp_data.logs, config.keep_fraction), config)
        self.policy, self.metadata = policy, dict(metadata or {})
        self.reward = "play duration of the logged sessions"
        self.logs_folder = ntp_data.folder

    def run_metadata(self) -> dict[str, Any]:
        return {"logs": self.logs_folder, "reward": self.reward, **self.metadata}

    def train(self) -> TrainingResult:
        """Train the policy in place; resumes from `config.output_dir` when it holds a
        checkpoint."""
        return run_training(self.policy, self.config, self, min_lr_rate=self.config.min_lr_rate)
