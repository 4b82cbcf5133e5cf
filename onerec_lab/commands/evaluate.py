"""`onerec-lab evaluate`: any policy in the simulator, with the oracle's truth.

    onerec-lab evaluate --policy CKPT --users 1000 --seed 0 --json
    onerec-lab evaluate --policy popular --logs DIR --users 1000 --json

`--policy` is a OneRec checkpoint (pre-trained or aligned; unconstrained beam search of
`--candidates` items, the top slate_size served, an illegal code served as a blank), or a
baseline: `random`, `popular`, `cascade` (the world's, beside its logs folder),
`cascade:PATH`. The world (catalog, pathway lengths) comes from the logged sessions
(`--logs`, default: the folder the checkpoint was trained on). The figures: true watch time
per session, session length, behaviour rates, proxy reward of the served slates (`--reward`),
legality, diversity and catalog coverage (`trainers.evaluate`); with `--out` also
`evaluation.json` and `evaluation.md`.

    onerec-lab evaluate --policy CKPT --days 7

With `--days N` each user lives N days in `OneRec/Days-v0` (sessions of at most
`--requests` requests, the return model between them) and the figures are the long-term
truth (`trainers.evaluate_days`): watch time over the horizon, sessions, active days, return
rate, next-day retention, churn, coverage and diversity over the horizon.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from envs.days import DaysConfig
from envs.files import atomic_write_text
from onerec_lab.experiment import EvaluationConfig, World, evaluate
from onerec_lab.experiment.evaluation import (
    CASCADE_PREFIX,
    is_baseline,
    proxy_reward,
    recommender,
)
from onerec_lab.experiment.layout import RunLayout
from rewards import parse_spec
from trainers.evaluate import EVALUATION_SEED, evaluation_markdown
from trainers.evaluate_days import evaluate_days, long_term_markdown


@dataclass
class EvaluateArgs:
    """Arguments of `onerec-lab evaluate`."""

    policy: str  # a OneRec checkpoint (or its run folder), or random, popular, cascade,
    # cascade:PATH
    users: int = 1000  # sessions evaluated (one simulated user each)
    seed: int = 0  # user i is OneRecSession reset with EVALUATION_SEED + seed + i
    requests: int = 20  # most requests per session
    logs: str | None = None  # logged sessions (the world); default: the checkpoint's folder
    reward: str | None = "pscore"  # proxy reward of served slates; none: --reward ''
    pscore: str | None = None  # fitted P-score folder; default LOGS/pscore, else a quick fit
    candidates: int = 20  # OneRec: beams per request, the best slate_size are served
    constrained: bool = False  # OneRec: decode legal codes only (legality is then 1)
    days: float | None = None  # judge over this many days (OneRec/Days-v0), not one session
    out: str | None = None  # folder for evaluation.json and evaluation.md (nothing written if unset)
    plugin: tuple[str, ...] = field(  # a Python file or module registering rewards
        default=(), metadata={"repeatable": True})
    json: bool = False  # print one JSON object

    def __post_init__(self) -> None:
        for name in ("users", "requests", "candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.days is not None:
            DaysConfig(days=self.days, session_requests=self.requests)  # a clear error early
        if self.reward:
            parse_spec(self.reward)
        if not is_baseline(self.policy) and not Path(self.policy).exists():
            raise ValueError(
                f"--policy {self.policy!r} is neither a checkpoint (its file, or the run folder "
                f"holding it) nor one of random, popular, cascade, {CASCADE_PREFIX}PATH"
            )
        if is_baseline(self.policy) and self.logs is None:
            raise ValueError(f"--policy {self.policy} needs --logs DIR (the world to evaluate in)")


def run(args: EvaluateArgs) -> dict[str, Any]:
    """Evaluate the policy; the figures of `trainers.evaluate.Evaluation`."""
    checkpoint = None if is_baseline(args.policy) else args.policy
    world = World.open(args.logs, checkpoint, args.pscore)
    if args.days is not None:
        return _run_days(args, world)
    config = EvaluationConfig(users=args.users, seed=EVALUATION_SEED + args.seed,
                              max_requests=args.requests)
    evaluation = evaluate(world, args.policy, config, args.reward or None,
                          candidates=args.candidates, constrained=args.constrained)
    result = {"policy": args.policy, **evaluation.to_dict(), "reward": args.reward,
              "args": asdict(args)}
    _write(args.out, "evaluation", result, f"# onerec-lab evaluate: {args.policy}\n\n"
           + evaluation_markdown({args.policy: evaluation}))
    return result


def _write(out: str | None, name: str, result: dict[str, Any], markdown: str) -> None:
    """`name`.json and `name`.md under `out` (nothing when it is None)."""
    if out is None:
        return
    layout = RunLayout(Path(out))
    layout.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(layout.report(name, "json"), json.dumps(result, indent=2))
    atomic_write_text(layout.report(name, "md"), markdown)


def _run_days(args: EvaluateArgs, world: World) -> dict[str, Any]:
    """`--days N`: the long-term figures of the policy over N days."""
    served = recommender(world, args.policy, args.candidates, args.constrained)
    days = DaysConfig(days=args.days, session_requests=args.requests)
    evaluation = evaluate_days(served, world.catalog, world.session_config, days, args.users,
                               EVALUATION_SEED + args.seed,
                               proxy_reward(world, args.reward or None))
    result = {"policy": args.policy, **evaluation.to_dict(), "reward": args.reward,
              "args": asdict(args)}
    _write(args.out, "evaluation_days", result,
           f"# onerec-lab evaluate --days {args.days:g}: {args.policy}\n\n"
           + long_term_markdown({args.policy: evaluation}))
    return result
