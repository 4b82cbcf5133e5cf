"""`onerec-lab simulate`: log sessions of a logging policy in the simulator.

Writes `sessions.npz` and `catalog.npz` into `--out` (envs.logs) and prints the headline
numbers: sessions, impressions, mean watch time per impression (s), mean session length
(requests), leave rate and the rate of every behaviour per impression.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from envs.logging_policies import make_logging_policy
from envs.logs import collect_sessions, summarise
from envs.simulator import SessionConfig
from onerec_lab.experiment.world import make_catalog


@dataclass
class SimulateArgs:
    """Arguments of `onerec-lab simulate`."""

    policy: Literal["random", "popular"] = "popular"  # logging policy that serves the slates
    users: int = 2000  # sessions to log, one simulated user each
    requests: int = 10  # most requests per session (a user may leave before)
    seed: int = 0  # session s replays as OneRecSession.reset(seed=seed + s)
    out: str | None = None  # folder for sessions.npz and catalog.npz (nothing written if unset)
    items: int = 5000  # items of the synthetic catalog (ignored with --kuairand)
    kuairand: str | None = None  # folder with KuaiRand-Pure's CSVs: a catalog with its marginals
    catalog_seed: int = 0  # seed of the catalog
    slate_size: int = 10  # items per request
    batch_size: int = 1024  # users simulated at once; memory grows ~50 KB per user
    json: bool = False  # print the result as JSON

    def __post_init__(self) -> None:
        for name in ("users", "requests", "items", "slate_size", "batch_size"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be >= 1, got {getattr(self, name)}")


def run(args: SimulateArgs) -> dict:
    """Log `args.users` sessions and return their summary (and where they were written)."""
    started = time.perf_counter()
    catalog = make_catalog(args.items, args.catalog_seed, args.kuairand)
    config = SessionConfig(slate_size=args.slate_size)
    policy = make_logging_policy(args.policy, catalog, args.slate_size)
    logs = collect_sessions(policy, catalog, args.users, args.requests, args.seed, config,
                            args.batch_size, policy_name=args.policy)
    result: dict = {"policy": args.policy, **summarise(logs)}
    if args.out is not None:
        result["out"] = str(logs.save(args.out).parent)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result
