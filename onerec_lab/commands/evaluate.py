"""`onerec-lab evaluate`: any policy in the simulator, with the oracle's truth.

    onerec-lab evaluate --policy CKPT --users 1000 --seed 0 --json
    onerec-lab evaluate --policy popular --logs DIR --users 1000 --json

`--policy` is a OneRec checkpoint (pre-trained or aligned; unconstrained beam search of
`--candidates` items, the top slate_size served, an illegal code served as a blank), or a
baseline: `random`, `popular`, `cascade` (the world's, beside its logs folder),
`cascade:PATH`. The world (catalog, pathway lengths) comes
from envs.files import atomic_write_text
from the logged sessions (`--logs`, default: the folder the checkpoint was trained on). The
figures: true watch time per session, session length, behaviour rates, proxy reward of the
served slates (`--reward`), legality, diversity and catalog coverage (`trainers.evaluate`);
with `--out` also `evaluation.json` and `evaluation.md`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from envs.files import atomic_write_text
from onerec_lab.experiment import EvaluationConfig, World, evaluate
from onerec_lab.experiment.evaluation import CASCADE_PREFIX, is_baseline
from onerec_lab.experiment.layout import RunLayout
from rewards import parse_spec
from trainers.evaluate import EVALUATION_SEED, evaluation_markdown


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
    out: str | None = None  # folder for evaluation.json and evaluation.md (nothing written if unset)
    plugin: tuple[str, ...] = field(  # a Python file or module registering rewards
        default=(), metadata={"repeatable": True})
    json: bool = False  # print one JSON object

    def __post_init__(self) -> None:
        for name in ("users", "requests", "candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
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
    config = EvaluationConfig(users=args.users, seed=EVALUATION_SEED + args.seed,
                              max_requests=args.requests)
    evaluation = evaluate(world, args.policy, config, args.reward or None,
                          candidates=args.candidates, constrained=args.constrained)
    result = {"policy": args.policy, **evaluation.to_dict(), "reward": args.reward,
              "args": asdict(args)}
    if args.out is not None:
        layout = RunLayout(Path(args.out))
        layout.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(layout.report("evaluation", "json"), json.dumps(result, indent=2))
        atomic_write_text(layout.report("evaluation", "md"),
                          f"# onerec-lab evaluate: {args.policy}\n\n"
                          + evaluation_markdown({args.policy: evaluation}))
    return result
