"""Evaluation of any recommender in the simulator, with the oracle's truth.

Every policy answers the same simulated users (user i is `OneRecSession` reset with
`seed + i`) for at most `max_requests` requests per session, and the report gives:

- `true_watch_time`: seconds watched per session (the oracle; what production cannot see),
  with its standard error over sessions, and `true_engagement` per session;
- `session_length` (requests) and `leave_rate` (sessions the user ended);
- `behaviour_rates`: each behaviour per impression, and `impressions_per_session` (items
  shown; times the click rate, the views per session);
- `proxy_reward`: the reward spec's mean over served slates (e.g. the P-score the policy was
  aligned with), when one is given;
- `legality`: the share of served slots that hold an item (an illegal code is a blank);
- `diversity`: distinct leaf categories among the shown items of a slate, on average;
- `coverage`: the share of the catalog shown at least once;
- `shown_duration_s`: the mean duration of the shown items (what watch time scales with).

OneRec enters through `OneRecRecommender`: beam search of `candidates` items per request,
unconstrained by default (so legality is measured), serving the top S by model score, or by a
reward model's item scores (`selector`, the report's reward-model selection).

Letters used in shape comments: B users, S slate size, K candidates, F feedback fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from envs.catalog import Catalog
from envs.simulator import SessionConfig
from envs.spec import BEHAVIOURS, BLANK, feedback_index
from envs.vector_env import OneRecVectorEnv
from policies.encoder import Context
from policies.generation import beam_search
from policies.interface import Recommender, SlateRecommender, check_slate_size
from policies.onerec import OneRecPolicy
from rewards import RewardInput, RewardModel

EVALUATION_SEED = 1_000_000  # first user of an evaluation: apart from logged users (0, 1, ...)


@dataclass(frozen=True)
class EvaluationConfig:
    """Which users, for how long."""

    users: int = 1000  # sessions evaluated (one user each)
    seed: int = EVALUATION_SEED  # user i is OneRecSession reset with seed + i
    max_requests: int = 20  # a session is truncated after this many requests
    batch_size: int = 500  # users simulated at once

    def __post_init__(self) -> None:
        for name in ("users", "max_requests", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Evaluation:
    """A policy's figures in the simulator (module docstring), per session or per slate."""

    users: int  # sessions evaluated
    true_watch_time: float  # seconds watched per session (the oracle)
    true_watch_time_sem: float  # its standard error over sessions
    true_engagement: float  # envs.response's true engagement per session
    session_length: float  # requests per session
    leave_rate: float  # share of sessions the user ended
    behaviour_rates: dict[str, float]  # each behaviour per impression
    proxy_reward: float | None  # the proxy reward's mean over served slates (None: no proxy)
    legality: float  # share of served slots that hold an item
    diversity: float  # distinct leaf categories per slate
    coverage: float  # share of the catalog shown at least once
    shown_duration_s: float  # mean duration of the shown items
    config: dict[str, Any]  # the EvaluationConfig
    impressions_per_session: float = 0.0  # items shown per session (0 in older reports)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class OneRecRecommender(SlateRecommender):
    """OneRec as a `Recommender`: beam search K candidates, serve the best S (illegal = blank)."""

    def __init__(self, policy: OneRecPolicy, slate_size: int, candidates: int = 20,
                 constrained: bool = False, selector: RewardModel | None = None) -> None:
        """`candidates` K >= S beams per request; `constrained` decodes legal codes only;
        `selector` (an item reward, e.g. the P-score) re-ranks the legal candidates."""
        self.slate_size = check_slate_size(slate_size)
        if candidates < slate_size:
            raise ValueError(
                f"candidates must be >= slate_size ({slate_size}) to fill a slate, got {candidates}"
            )
        if selector is not None and not hasattr(selector, "item_scores"):
            raise ValueError(
                f"selector {getattr(selector, 'name', selector)!r} scores slates, not items; use "
                "a reward that decomposes over items (pscore, format, oracle, their sums)"
            )
        self.policy, self.candidates = policy.eval(), candidates
        self.constraint = policy.codec if constrained else None
        self.selector = selector

    def recommend(self, observation: dict[str, np.ndarray], k: int,
                  rng: np.random.Generator) -> np.ndarray:
        """Top-k items per user by model score (or the selector's), -1 for an illegal code."""
        device = next(self.policy.parameters()).device
        context = Context.from_observation(observation, device)
        items = beam_search(self.policy, context, max(k, self.candidates),
                            self.constraint).items.cpu()  # (B, K) best first
        if self.selector is not None:
            scores = self.selector.item_scores(RewardInput(items=items, context=observation))
            scores = torch.where(items != BLANK, scores.float(), -torch.inf)
            items = items.gather(1, scores.argsort(dim=1, descending=True, stable=True))
        return items[:, :k].numpy()  # (B, k)


def _subset(observation: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {key: value[rows] for key, value in observation.items()}


class ServedSlates:
    """Running counts of the slates a policy served and what was shown of them: legality,
    diversity, coverage, behaviours, durations and the proxy reward (`evaluate`'s and
    `trainers.evaluate_days`'s figures of the served slates)."""

    def __init__(self, catalog: Catalog, proxy_reward: RewardModel | None) -> None:
        self.catalog, self.proxy = catalog, proxy_reward
        self.leaf = catalog.category[:, 2]
        self.counts = {"slots": 0, "filled": 0, "impressions": 0, "slates": 0,
                       "categories": 0, "proxy": 0.0, "duration": 0.0}
        self.behaviours = np.zeros(len(BEHAVIOURS))
        self.shown_items = np.zeros(catalog.num_items, dtype=bool)
        self.columns = [feedback_index(name) for name in BEHAVIOURS]

    def add(self, served: np.ndarray, answered: Mapping[str, np.ndarray], feedback: np.ndarray,
            shown: np.ndarray) -> None:
        """One request of R users: served (R, S), the observation answered (R, ...), the
        feedback (R, S, F) and what was shown (R, S)."""
        counts = self.counts
        if self.proxy is not None:  # with the true feedback, so an oracle term works too
            batch = RewardInput(items=served, context=answered, feedback=feedback)
            counts["proxy"] += float(self.proxy(batch).total.double().sum())
        counts["slots"] += served.size
        counts["filled"] += int((served != BLANK).sum())
        counts["impressions"] += int(shown.sum())
        counts["slates"] += served.shape[0]
        categories = np.where(shown, self.leaf[np.maximum(served, 0)], -1)
        distinct = (np.diff(np.sort(categories, axis=1), axis=1) != 0).sum(1) + 1
        counts["categories"] += int((distinct - (categories == -1).any(1)).sum())
        self.behaviours += feedback[shown][:, self.columns].sum(0)
        self.shown_items[served[shown]] = True
        counts["duration"] += float(self.catalog.duration_s[served[shown]].sum())

    def proxy_reward(self) -> float | None:
        return None if self.proxy is None else self.counts["proxy"] / self.counts["slates"]

    def legality(self) -> float:
        return self.counts["filled"] / self.counts["slots"]

    def diversity(self) -> float:
        return self.counts["categories"] / self.counts["slates"]

    def coverage(self) -> float:
        return float(self.shown_items.mean())


def evaluate(recommender: Recommender, catalog: Catalog, session_config: SessionConfig,
             config: EvaluationConfig, proxy_reward: RewardModel | None = None) -> Evaluation:
    """Run `config.users` sessions of `recommender` in the simulator; the figures above."""
    slate_size = session_config.slate_size
    if recommender.slate_size != slate_size:
        raise ValueError(
            f"the recommender serves slates of {recommender.slate_size} items but the world's "
            f"slate_size is {slate_size}; build it with slate_size={slate_size}"
        )
    totals = {"watch": np.zeros(config.users), "engagement": np.zeros(config.users),
              "requests": np.zeros(config.users), "left": np.zeros(config.users, dtype=bool)}
    slates = ServedSlates(catalog, proxy_reward)
    for first in range(0, config.users, config.batch_size):
        size = min(config.batch_size, config.users - first)
        env = OneRecVectorEnv(num_envs=size, max_episode_steps=config.max_requests,
                              catalog=catalog, config=session_config,
                              autoreset_mode=AutoresetMode.DISABLED)
        observation, _ = env.reset(seed=config.seed + first)
        rng = np.random.default_rng((config.seed, first))
        active = np.ones(size, dtype=bool)
        while active.any():
            rows = np.flatnonzero(active)
            served = np.asarray(recommender.act(_subset(observation, rows), rng), dtype=np.int64)
            slate = np.full((size, slate_size), BLANK, dtype=np.int64)
            slate[rows] = served  # finished sessions get blanks; their answers are ignored
            answered = _subset(observation, rows)  # the context the slates are served in
            observation, _, terminated, truncated, info = env.step(slate)
            slates.add(served, answered, info["feedback"][rows], info["shown"][rows])
            users = first + rows
            totals["watch"][users] += info["true_watch_time"][rows]
            totals["engagement"][users] += info["true_engagement"][rows]
            totals["requests"][users] += 1
            totals["left"][users] |= terminated[rows]
            active &= ~(terminated | truncated)
        env.close()
    counts = slates.counts
    impressions = max(counts["impressions"], 1)
    return Evaluation(
        users=config.users,
        true_watch_time=float(totals["watch"].mean()),
        true_watch_time_sem=float(totals["watch"].std(ddof=1) / np.sqrt(config.users))
        if config.users > 1 else 0.0,
        true_engagement=float(totals["engagement"].mean()),
        session_length=float(totals["requests"].mean()),
        leave_rate=float(totals["left"].mean()),
        behaviour_rates={name: float(value / impressions)
                         for name, value in zip(BEHAVIOURS, slates.behaviours, strict=True)},
        proxy_reward=slates.proxy_reward(),
        legality=slates.legality(),
        diversity=slates.diversity(),
        coverage=slates.coverage(),
        shown_duration_s=counts["duration"] / impressions,
        config=asdict(config),
        impressions_per_session=counts["impressions"] / config.users,
    )


EVALUATION_COLUMNS = (
    ("true_watch_time", "true watch time / session (s)"),
    ("true_engagement", "true engagement / session"),
    ("session_length", "session length (requests)"),
    ("leave_rate", "leave rate"),
    ("proxy_reward", "proxy reward / slate"),
    ("legality", "legality"),
    ("diversity", "leaf categories / slate"),
    ("coverage", "catalog coverage"),
    ("shown_duration_s", "shown item duration (s)"),
)


def evaluation_markdown(evaluations: Mapping[str, Evaluation]) -> str:
    """A markdown table: one row per evaluated policy, the headline figures as columns,
    then the behaviour rates per impression."""
    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:.4g}"

    header = "| policy | " + " | ".join(title for _, title in EVALUATION_COLUMNS) + " |"
    lines = [header, "|---" * (len(EVALUATION_COLUMNS) + 1) + "|"]
    for name, result in evaluations.items():
        figures = [cell(getattr(result, key)) for key, _ in EVALUATION_COLUMNS]
        figures[0] += f" ± {result.true_watch_time_sem:.2g}"
        lines.append(f"| {name} | " + " | ".join(figures) + " |")
    lines += ["", "| policy | " + " | ".join(BEHAVIOURS) + " |",
              "|---" * (len(BEHAVIOURS) + 1) + "|"]
    for name, result in evaluations.items():
        rates = result.behaviour_rates
        lines.append(f"| {name} | " + " | ".join(f"{rates[b]:.4f}" for b in BEHAVIOURS) + " |")
    return "\n".join(lines) + "\n"
