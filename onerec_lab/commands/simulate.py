"""`onerec-lab simulate`: log sessions of a logging policy in the simulator.

Writes `sessions.npz` (the sessions and their catalog in one file: envs.logs) into `--out`
and prints the headline numbers: sessions, impressions, mean watch time per impression (s),
mean session length (requests), leave rate and the rate of every behaviour per impression.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from envs.logging_policies import make_logging_policy
from envs.logs import collect_sessions, summarise
from envs.simulator import SessionConfig
from onerec_lab.experiment.budget import check_fits, simulation_memory
from onerec_lab.experiment.layout import CODEC_FILE, PSCORE_FOLDER
from onerec_lab.experiment.world import make_catalog
from policies.codec import SemanticIdCodec
from rewards import load_pscore


@dataclass
class SimulateArgs:
    """Arguments of `onerec-lab simulate`."""

    policy: Literal["random", "popular"] = "popular"  # logging policy that serves the slates
    users: int = 2000  # sessions to log, one simulated user each
    requests: int = 10  # most requests per session (a user may leave before)
    seed: int = 0  # session s replays as OneRecSession.reset(seed=seed + s)
    out: str | None = None  # folder for sessions.npz (nothing written if unset)
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


def foreign_artefacts(folder: Path, catalog: str) -> list[str]:
    """Files of `folder` built for another catalog than `catalog` (a codec, a P-score): a
    folder's artefacts are kept when new logs are written into it, never deleted."""
    found = []
    codec = folder / CODEC_FILE
    if codec.is_file() and SemanticIdCodec.load(codec).catalog_fingerprint not in (None, catalog):
        found.append(CODEC_FILE)
    pscore = folder / PSCORE_FOLDER
    if pscore.is_dir() and load_pscore(pscore).catalog_fingerprint not in (None, catalog):
        found.append(PSCORE_FOLDER + "/")
    return found


def run(args: SimulateArgs) -> dict:
    """Log `args.users` sessions and return their summary (and where they were written)."""
    started = time.perf_counter()
    check_fits(simulation_memory(args.users, args.requests, args.slate_size, args.items,
                                 args.batch_size),
               f"simulating {args.users} users of at most {args.requests} requests",
               "lower --users (or --requests, --items)")
    catalog = make_catalog(args.items, args.catalog_seed, args.kuairand)
    config = SessionConfig(slate_size=args.slate_size)
    policy = make_logging_policy(args.policy, catalog, args.slate_size)
    logs = collect_sessions(policy, catalog, args.users, args.requests, args.seed, config,
                            args.batch_size, policy_name=args.policy)
    result: dict = {"policy": args.policy, **summarise(logs)}
    if args.out is not None:
        result["out"] = str(logs.save(args.out).parent)
        stale = foreign_artefacts(Path(args.out), catalog.fingerprint())
        if stale:
            result["other_catalog"] = stale
            print(f"note: {args.out} still holds {', '.join(stale)} of another catalog; the "
                  "commands that would use them refuse them (rebuild them for these logs)",
                  file=sys.stderr)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result
