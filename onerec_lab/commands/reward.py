"""`onerec-lab reward fit` and `onerec-lab reward check`.

- fit: train the P-score on logged sessions (`onerec-lab simulate` writes them), search its
  fusion weights (iterative Pareto), save it, and report per-objective test AUC of each
  tower (`auc`), of the fused P-score (`pscore_auc`) and of the equal-weight fusion
  (`equal_weight_auc`).
- check: build a reward from a spec (`"pscore + 0.5*format"`), score every logged slate with
  it, and report the mean of the total and of each component.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rewards import (
    ParetoConfig,
    PScoreModel,
    PScoreTrainConfig,
    RewardInput,
    build,
    fit_pscore,
    load_pscore,
    parse_spec,
    save_pscore,
)
from rewards.compose import Combination


def _load_logs(folder: str) -> Any:
    from envs.logs import LoggedSessions  # the simulator stack loads only when a command runs

    return LoggedSessions.load(folder)


@dataclass(frozen=True)
class RewardFitArgs:
    """Options of `onerec-lab reward fit`."""

    logs: str  # logged-sessions folder (sessions.npz + catalog.npz from `onerec-lab simulate`)
    out: str  # folder for the fitted P-score (pscore.pt + pscore.json)
    seed: int = 0  # seeds the split, the initialisation, the batch order and the weight search
    epochs: int = 4  # passes over the train split; held-out AUC plateaus after a few
    batch_size: int = 256  # logged requests per optimiser step
    pareto_steps: int = 300  # proposals of the iterative Pareto search over fusion weights
    search_share: float = 0.2  # logged requests held out for the weight search
    test_share: float = 0.2  # logged requests held out for the reported AUCs
    json: bool = False  # print one JSON object instead of a table

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )
        if self.pareto_steps < 0:
            raise ValueError(f"--pareto-steps must be >= 0, got {self.pareto_steps}")


@dataclass(frozen=True)
class RewardCheckArgs:
    """Options of `onerec-lab reward check`."""

    spec: str  # the reward to build, e.g. "pscore + 0.5*format" (grammar: rewards/README.md)
    logs: str  # logged-sessions folder whose slates are scored
    pscore: str | None = None  # fitted P-score folder; default LOGS/pscore, else a quick fit
    batch_size: int = 1024  # logged requests scored at once
    json: bool = False  # print one JSON object instead of a table

    def __post_init__(self) -> None:
        parse_spec(self.spec)  # a malformed spec fails before any data is read
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")


def run_fit(args: RewardFitArgs) -> dict[str, Any]:
    """Fit, save and report the P-score."""
    started = time.perf_counter()
    logs = _load_logs(args.logs)
    config = PScoreTrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        search_share=args.search_share,
        test_share=args.test_share,
        seed=args.seed,
        pareto=ParetoConfig(steps=args.pareto_steps, seed=args.seed),
    )
    fit = fit_pscore(logs, logs.catalog, config)
    folder = save_pscore(fit.model, args.out, fit.report)
    return {**fit.report, "out": str(folder), "seconds": round(time.perf_counter() - started, 1)}


def _names(combination: Combination) -> set[str]:
    """Every reward name a parsed spec uses, inner arguments included."""
    names = set()
    for _, call in combination.terms:
        names.add(call.name)
        for argument in call.args:
            names |= _names(argument)
    return names


def _pscore_for(args: RewardCheckArgs, logs: Any) -> tuple[PScoreModel | None, str]:
    """The P-score a check uses, and where it came from."""
    if "pscore" not in _names(parse_spec(args.spec)):
        return None, "not used"
    folder = Path(args.pscore) if args.pscore else Path(args.logs) / "pscore"
    if args.pscore or folder.is_dir():
        return load_pscore(folder), str(folder)
    quick = PScoreTrainConfig(epochs=1, pareto=ParetoConfig(steps=30))
    return fit_pscore(logs, logs.catalog, quick).model, (
        "fitted quickly on these logs (1 epoch); pass --pscore FOLDER from `reward fit`"
    )


def run_check(args: RewardCheckArgs) -> dict[str, Any]:
    """Score every logged slate with the spec's reward; means of the total and components."""
    logs = _load_logs(args.logs)
    model, source = _pscore_for(args, logs)
    reward = build(args.spec, pscore_model=model, catalog=logs.catalog)
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
        "pscore": source,
        "total": means.pop("total"),
        "components": means,
    }
