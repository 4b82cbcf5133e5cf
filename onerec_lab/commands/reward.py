"""`onerec-lab reward fit` and `onerec-lab reward check`.

- fit: train the P-score on logged sessions (`onerec-lab simulate` writes them), search its
  fusion weights (iterative Pareto), save it, and report per-objective test AUC of each
  tower (`auc`), of the fused P-score (`pscore_auc`) and of the equal-weight fusion
  (`equal_weight_auc`).
- check: build a reward from a spec (`"pscore + 0.5*format"`), score every logged slate with
  it, and report the mean of the total and of each component.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onerec_lab.experiment import World
from onerec_lab.experiment.evaluation import proxy_reward
from rewards import (
    ParetoConfig,
    PScoreTrainConfig,
    RewardInput,
    fit_pscore,
    parse_spec,
    save_pscore,
)


@dataclass(frozen=True)
class RewardFitArgs:
    """Options of `onerec-lab reward fit`."""

    logs: str  # logged-sessions folder (`onerec-lab simulate --out DIR`)
    out: str  # folder for the fitted P-score (pscore.pt)
    fit: PScoreTrainConfig = field(  # the towers' training (--epochs, --seed, ...)
        default_factory=PScoreTrainConfig, metadata={"hidden": ("pareto",)})
    pareto: ParetoConfig = field(  # the fusion-weight search (--pareto-steps, ...); its seed
        default_factory=ParetoConfig, metadata={"hidden": ("seed",), "prefix": "pareto-"})
    # is the fit's
    json: bool = False  # print one JSON object instead of a table


@dataclass(frozen=True)
class RewardCheckArgs:
    """Options of `onerec-lab reward check`."""

    spec: str  # the reward to build, e.g. "pscore + 0.5*format" (grammar: rewards/README.md)
    logs: str  # logged-sessions folder whose slates are scored
    pscore: str | None = None  # fitted P-score folder; default LOGS/pscore, else a quick fit
    batch_size: int = 1024  # logged requests scored at once
    plugin: tuple[str, ...] = field(  # a Python file or module registering rewards
        default=(), metadata={"repeatable": True})
    json: bool = False  # print one JSON object instead of a table

    def __post_init__(self) -> None:
        parse_spec(self.spec)  # a malformed spec fails before any data is read
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")


def run_fit(args: RewardFitArgs) -> dict[str, Any]:
    """Fit, save and report the P-score."""
    started = time.perf_counter()
    logs = World.open(args.logs).logs
    config = dataclasses.replace(args.fit, pareto=dataclasses.replace(args.pareto,
                                                                       seed=args.fit.seed))
    fit = fit_pscore(logs, logs.catalog, config)
    folder = save_pscore(fit.model, args.out, fit.report, logs.catalog_fingerprint)
    return {**fit.report, "out": str(folder), "seconds": round(time.perf_counter() - started, 1)}


def run_check(args: RewardCheckArgs) -> dict[str, Any]:
    """Score every logged slate with the spec's reward; means of the total and components."""
    world = World.open(args.logs, pscore=args.pscore)
    logs = world.logs
    reward = proxy_reward(world, args.spec)
    totals: dict[str, float] = {}
    for start in range(0, logs.num_requests, args.batch_size):
        rows = np.arange(start, min(start + args.batch_size, logs.num_requests))
        batch = RewardInput(
            items=logs.slates[rows], context=logs.contexts(rows), feedback=logs.feedback[rows]
        )
        output = reward(batch)
        for name, values in {"total": output.total, **output.components}.items():
            totals[name] = totals.get(name, 0.0) + float(values.double().sum())
    means = {name: round(value / logs.num_requests, 6) for name, value in totals.items()}
    return {
        "spec": reward.name,
        "requests": logs.num_requests,
        "pscore": world.pscore_source,
        "total": means.pop("total"),
        "components": means,
    }
