"""Scoring a group: every sample's reward per term of a spec, and its true outcome.

A sample is one item, so each is scored as a one-slot slate (`rewards.RewardInput`): the
P-score of that item for that user, its format validity, its oracle outcome. Each top-level
term of the spec (`"pscore + 0.5*format"` has two) is built and called on its own, so the
trainer sees every term's value and weight, as TRL sees one column per reward function
(`reward_weights` replaces the spec's weights, in spec order, as TRL's does).

"No opinion" is explicit (STYLE.md; TRL's `None`): a reward that scores items has none on an
illegal code, which names no item; only a reward that declares `judges_codes` (the format
reward, or one registered with `judges_codes=True`) judges codes. A sample no term has an
opinion on is unscorable (`scorable` False); otherwise its total is the weighted sum over
the terms that have one (TRL's `nansum`). A NaN or infinite value from a reward is an error.

The oracle term reads the TRUE feedback: the simulator's expected outcome of the item for the
user (`SimulatedUsers.expected_feedback`), so "oracle" is a noiseless reward and the same
numbers give every run's true-outcome curve. Terms that do not declare the truth never see it
(the built rewards withhold it).

Letters used in shape comments: B users, G samples per user, L levels, F feedback fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from envs.spec import BLANK, feedback_index
from rewards import RewardInput, RewardModel, build, parse_spec
from rewards.oracle import item_engagement

FORMAT = "format"  # the format reward, which GRPO treats by the report's format rule


class ScoreTerm(NamedTuple):
    """One weighted term of a reward spec."""

    name: str  # the term's canonical spec text, e.g. "pscore", "oracle(field='like')"
    reward_name: str  # the registered reward it calls, e.g. "pscore"
    weight: float
    reward: Any  # what rewards.build returns: a RewardModel with its declarations


class GroupRewards(NamedTuple):
    """The rewards of B groups of G samples."""

    total: Tensor  # (B, G) weighted sum of the terms with an opinion; 0 where unscorable
    scorable: Tensor  # (B, G) bool: at least one term has an opinion
    terms: dict[str, Tensor]  # term name -> (B, G) unweighted value, NaN = no opinion
    legal: Tensor  # (B, G) bool: the codes name an item
    true_watch_time: Tensor  # (B, G) expected seconds watched (0 for an illegal item)
    true_engagement: Tensor  # (B, G) expected engagement (envs.response.true_engagement)


class GroupScorer:
    """Score (context, G items per user) with the terms of a reward spec."""

    def __init__(self, spec: str | RewardModel, resources: Mapping[str, Any],
                 reward_weights: tuple[float, ...] | None = None) -> None:
        """`spec` is a reward spec, each of its top-level terms built with `resources` (what
        `rewards.build` passes to factories: pscore_model, codec, catalog), or a built reward
        object (one term, weight 1); `reward_weights` replace the terms' weights, in order."""
        if isinstance(spec, str):
            calls = [(weight, call.text, call.name) for weight, call in parse_spec(spec).terms]
        else:
            calls = [(1.0, spec.name, spec.name)]
        if reward_weights is not None and len(reward_weights) != len(calls):
            raise ValueError(
                f"reward_weights has {len(reward_weights)} values but the reward "
                f"{getattr(spec, 'name', spec)!r} has {len(calls)} terms "
                f"({', '.join(text for _, text, _ in calls)}); give one weight per term, in order"
            )
        weights = [weight for weight, _, _ in calls] if reward_weights is None else reward_weights
        self.spec = spec if isinstance(spec, str) else spec.name
        self.terms = [ScoreTerm(text, name, float(weight),
                                build(text, **resources) if isinstance(spec, str) else spec)
                      for weight, (_, text, name) in zip(weights, calls, strict=True)]
        self.codec = resources.get("codec")

    @property
    def needs_true_feedback(self) -> bool:
        """Whether a term reads the simulator's truth (the oracle)."""
        return any(term.reward.reads_truth for term in self.terms)

    @property
    def format_weight(self) -> float:
        """The weight of the spec's `format` term (0 without one)."""
        return sum(term.weight for term in self.terms if term.reward_name == FORMAT)

    def __call__(
        self, observation: Mapping[str, np.ndarray], codes: Tensor, items: Tensor,
        true_feedback: Tensor | None = None,
    ) -> GroupRewards:
        """observation: the users' (B, ...) arrays; codes (B, G, L); items (B, G), -1 illegal;
        true_feedback (B, G, F) from the simulator (needed by the oracle and the true-outcome
        curves; None for logged users, whose truth is unknown)."""
        users, group = items.shape
        if true_feedback is None and self.needs_true_feedback:
            raise ValueError(
                f"the reward {self.spec!r} reads the true outcome, which only the simulator "
                "knows; train on simulated users (SimulatedUsers), not on logged contexts"
            )
        repeat = np.repeat(np.arange(users), group)  # (B G,) each user once per sample
        batch = RewardInput(
            items=items.reshape(-1, 1).cpu(),
            context={key: np.asarray(value)[repeat] for key, value in observation.items()},
            codes=codes.reshape(users * group, 1, -1).cpu(),
            feedback=None if true_feedback is None else true_feedback.reshape(users * group, 1, -1),
        )
        legal = items.cpu() != BLANK  # (B, G)
        values: dict[str, Tensor] = {}
        total = torch.zeros(users, group)
        scorable = torch.zeros(users, group, dtype=torch.bool)
        for term in self.terms:
            value = term.reward(batch).total.float().view(users, group)
            if not torch.isfinite(value).all():
                raise ValueError(
                    f"reward {term.name!r} returned NaN or infinite values; a reward must "
                    "return finite numbers (fix the reward)"
                )
            opinion = torch.ones_like(legal) if term.reward.judges_codes else legal
            values[term.name] = torch.where(opinion, value, torch.nan)
            total += torch.where(opinion, term.weight * value, 0.0)
            scorable |= opinion
        if true_feedback is None:
            nothing = torch.full((users, group), torch.nan)
            watch, engagement = nothing, nothing
        else:
            truth = true_feedback.float().cpu()
            watch = truth[..., feedback_index("watch_time")]
            engagement = item_engagement(truth)
        return GroupRewards(total, scorable, values, legal, watch, engagement)
