"""`onerec-lab evaluate`: any policy in the simulator, with the oracle's truth.

    onerec-lab evaluate --policy CKPT --users 1000 --seed 0 --json
    onerec-lab evaluate --policy popular --logs DIR --users 1000 --json

`--policy` is a OneRec checkpoint (pre-trained or aligned; unconstrained beam search of
`--candidates` items, the top slate_size served, an illegal code served as a blank), or a
baseline: `random`, `popular`, `cascade:PATH`. The world (catalog, pathway lengths) comes
from the logged sessions (`--logs`, default: the folder the checkpoint was trained on). The
figures: true watch time per session, session length, behaviour rates, proxy reward of the
served slates (`--reward`), legality, diversity and catalog coverage (`trainers.evaluate`);
with `--out` also `evaluation.json` and `evaluation.md`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from envs.logs import LoggedSessions
from onerec_lab.commands.align import logs_folder, pscore_model
from policies.baselines import PopularRecommender, RandomRecommender
from policies.cascade import CascadeRecommender
from policies.interface import Recommender
from policies.onerec import OneRecPolicy
from rewards import build, parse_spec
from trainers.evaluate import (
    EVALUATION_SEED,
    EvaluationConfig,
    OneRecRecommender,
    evaluate,
    evaluation_markdown,
)
from trainers.pretrain import load_policy

BASELINES = ("random", "popular")
CASCADE_PREFIX = "cascade:"


@dataclass
class EvaluateArgs:
    """Arguments of `onerec-lab evaluate`."""

    policy: str  # a OneRec checkpoint, or random, popular, cascade:PATH
    users: int = 1000  # sessions evaluated (one simulated user each)
    seed: int = 0  # user i is OneRecSession reset with EVALUATION_SEED + seed + i
    requests: int = 20  # most requests per session
    logs: str | None = None  # logged sessions (the world); default: the checkpoint's folder
    reward: str | None = "pscore"  # proxy reward of served slates; none: --reward ''
    pscore: str | None = None  # fitted P-score folder; default LOGS/pscore, else a quick fit
    candidates: int = 20  # OneRec: beams per request, the best slate_size are served
    constrained: bool = False  # OneRec: decode legal codes only (legality is then 1)
    out: str | None = None  # folder for evaluation.json and evaluation.md (nothing written if unset)
    json: bool = False  # print one JSON object

    def __post_init__(self) -> None:
        for name in ("users", "requests", "candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.reward:
            parse_spec(self.reward)
        is_named = self.policy in BASELINES or self.policy.startswith(CASCADE_PREFIX)
        if not is_named and not Path(self.policy).is_file():
            raise ValueError(
                f"--policy {self.policy!r} is neither a checkpoint file nor one of "
                f"{', '.join(BASELINES)}, {CASCADE_PREFIX}PATH"
            )
        if is_named and self.logs is None:
            raise ValueError(f"--policy {self.policy} needs --logs DIR (the world to evaluate in)")


def _recommender(args: EvaluateArgs, logs: LoggedSessions,
                 policy: OneRecPolicy | None) -> Recommender:
    """The recommender `--policy` names."""
    slate_size = logs.session_config().slate_size
    if args.policy == "random":
        return RandomRecommender(logs.catalog.num_items, slate_size)
    if args.policy == "popular":
        return PopularRecommender(np.asarray(logs.catalog.popularity), slate_size)
    if args.policy.startswith(CASCADE_PREFIX):
        return CascadeRecommender.load(args.policy[len(CASCADE_PREFIX):])
    return OneRecRecommender(policy, slate_size, args.candidates, args.constrained)


def run(args: EvaluateArgs) -> dict[str, Any]:
    """Evaluate the policy; the figures of `trainers.evaluate.evaluate`."""
    started = time.perf_counter()
    is_checkpoint = Path(args.policy).is_file()
    logs_dir = logs_folder(args.policy, args.logs) if is_checkpoint else args.logs
    logs = LoggedSessions.load(logs_dir)
    policy = load_policy(args.policy) if is_checkpoint else None
    proxy = None
    if args.reward:
        proxy = build(args.reward, pscore_model=pscore_model(args.reward, args.pscore, logs_dir,
                                                             logs),
                      codec=None if policy is None else policy.codec, catalog=logs.catalog)
    recommender = _recommender(args, logs, policy)
    config = EvaluationConfig(users=args.users, seed=EVALUATION_SEED + args.seed,
                              max_requests=args.requests)
    result = {"policy": args.policy,
              **evaluate(recommender, logs.catalog, logs.session_config(), config, proxy),
              "reward": args.reward, "seconds": round(time.perf_counter() - started, 1),
              "args": asdict(args)}
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(json.dumps(result, indent=2))
        (out / "evaluation.md").write_text(
            f"# onerec-lab evaluate: {args.policy}\n\n" + evaluation_markdown({args.policy: result}))
    return result
