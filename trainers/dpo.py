"""DPO as OneRec v1's iterative preference alignment (IPA).

For each user the policy beam-searches N = `num_generations` items; the reward spec picks
the chosen item (the best scorable one) and the rejected item (the worst); the loss is
DPO's (`trainers.losses.dpo_loss`) plus the shared next-token loss (OneRec v1:
NTP + lambda x DPO; here `ntp_weight` = 1 / lambda up to the learning rate's scale). The
reference advances each iteration: with `reference="current"` it is the policy that
generated the step's items. A group whose best and worst rewards are equal (or with fewer
than two scorable samples) states no preference and is skipped.

Letters used in shape comments: B users, G samples per user, L levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from trainers.losses import dpo_loss
from trainers.online import OnlineConfig, OnlineTrainer, RolloutBatch


@dataclass
class DPOConfig(OnlineConfig):
    """DPO settings (TRL's DPOConfig name) plus the shared `OnlineConfig`."""

    beta: float = 0.1  # DPO's inverse temperature (TRL's default; OneRec v1: not given)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0 (DPO's inverse temperature), got {self.beta}")


class PreferencePairs(NamedTuple):
    """Best and worst sample of each group that states a preference."""

    users: Tensor  # (P,) rows of the batch with a pair
    chosen: Tensor  # (P,) sample index of the best item
    rejected: Tensor  # (P,) sample index of the worst item


def preference_pairs(rewards: Tensor, scorable: Tensor) -> PreferencePairs:
    """The best and worst scorable sample per group, for groups where they differ.
    rewards (B, G), scorable (B, G) bool; ties go to the earlier sample."""
    best = torch.where(scorable, rewards, -torch.inf)
    worst = torch.where(scorable, rewards, torch.inf)
    chosen, rejected = best.argmax(1), worst.argmin(1)  # (B,) each: the first maximum/minimum
    prefers = best.amax(1) > worst.amin(1)  # (B,): at least two scorable samples that differ
    users = prefers.nonzero().squeeze(1)
    return PreferencePairs(users, chosen[users], rejected[users])


class DPOTrainer(OnlineTrainer):
    """Iterative DPO on beam-searched best / worst items, with next-token co-training."""

    method = "dpo"
    config: DPOConfig

    def prepare(self, batch: RolloutBatch) -> PreferencePairs:
        return preference_pairs(batch.rewards.total, batch.rewards.scorable)

    def loss(self, batch: RolloutBatch, prepared: PreferencePairs
             ) -> tuple[Tensor, dict[str, Tensor]]:
        users, chosen, rejected = (index.to(self.device) for index in prepared)
        codes = batch.rollout.codes  # (B, G, L)
        pair = torch.zeros(codes.shape[0], 2, dtype=torch.long, device=self.device)  # (B, 2)
        pair[users, 0], pair[users, 1] = chosen, rejected
        pair_codes = codes.gather(1, pair[..., None].expand(-1, -1, codes.shape[2]))  # (B, 2, L)
        log_probs = self.policy.log_prob(batch.context, pair_codes)[users]  # (P, 2)
        reference = batch.old_log_probs.gather(1, pair)[users]  # (P, 2)
        if users.numel() == 0:  # no group states a preference: nothing to learn from DPO
            zero, nothing = log_probs.sum() * 0.0, torch.tensor(float("nan"))
            return zero, {"losses/dpo": zero.detach(), "charts/dpo_margin": nothing,
                          "charts/dpo_accuracy": nothing, "charts/preference_pairs": zero.detach()}
        output = dpo_loss(log_probs[:, 0], log_probs[:, 1], reference[:, 0], reference[:, 1],
                          self.config.beta)
        return output.loss, {"losses/dpo": output.loss.detach(),
                             "charts/dpo_margin": output.margin.mean(),
                             "charts/dpo_accuracy": output.accuracy,
                             "charts/preference_pairs": torch.tensor(float(users.numel()))}
