"""Oracle: the simulator's TRUE outcome of a slate, for evaluation and reward-hacking studies.

Production only ever sees a learned proxy (the P-score); the lab also knows what the simulated
user really did. The oracle reads the per-item outcome the vector env returns after showing a
slate, `info["feedback"]` (B, S, F), attached to the batch as `RewardInput.feedback` (for a
logged slate, its logged feedback is the same thing). The simulator offers no counterfactual
scorer for slates it was not shown, so without that feedback the oracle raises: it exists only
where a simulator (or its logs) is attached, and no proxy study can read the truth by accident.

Fields: any of `FEEDBACK_FIELDS`, or "engagement" (the default), the simulator's own true
engagement per item (`envs.response.TRUE_ENGAGEMENT_WEIGHTS`: watch minutes + behaviour
bonuses, minus one per hate), so that S * oracle equals `info["true_engagement"]`.

Letters used in shape comments: B batch, S slate, F feedback fields.
"""

from __future__ import annotations

import torch

from envs.response import engagement_formula
from envs.spec import FEEDBACK_FIELDS, feedback_index
from rewards.protocol import TRUTH, Declared, RewardInput, RewardOutput, slate_mean

ENGAGEMENT = "engagement"
ORACLE_FIELDS = (ENGAGEMENT, *FEEDBACK_FIELDS)


def item_engagement(feedback: torch.Tensor) -> torch.Tensor:
    """The simulator's true engagement of each item, in `feedback`'s dtype: (..., F) -> (...).

    The simulator's own formula (`envs.response.engagement_formula`) per item.
    """
    return engagement_formula(lambda name: feedback[..., feedback_index(name)])


class OracleReward(Declared):
    """Per-item true outcome `field`; slate reward = `slate_mean` (blanks count zero)."""

    requires = frozenset({TRUTH})

    def __init__(self, field: str = ENGAGEMENT) -> None:
        if field not in ORACLE_FIELDS:
            raise ValueError(f"oracle field {field!r} is unknown; choose one of {ORACLE_FIELDS}")
        self.field = field
        self.name = "oracle" if field == ENGAGEMENT else f"oracle(field={field!r})"

    def item_scores(self, batch: RewardInput) -> torch.Tensor:
        """(B, S) true outcome of each shown item, 0 on blanks and repeats."""
        batch.require("feedback", self.name)
        feedback = batch.feedback  # (B, S, F)
        scores = (
            item_engagement(feedback)
            if self.field == ENGAGEMENT
            else feedback[..., feedback_index(self.field)]
        )  # (B, S)
        return torch.where(batch.shown, scores, torch.zeros_like(scores))

    def __call__(self, batch: RewardInput) -> RewardOutput:
        return RewardOutput.single(self.name, slate_mean(self.item_scores(batch), batch.items))
