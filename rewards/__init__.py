"""Pluggable rewards: P-score, format validity, business weighting, oracle, and their sums.

`build("pscore + 0.5*format", pscore_model=..., codec=...)` turns a spec into a reward;
`register("name", requires=..., judges_codes=...)` adds a reward of your own, declaring what
it reads; `truth_terms(reward)` names the parts of a reward that read the simulator's truth
(see rewards/README.md).
"""

from rewards.business import BusinessConfig, BusinessWeighting
from rewards.compose import SpecError, WeightedSum, parse_spec, weighted_sum
from rewards.env_reward import EnvReward
from rewards.format import FormatReward, format_selection, legal_slots
from rewards.oracle import OracleReward
from rewards.pareto import ParetoConfig, ParetoResult, auc, fused_auc, pareto_search
from rewards.protocol import (
    TRUTH,
    Declared,
    ItemReward,
    RewardInput,
    RewardModel,
    RewardOutput,
    slate_mean,
    truth_terms,
)
from rewards.pscore import (
    PScoreConfig,
    PScoreModel,
    PScoreReward,
    fuse_logits,
    load_pscore,
    save_pscore,
)
from rewards.pscore_train import PScoreFit, PScoreTrainConfig, fit_pscore
from rewards.registry import REGISTRY, Origin, Registration, build, origin, register
from rewards.trl_adapter import SemanticIdVocabulary, TRLRewardFunction

__all__ = [
    "REGISTRY",
    "TRUTH",
    "BusinessConfig",
    "BusinessWeighting",
    "Declared",
    "EnvReward",
    "FormatReward",
    "ItemReward",
    "OracleReward",
    "Origin",
    "PScoreConfig",
    "PScoreFit",
    "PScoreModel",
    "PScoreReward",
    "PScoreTrainConfig",
    "ParetoConfig",
    "ParetoResult",
    "Registration",
    "RewardInput",
    "RewardModel",
    "RewardOutput",
    "SemanticIdVocabulary",
    "SpecError",
    "TRLRewardFunction",
    "WeightedSum",
    "auc",
    "build",
    "fit_pscore",
    "format_selection",
    "fuse_logits",
    "fused_auc",
    "legal_slots",
    "load_pscore",
    "origin",
    "pareto_search",
    "parse_spec",
    "register",
    "save_pscore",
    "slate_mean",
    "truth_terms",
    "weighted_sum",
]
