"""`onerec-lab reward fit` and `onerec-lab reward check`.

- fit: train the P-score on logged sessions (`onerec-lab simulate` writes them), search its
  fusion weights (iterative Pareto), save it, and report per-objective test AUC of each
  tower (`auc`), of the fused P-score (`pscore_auc`) and of the equal-weight fusion
  (`equal_weight_auc`).
- check: build a reward from a spec (`"pscore + 0.5*format"`), score every logged slate with
  it, and report the mean of the total and of each component. With `--properties`, check it
  instead against the reward contract (`rewards.testing.check_reward`) on batches drawn from
  these logs' world: a table of properties, held or failed with Hypothesis's shrunk
  counterexample, and exit 1 when one failed.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onerec_lab.experiment import World
from onerec_lab.experiment.evaluation import needs_pscore, proxy_reward
from onerec_lab.experiment.layout import CODEC_FILE
from policies.codec import SemanticIdCodec
from rewards import (
    ParetoConfig,
    PScoreTrainConfig,
    RewardInput,
    build,
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
    properties: bool = False  # check the reward contract instead (rewards.testing): exit 1 on
    # a failed property
    examples: int = 50  # --properties: batches Hypothesis draws per property
    seed: int = 0  # --properties: Hypothesis's seed (the same seed, the same batches)
    json: bool = False  # print one JSON object instead of a table

    def __post_init__(self) -> None:
        parse_spec(self.spec)  # a malformed spec fails before any data is read
        for name in ("batch_size", "examples"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got "
                                 f"{getattr(self, name)}")


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
    if args.properties:
        return _check_properties(world, args)
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


def _check_properties(world: World, args: RewardCheckArgs) -> dict[str, Any]:
    """The reward contract on batches drawn from this world (its catalog, its logged
    observations as contexts, its codec when the logs folder has one: the batches then
    carry legal and illegal codes, and the reward is built with it)."""
    from rewards.testing import KitWorld, check_reward  # Hypothesis: only for this option

    codec_file = world.logs_folder / CODEC_FILE
    codec = SemanticIdCodec.load(codec_file) if codec_file.is_file() else None
    pscore = world.pscore if needs_pscore(args.spec) else None
    kit = KitWorld(world.catalog, world.logs, codec, pscore)
    reward = build(args.spec, **kit.resources())
    results = check_reward(reward, kit, max_examples=args.examples, seed=args.seed)
    return {"spec": reward.name, "pscore": world.pscore_source,
            "properties": [{"property": result.name, "held": result.held,
                            "counterexample": result.counterexample} for result in results]}


def exit_code(result: dict[str, Any]) -> int:
    """1 when `reward check --properties` found a property that does not hold."""
    return int(any(not row["held"] for row in result.get("properties", ())))


def print_human(result: dict[str, Any]) -> None:
    """`--properties`: a table of properties; otherwise the fields, as every command."""
    if "properties" not in result:
        from onerec_lab.cli import print_result

        print_result(result, as_json=False)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"reward contract of {result['spec']!r}")
    for column in ("property", "result", "counterexample (shrunk)"):
        table.add_column(column)
    for row in result["properties"]:
        table.add_row(row["property"], "held" if row["held"] else "FAILED",
                      row["counterexample"] or "")
    Console().print(table)
