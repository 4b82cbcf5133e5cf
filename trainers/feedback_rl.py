"""Feedback RL (OneRec-V2, arXiv 2508.20900, sec. 3.1.2): advantages from the user's
observed reaction to each exposure, shaped by video duration, instead of a reward model.

For each of the G items proposed to a user, the simulated user reacts once, the item shown
alone (`SimulatedUsers.observed_feedback`): a drawn reaction, as production logs an exposure,
never the hidden expectation the oracle reads. Then, with d the item's duration and p its
observed play time:

- duration bucket F(d) = floor(log_beta(d + eps)) (`duration_base` beta, `duration_offset_s`
  eps): a 10 s clip and a 5 min video are not judged on the same seconds;
- q_i = the percentile of p_i among the play times of the user's own history items in the
  same bucket (the short-term and positive pathways of the observation, ties counting one
  half); 0.5 when the history has no item in that bucket (no evidence either way: my choice,
  the paper does not say);
- A_i = +1 if q_i > tau (tau: the batch's (1 - top_share) quantile of q, so the top 25% by
  default) and the user did not hate it; A_i = -1 if the user hated it (explicit negative
  feedback); A_i = 0 otherwise, and those samples are dropped. No normalisation.

An illegal code is never shown, so it has no reaction and is dropped. The reward spec of the
run is scored and charted (the proxy curve) but not optimised, unless `reward_model_weight`
w > 0: then the run is a hybrid of both sources (V2's Table 7 compares reward model, user
feedback and a hybrid; the report does not give its rule, this one is mine), A_i = A_i^feedback
+ w * A_i^model with A^model the spec's group-normalised advantage (GRPO's), kept wherever
either is. The loss is the config's
`loss_type`, GBPO by default (V2's pairing: a negative sample of low probability is pushed
with a bounded force).

Letters used in shape comments: B users, G samples per user, H history items.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from envs.spec import BLANK, feedback_index
from trainers.grpo import Advantages, GRPOConfig, GRPOTrainer, LossType, TokenAdvantages
from trainers.online import RolloutBatch

HISTORY_PATHWAYS = (("short_term_items", "short_term_feedback"),
                    ("positive_items", "positive_feedback"))


@dataclass
class FeedbackRLConfig(GRPOConfig):
    """Feedback RL settings (module docstring) plus GRPO's (for the loss) and the shared ones."""

    loss_type: LossType = "gbpo"  # V2 pairs user-feedback advantages with GBPO
    duration_base: float = 2.0  # beta of the duration buckets (V2: not given)
    duration_offset_s: float = 1.0  # eps, seconds (V2: not given)
    top_share: float = 0.25  # share of the batch's percentiles that earn A = +1 (V2: 25%)
    reward_model_weight: float = 0.0  # w > 0: hybrid, + w x the spec's GRPO advantage (0: none)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.duration_base) and self.duration_base > 1):
            raise ValueError(f"duration_base must be > 1, got {self.duration_base}")
        if not (math.isfinite(self.duration_offset_s) and self.duration_offset_s > 0):
            raise ValueError(f"duration_offset_s must be > 0, got {self.duration_offset_s}")
        if not 0 < self.top_share < 1:
            raise ValueError(f"top_share must be in (0, 1), got {self.top_share}")
        if not (math.isfinite(self.reward_model_weight) and self.reward_model_weight >= 0):
            raise ValueError(f"reward_model_weight must be >= 0 (0: feedback only), got "
                             f"{self.reward_model_weight}")
        if self.format_selection_k or self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError("feedback RL takes its advantages from the user's reactions: "
                             "format_selection_k and multi_objective_aggregation do not apply")


def duration_buckets(duration_s: Tensor, base: float, offset_s: float) -> Tensor:
    """F(d) = floor(log_base(d + offset)) of durations in seconds (any shape), int64."""
    return torch.floor(torch.log(duration_s.double() + offset_s) / math.log(base)).long()


def history_percentiles(play: Tensor, buckets: Tensor, history_play: Tensor,
                        history_buckets: Tensor, history_valid: Tensor) -> Tensor:
    """q (B, G): the percentile of each play time (B, G) among the user's history play times
    (B, H) in the same duration bucket, ties one half; 0.5 where that bucket is empty."""
    same = (buckets[:, :, None] == history_buckets[:, None, :]) & history_valid[:, None, :]
    below = ((history_play[:, None, :] < play[..., None]) & same).sum(-1)  # (B, G)
    ties = ((history_play[:, None, :] == play[..., None]) & same).sum(-1)
    count = same.sum(-1)
    return torch.where(count > 0, (below + 0.5 * ties) / count.clamp(min=1), 0.5)


def feedback_advantages(percentiles: Tensor, hated: Tensor, shown: Tensor,
                        top_share: float) -> Advantages:
    """A = +1 above the batch's (1 - top_share) quantile of q without a hate, -1 on a hate,
    0 (dropped) otherwise or where nothing was shown; all (B, G)."""
    if not shown.any():
        return Advantages(torch.zeros_like(percentiles), torch.zeros_like(shown))
    tau = torch.quantile(percentiles[shown].double(), 1 - top_share)
    positive = shown & (percentiles > tau) & ~hated
    negative = shown & hated
    advantages = positive.float() - negative.float()  # (B, G)
    return Advantages(advantages, positive | negative)


def user_history(context: Any, durations: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The play times (B, H), durations (B, H) and validity (B, H) of the history pathways."""
    plays, lengths, valid = [], [], []
    watch = feedback_index("watch_time")
    for items_key, feedback_key in HISTORY_PATHWAYS:
        items, feedback = getattr(context, items_key), getattr(context, feedback_key)
        if items is None or feedback is None:
            continue
        items = items.cpu()
        plays.append(feedback[..., watch].float().cpu())
        lengths.append(durations[items.clamp(min=0)])
        valid.append(items != BLANK)
    if not plays:
        raise ValueError("feedback RL compares play times with the user's history: the "
                         "observation has no short-term or positive pathway with feedback")
    return torch.cat(plays, 1), torch.cat(lengths, 1), torch.cat(valid, 1)


class FeedbackRLTrainer(GRPOTrainer):
    """Feedback RL: advantages from the simulated user's observed reactions, duration-aware
    (module docstring); GBPO by default."""

    config: FeedbackRLConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.durations = torch.as_tensor(self.catalog.duration_s, dtype=torch.float32)  # (N,)
        self.feedback_charts: dict[str, Tensor] = {}

    @property
    def method(self) -> str:
        return "feedback_rl"

    def advantages(self, batch: RolloutBatch) -> Advantages:
        config, items = self.config, batch.rollout.items.cpu()  # (B, G)
        observed = self.users.observed_feedback(items, batch.generator)  # (B, G, F)
        shown = items != BLANK
        play = observed[..., feedback_index("watch_time")]
        hated = (observed[..., feedback_index("hate")] > 0) & shown
        base, offset = config.duration_base, config.duration_offset_s
        buckets = duration_buckets(self.durations[items.clamp(min=0)], base, offset)
        history_play, history_durations, valid = user_history(batch.context, self.durations)
        percentiles = history_percentiles(play, buckets, history_play,
                                          duration_buckets(history_durations, base, offset),
                                          valid)
        prepared = feedback_advantages(percentiles, hated, shown, config.top_share)
        counted = shown.sum().clamp(min=1)
        self.feedback_charts = {
            "charts/observed_watch_time": play[shown].mean() if shown.any() else play.new_zeros(()),
            "charts/feedback_positive_share": (prepared.advantages > 0).sum() / counted,
            "charts/feedback_negative_share": (prepared.advantages < 0).sum() / counted,
        }
        if config.reward_model_weight > 0:  # hybrid: the reward model's advantage added
            model = super().advantages(batch)
            return Advantages(prepared.advantages + config.reward_model_weight * model.advantages,
                              prepared.mask | model.mask)
        return prepared

    def loss(self, batch: RolloutBatch, prepared: Advantages | TokenAdvantages
             ) -> tuple[Tensor, dict[str, Tensor]]:
        loss, charts = super().loss(batch, prepared)
        return loss, {**charts, **self.feedback_charts}
