"""Evaluate any policy of a world in its simulator, with the truth and a proxy beside it.

    evaluate(world, "popular")                       a baseline: random, popular, cascade
    evaluate(world, "runs/ecpo/checkpoint.pt")       a OneRec checkpoint
    evaluate(world, policy, EvaluationConfig(users=200), reward="pscore")

Every policy of a world answers the same simulated users (`trainers.evaluate`); OneRec is
served by unconstrained beam search of `candidates` beams (the top slate_size served, an
illegal code served as a blank), so legality is measured too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from onerec_lab.experiment.world import World
from policies.baselines import PopularRecommender, RandomRecommender
from policies.cascade import CascadeRecommender
from policies.interface import Recommender
from policies.onerec import OneRecPolicy
from rewards import PScoreModel, RewardModel, build, parse_spec
from rewards.compose import Combination
from trainers.evaluate import Evaluation, EvaluationConfig, OneRecRecommender
from trainers.evaluate import evaluate as simulate_sessions

PROXY = "pscore + 0.5*format"  # the production-style proxy: P-score plus format validity
BASELINES = ("random", "popular", "cascade")
CASCADE_PREFIX = "cascade:"  # cascade:PATH, a cascade other than the world's

Policy = OneRecPolicy | Recommender | str | Path  # what `evaluate` accepts


def is_baseline(name: Any) -> bool:
    return isinstance(name, str) and (name in BASELINES or name.startswith(CASCADE_PREFIX))


def recommender(world: World, policy: Policy, candidates: int = 20,
                constrained: bool = False) -> Recommender:
    """The recommender `policy` names: a baseline name, a checkpoint path, a OneRec policy
    (served by beam search) or a recommender as it is."""
    slate_size = world.session_config.slate_size
    if isinstance(policy, OneRecPolicy):
        world.check_policy(policy, "the policy given")
        return OneRecRecommender(policy.cpu(), slate_size, candidates, constrained)
    if not isinstance(policy, (str, Path)):
        return policy
    name = str(policy)
    if name == "random":
        return RandomRecommender(world.catalog.num_items, slate_size)
    if name == "popular":
        return PopularRecommender(np.asarray(world.catalog.popularity), slate_size)
    if name == "cascade":
        if world.cascade_path is None:
            raise ValueError("this world has no cascade; name one with cascade:PATH")
        return CascadeRecommender.load(world.cascade_path)
    if name.startswith(CASCADE_PREFIX):
        return CascadeRecommender.load(name[len(CASCADE_PREFIX):])
    if not Path(name).exists():
        raise ValueError(f"policy {name!r} is neither a checkpoint (its file, or the run folder "
                         f"holding it) nor one of {', '.join(BASELINES)}, {CASCADE_PREFIX}PATH")
    return OneRecRecommender(world.policy_at(name), slate_size, candidates, constrained)


def proxy_reward(world: World, reward: str | RewardModel | None,
                 pscore: PScoreModel | None = None) -> RewardModel | None:
    """The reward a spec names in this world (the world's P-score, or `pscore`)."""
    if reward is None or not isinstance(reward, str):
        return reward
    return build(reward, **world.reward_resources(pscore, needs_pscore(reward)))


def needs_pscore(reward: str | RewardModel | None) -> bool:
    """Whether a spec names the P-score anywhere (a built reward needs nothing more)."""
    return isinstance(reward, str) and "pscore" in reward_names(parse_spec(reward))


def reward_names(combination: Combination) -> set[str]:
    """Every reward name a parsed spec uses, inner arguments included."""
    names = set()
    for _, call in combination.terms:
        names.add(call.name)
        for argument in call.args:
            names |= reward_names(argument)
    return names


def evaluate(world: World, policy: Policy, evaluation: EvaluationConfig | None = None,
             reward: str | RewardModel | None = PROXY, pscore: PScoreModel | None = None,
             candidates: int = 20, constrained: bool = False) -> Evaluation:
    """`policy`'s sessions in the world's simulator (`evaluation`'s users, default
    EvaluationConfig()): the truth and the `reward` of the served slates (a spec, a built
    reward, or None for no proxy)."""
    served = recommender(world, policy, candidates, constrained)
    return simulate_sessions(served, world.catalog, world.session_config,
                             EvaluationConfig() if evaluation is None else evaluation,
                             proxy_reward(world, reward, pscore))
