"""GRPO, ECPO, Dr. GRPO and GBPO on OneRec: group-relative advantages, a bounded ratio per item.

For each user the policy proposes G items (`trainers.rollout`), each scored by the reward
spec; advantages are normalised in the group (`trainers.advantages`) and the loss is the
`loss_type`'s (`trainers.losses`): `ecpo` (the report's Early Clipped GRPO), `grpo`,
`dr_grpo` or `gbpo` (OneRec-V2's Gradient-Bounded Policy Optimization: no clip, each sample's
gradient bounded as binary cross-entropy bounds it), all with one ratio per item; or one of
TRL 1.16's loss types `dapo`, `bnpo`, `cispo`, `sapo` (`trainers.trl_losses`: a code is a
token, an item a sequence, `importance_sampling_level` picks the ratio). Every one is
co-trained with the next-token loss (`trainers.online`).

The format reward, two ways (PAPER.md, Reward system):

- `format_selection_k = 0`: a plain reward term. An illegal sample is scored by it (0) and by
  nothing else, so it gets a low reward and a negative advantage.
- `format_selection_k = K > 0`: the report's rule. The format term leaves the group reward;
  illegal samples take no part in the group-relative term (no other reward has an opinion on
  a code that names no item); K random samples per group are picked and the legal ones get
  an extra advantage of the format term's weight (1 for "pscore + format"): never a negative
  advantage on an illegal sample.

Without a format term an illegal sample is unscorable: it is left out, as TRL leaves out a
completion every reward function returns None for, and nothing keeps codes legal but the
next-token loss (the report saw legality fall below 50%).

Letters used in shape comments: B users, G samples per user.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from policies.encoder import Context
from rewards import format_selection
from trainers.advantages import (
    MULTI_OBJECTIVE_AGGREGATIONS,
    SCALE_REWARDS,
    MultiObjectiveAggregation,
    ScaleRewards,
    group_advantages,
    normalize_then_sum,
)
from trainers.group_rewards import FORMAT
from trainers.losses import POLICY_LOSSES, sample_weights
from trainers.online import OnlineConfig, OnlineTrainer, RolloutBatch
from trainers.rollout import Rollout, mix_legacy
from trainers.trl_losses import (
    TRL_LOSS_TYPES,
    ImportanceSamplingLevel,
    TRLLossSettings,
    trl_policy_loss,
)

LossType = Literal["grpo", "ecpo", "dr_grpo", "gbpo", "dapo", "bnpo", "cispo", "sapo"]
LOSS_TYPES: tuple[str, ...] = (*POLICY_LOSSES, *TRL_LOSS_TYPES)


@dataclass
class GRPOConfig(OnlineConfig):
    """GRPO-family settings, named as TRL's GRPOConfig, plus the shared `OnlineConfig`."""

    loss_type: LossType = "ecpo"  # the report's Early Clipped GRPO; "grpo", "dr_grpo", "gbpo"
    # (one ratio per item), or TRL's "dapo", "bnpo", "cispo", "sapo" (trainers.trl_losses)
    epsilon: float = 0.2  # clip range of the ratio (TRL's and PPO's default; the report: not given;
    # gbpo does not clip: epsilon, epsilon_high and delta are not used)
    epsilon_high: float | None = None  # upper clip bound 1 + epsilon_high (DAPO); None = epsilon
    # (cispo: the absolute cap eps_max on the ratio, as in TRL; ScaleRL recommends 5.0)
    delta: float = 0.1  # ECPO's early clip: ratio capped at 1 + epsilon_high + delta (the report's 0.1)
    # Unlike TRL's `delta` (an absolute cap on the ratio with zero gradient beyond it, from
    # INTELLECT-2), ECPO's keeps a gradient of (1 + eps + delta) |A| there.
    clip_delta: float | None = None  # TRL's `delta` for dapo / bnpo: the unclipped ratio capped
    # at clip_delta (> 1); renamed here because `delta` is ECPO's margin; None = off
    importance_sampling_level: ImportanceSamplingLevel = "token"  # TRL loss types: the ratio of
    # each code ("token") or of the item ("sequence", GSPO's geometric mean over its codes)
    sapo_temperature_pos: float = 1.0  # sapo: tau for A > 0 (TRL's default)
    sapo_temperature_neg: float = 1.05  # sapo: tau for A <= 0 (TRL's default)
    scale_rewards: ScaleRewards | None = None  # "group", "batch", "none"; None = "none" for
    # dr_grpo (Dr. GRPO drops the std), "group" otherwise
    multi_objective_aggregation: MultiObjectiveAggregation = "sum_then_normalize"  # TRL's:
    # the weighted sum normalised per `scale_rewards`, or "normalize_then_sum" (GDPO: each
    # term normalised in its group, then summed, then normalised over the batch)
    format_selection_k: int = 0  # K > 0: the report's format rule (K random samples, legal ones
    # get the format term's weight as advantage); 0: format is a plain reward term
    log_negative_gradient: bool = False  # also chart the parameter-gradient norm of the
    # negative-advantage samples' part of the loss (one more backward pass per update)
    legacy_share: float = 0.0  # share of each group's G samples replaced by the logging
    # policy's top items for the same user (OneRec-V2's legacy exposures; needs the resource
    # "legacy_policy", the world's cascade in `align`; 1: those only); pi_old: sg(pi_theta)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(
                f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}"
            )
        if self.loss_type in TRL_LOSS_TYPES:
            self.trl_settings()  # checks clip_delta, the level and the SAPO temperatures
        elif self.clip_delta is not None or self.importance_sampling_level != "token":
            raise ValueError(
                f"clip_delta and importance_sampling_level='sequence' apply to TRL's loss types "
                f"({', '.join(TRL_LOSS_TYPES)}); {self.loss_type} takes one ratio per item")
        if self.scale_rewards is None:
            self.scale_rewards = "none" if self.loss_type == "dr_grpo" else "group"
        if self.scale_rewards not in SCALE_REWARDS:
            raise ValueError(
                f"scale_rewards must be one of {SCALE_REWARDS}, got {self.scale_rewards!r}"
            )
        if self.epsilon <= 0 or (self.epsilon_high is not None and self.epsilon_high <= 0):
            raise ValueError(
                f"epsilon and epsilon_high must be > 0, got {self.epsilon}, {self.epsilon_high}"
            )
        if self.delta < 0:
            raise ValueError(f"delta must be >= 0 (ECPO's margin above the clip), got {self.delta}")
        if self.multi_objective_aggregation not in MULTI_OBJECTIVE_AGGREGATIONS:
            raise ValueError(f"multi_objective_aggregation must be one of "
                             f"{MULTI_OBJECTIVE_AGGREGATIONS}, got "
                             f"{self.multi_objective_aggregation!r}")
        if self.multi_objective_aggregation == "normalize_then_sum" and self.format_selection_k:
            raise ValueError("normalize_then_sum normalises every term in its group; the "
                             "format rule (format_selection_k > 0) takes format out of the "
                             "group: choose one")
        if not 0 <= self.legacy_share <= 1:  # 1: the logging policy's exposures only
            raise ValueError(f"legacy_share must be in [0, 1], got {self.legacy_share}")
        if not 0 <= self.format_selection_k <= self.num_generations:
            raise ValueError(
                f"format_selection_k must be in [0, num_generations={self.num_generations}] "
                f"(samples picked per group), got {self.format_selection_k}"
            )

    def trl_settings(self) -> TRLLossSettings:
        """The settings of a TRL loss type, in `trainers.trl_losses`' terms."""
        return TRLLossSettings(self.loss_type, self.importance_sampling_level, self.epsilon,
                               self.epsilon_high, self.clip_delta, self.sapo_temperature_pos,
                               self.sapo_temperature_neg)


class Advantages(NamedTuple):
    """What a GRPO step keeps of its rollout."""

    advantages: Tensor  # (B, G)
    mask: Tensor  # (B, G) bool: samples that take part in the loss


class TokenAdvantages(NamedTuple):
    """What a step of a TRL loss type keeps: the advantages, and pi_old of every code."""

    advantages: Tensor  # (B, G)
    mask: Tensor  # (B, G) bool
    old_token_log_probs: Tensor  # (B, G, L)


def grpo_advantages(batch: RolloutBatch, config: GRPOConfig, format_weight: float,
                    term_weights: Mapping[str, float] | None = None) -> Advantages:
    """The advantages of a rollout under the format rule and the multi-objective aggregation
    of `config` (module docstring); `term_weights` (term name -> weight) for
    normalize_then_sum."""
    rewards = batch.rewards
    if config.multi_objective_aggregation == "normalize_then_sum":
        if term_weights is None:
            raise ValueError("normalize_then_sum needs the weight of every reward term")
        return Advantages(normalize_then_sum(rewards.terms, term_weights), rewards.scorable)
    if config.format_selection_k == 0:
        return Advantages(
            group_advantages(rewards.total, config.scale_rewards, rewards.scorable),
            rewards.scorable)
    proxy = rewards.total - format_weight * rewards.terms[FORMAT]  # the other terms' sum
    # Only legal samples have a proxy reward; a spec of format alone has no group term.
    in_group = rewards.legal if len(rewards.terms) > 1 else torch.zeros_like(rewards.legal)
    advantages = group_advantages(proxy, config.scale_rewards, in_group)
    generator = batch.generator
    selected, bonus = format_selection(rewards.legal.to(generator.device), config.format_selection_k,
                                       generator)
    advantages = advantages + format_weight * bonus.cpu()
    return Advantages(advantages, in_group | selected.cpu())


def loss_options(config: GRPOConfig) -> dict[str, float | None]:
    """The settings `config.loss_type`'s loss takes (`trainers.losses.POLICY_LOSSES`)."""
    if config.loss_type == "gbpo":
        return {}  # no clip: the bound is in pi'_old
    clip = {"epsilon": config.epsilon, "epsilon_high": config.epsilon_high}
    return {**clip, "delta": config.delta} if config.loss_type == "ecpo" else clip


class GRPOTrainer(OnlineTrainer):
    """GRPO / ECPO / Dr. GRPO / GBPO (`config.loss_type`) with next-token co-training."""

    config: GRPOConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Arguments as `OnlineTrainer`'s, with a `GRPOConfig`; `legacy_share > 0` needs
        `resources["legacy_policy"]` (a `policies.interface.Recommender`)."""
        super().__init__(*args, **kwargs)
        self.legacy_policy = self.resources.get("legacy_policy")
        self.legacy_count = round(self.config.legacy_share * self.config.num_generations)
        if self.config.legacy_share > 0 and self.legacy_policy is None:
            raise ValueError("legacy_share > 0 mixes in the logging policy's exposures: give "
                             "it as resources['legacy_policy'] (align does, from the world's "
                             "cascade)")
        if self.config.format_selection_k and self.scorer.format_weight <= 0:
            raise ValueError(
                f"format_selection_k={self.config.format_selection_k} needs a format term with a "
                f"positive weight in the reward spec (e.g. 'pscore + format'), got {self.reward!r}"
            )

    @property
    def method(self) -> str:
        return self.config.loss_type

    def make_rollout(self, context: Context, observation: Mapping[str, np.ndarray],
                     generator: torch.Generator) -> Rollout:
        rollout = super().make_rollout(context, observation, generator)
        if self.legacy_count == 0:
            return rollout
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        items = self.legacy_policy.recommend(dict(observation), self.legacy_count,
                                             np.random.default_rng(seed))  # (B, K)
        return mix_legacy(self.policy, context, rollout, torch.as_tensor(items))

    def advantages(self, batch: RolloutBatch) -> Advantages:
        """The rollout's advantages (from the reward spec; a subclass may take others)."""
        weights = {term.name: term.weight for term in self.scorer.terms}
        return grpo_advantages(batch, self.config, self.scorer.format_weight, weights)

    def prepare(self, batch: RolloutBatch) -> Advantages | TokenAdvantages:
        prepared = self.advantages(batch)
        if self.config.loss_type in TRL_LOSS_TYPES:
            return TokenAdvantages(*prepared, self.old_token_log_probs(batch))
        return prepared

    def old_token_log_probs(self, batch: RolloutBatch) -> Tensor:
        """(B, G, L) log pi_old of each code: the reference's, or the policy's before this
        step's first update (as the rollout's item log-probs are), in eval mode."""
        model = self.policy if self.reference is None else self.reference
        training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return model.token_log_probs(batch.context, batch.rollout.codes)
        finally:
            model.train(training)

    def loss(self, batch: RolloutBatch, prepared: Advantages | TokenAdvantages
             ) -> tuple[Tensor, dict[str, Tensor]]:
        config, device = self.config, self.device
        advantages, mask = prepared.advantages.to(device), prepared.mask.to(device)
        legacy = batch.rollout.legacy  # (B, G): pi_old unknown, taken as sg(pi_theta)
        if config.loss_type in TRL_LOSS_TYPES:
            log_probs = self.policy.token_log_probs(batch.context, batch.rollout.codes)
            old = prepared.old_token_log_probs
            if legacy is not None:
                old = torch.where(legacy.to(device)[..., None], log_probs.detach(), old)
            output = trl_policy_loss(log_probs, old, advantages, config.trl_settings(),
                                     mask)  # log_probs (B, G, L)
        else:
            log_probs = self.policy.log_prob(batch.context, batch.rollout.codes)  # (B, G)
            old = batch.old_log_probs
            if legacy is not None:
                old = torch.where(legacy.to(device), log_probs.detach(), old)
            output = POLICY_LOSSES[config.loss_type](log_probs, old, advantages, mask=mask,
                                                     **loss_options(config))
        return output.loss, {
            **self.negative_charts(output.loss, log_probs, prepared),
            "losses/policy": output.loss.detach(),
            "charts/clip_fraction": output.clip_fraction,
            "charts/early_clip_fraction": output.early_clip_fraction,
            "charts/ratio_max": output.ratio[prepared.mask.to(device)].max()
            if prepared.mask.any() else output.ratio.new_zeros(()),
            "charts/advantage_abs": prepared.advantages[prepared.mask].abs().mean()
            if prepared.mask.any() else output.ratio.new_zeros(()),
        }

    def negative_charts(self, loss: Tensor, log_probs: Tensor,
                        prepared: Advantages | TokenAdvantages) -> dict[str, Tensor]:
        """How hard the loss pushes down samples with a negative advantage.

        `charts/negative_weight_max`: the largest |d J / d log pi(o_i|u)| x B G over those
        samples, the factor in front of grad log pi_i (GRPO: rho_i |A_i|, unbounded in rho;
        ECPO: at most (1 + eps + delta) |A_i|; a TRL loss type: per code, x B G L);
        `charts/negative_pi_weight_max`: the largest factor in front of grad pi_i, that one
        / pi_i (OneRec-V2's argument: at ratio 1, GRPO's and ECPO's |A_i| / pi_i explodes on
        a negative of low probability, GBPO's is at most |A_i| / (1 - pi_i)). With
        `log_negative_gradient`, `charts/negative_grad_norm`: the norm of the parameter
        gradient of their part of the loss, sum_i over them of that factor x grad log pi_i
        / (B G). `log_probs` (B, G), or (B, G, L) per code.
        """
        mask = prepared.mask.to(log_probs.device)
        negative = mask & (prepared.advantages.to(log_probs.device) < 0)  # (B, G)
        if log_probs.dim() == 3:  # per code: each code of a negative item
            negative = negative[..., None].expand_as(log_probs)
        if not negative.any():  # every group had one reward: nothing is pushed down
            zero = log_probs.new_zeros(())
            return {"charts/negative_weight_max": zero, "charts/negative_pi_weight_max": zero,
                    **({"charts/negative_grad_norm": zero}
                       if self.config.log_negative_gradient else {})}
        weights = sample_weights(loss, log_probs)  # the shape of log_probs
        charts = {"charts/negative_weight_max": weights[negative].max(),
                  "charts/negative_pi_weight_max":
                      (weights[negative].double()
                       * torch.exp(-log_probs.detach()[negative].double())).max()}
        if self.config.log_negative_gradient:
            # Same gradient as the loss's negative-advantage part: sum_i w_i grad log pi_i / (B G)
            # (for A_i < 0 the loss rises with log pi_i, so w_i = its slope x B G, pushing down)
            part = (torch.where(negative, weights, 0.0) * log_probs).sum() / weights.numel()
            parameters = [p for p in self.policy.parameters() if p.requires_grad]
            gradients = torch.autograd.grad(part, parameters, retain_graph=True,
                                            allow_unused=True)
            charts["charts/negative_grad_norm"] = torch.linalg.vector_norm(torch.stack(
                [torch.linalg.vector_norm(g) for g in gradients if g is not None]))
        return charts
