"""A policy judged over days: the long-term truth of `OneRec/Days-v0`.

Each evaluated user lives `DaysConfig.days` days in the days env (envs/days.py): sessions of
at most `session_requests` requests, the return model between them. The figures, per user
and over the horizon unless said otherwise:

- `watch_time`: seconds watched (App Stay Time's analogue), with its standard error over
  users, and `watch_time_per_session`;
- `sessions`, `active_days` (days with a session start, day 0 included);
- `return_rate`: the share of sessions after which the user came back within the horizon;
- `next_day_retention`: the share of users with a session on day 1;
- `churn_rate`: the share of users who left for good;
- `coverage` (share of the catalog shown to anyone), `diversity` (distinct leaf categories per
  slate), `legality` (share of served slots holding an item);
- `proxy_reward`: the proxy reward's mean over served slates, when one is given.

The truth is the simulator's; a proxy never sees it (the proxy is scored on the observation
and the drawn feedback, as in `trainers.evaluate`).

Letters used in shape comments: R active users, S slate size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

from envs.catalog import Catalog
from envs.days import DaysConfig
from envs.days_env import OneRecDaysVectorEnv
from envs.simulator import SessionConfig
from envs.spec import BLANK
from policies.interface import Recommender
from rewards import RewardModel
from trainers.evaluate import ServedSlates


@dataclass(frozen=True)
class LongTermEvaluation:
    """A policy's figures over the horizon (module docstring)."""

    users: int
    days: float
    watch_time: float
    watch_time_sem: float
    watch_time_per_session: float
    sessions: float
    active_days: float
    return_rate: float
    next_day_retention: float
    churn_rate: float
    coverage: float
    diversity: float
    legality: float
    proxy_reward: float | None
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_days(recommender: Recommender, catalog: Catalog, session_config: SessionConfig,
                  days_config: DaysConfig, users: int, seed: int,
                  proxy_reward: RewardModel | None = None,
                  batch_size: int = 500) -> LongTermEvaluation:
    """`users` users (user i: `OneRecDays` reset with seed + i) served by `recommender`
    until each churns or reaches the horizon; the long-term figures."""
    if users < 1 or batch_size < 1:
        raise ValueError(f"users and batch_size must be >= 1, got {users} and {batch_size}")
    slate_size = session_config.slate_size
    if recommender.slate_size != slate_size:
        raise ValueError(f"the recommender serves slates of {recommender.slate_size} items but "
                         f"the world's slate_size is {slate_size}")
    long_term: dict[str, list[np.ndarray]] = {}
    churned = np.zeros(users, dtype=bool)
    slates = ServedSlates(catalog, proxy_reward)
    for first in range(0, users, batch_size):
        size = min(batch_size, users - first)
        env = OneRecDaysVectorEnv(num_envs=size, catalog=catalog, config=session_config,
                                  days_config=days_config, autoreset_mode=AutoresetMode.DISABLED)
        observation, _ = env.reset(seed=seed + first)
        rng = np.random.default_rng((seed, first))
        active = np.ones(size, dtype=bool)
        while active.any():
            rows = np.flatnonzero(active)
            answered = {key: value[rows] for key, value in observation.items()}
            served = np.asarray(recommender.act(answered, rng), dtype=np.int64)  # (R, S)
            slate = np.full((size, slate_size), BLANK, dtype=np.int64)
            slate[rows] = served  # finished users get blanks; their answers are ignored
            observation, _, terminated, truncated, info = env.step(slate)
            slates.add(served, answered, info["feedback"][rows], info["shown"][rows])
            ended = (terminated | truncated) & active
            churned[first + np.flatnonzero(terminated & active)] = True
            if ended.any():
                for name, value in env.simulator.long_term(np.flatnonzero(ended)).items():
                    long_term.setdefault(name, []).append(value)
            active &= ~ended
        env.close()
    figures = {name: np.concatenate(values) for name, values in long_term.items()}
    watch, sessions = figures["watch_s"], figures["sessions"]
    return LongTermEvaluation(
        users=users, days=days_config.days,
        watch_time=float(watch.mean()),
        watch_time_sem=float(watch.std(ddof=1) / np.sqrt(users)) if users > 1 else 0.0,
        watch_time_per_session=float(watch.sum() / sessions.sum()),
        sessions=float(sessions.mean()),
        active_days=float(figures["active_days"].mean()),
        return_rate=float(figures["returns"].sum() / sessions.sum()),
        next_day_retention=float(figures["next_day"].mean()),
        churn_rate=float(churned.mean()),
        coverage=slates.coverage(),
        diversity=slates.diversity(),
        legality=slates.legality(),
        proxy_reward=slates.proxy_reward(),
        config={"users": users, "seed": seed, "batch_size": batch_size,
                "days": asdict(days_config)},
    )


def long_term_markdown(evaluations: dict[str, LongTermEvaluation]) -> str:
    """A table of several policies' long-term figures (one row each)."""
    lines = ["| policy | watch time over the horizon (s) | per session (s) | sessions | "
             "active days | return rate | next-day retention | churn | coverage | "
             "categories / slate | legality |", "|---" * 11 + "|"]
    for name, e in evaluations.items():
        lines.append(
            f"| {name} | {e.watch_time:.0f} ± {e.watch_time_sem:.0f} | "
            f"{e.watch_time_per_session:.0f} | {e.sessions:.2f} | {e.active_days:.2f} | "
            f"{e.return_rate:.3f} | {e.next_day_retention:.3f} | {e.churn_rate:.3f} | "
            f"{e.coverage:.4f} | {e.diversity:.2f} | {e.legality:.3f} |")
    return "\n".join(lines) + "\n"
