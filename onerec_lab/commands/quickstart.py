"""`onerec-lab quickstart`: the main job of the lab on the embedded synthetic world.

    world -> semantic IDs -> logged sessions from the cascade -> pre-train -> fit P-score
          -> RSFT and ECPO -> evaluate every policy with the simulator's TRUE outcome

The pipeline is the experiment layer's (`onerec_lab.experiment`): the world's stages and the
two alignment runs are cached in `--out` under fingerprints of their settings and inputs, so
a rerun reuses what did not change and rebuilds, saying why, what did. Everything lands in
`--out`: the world (`logs/`, `cascade.pt`, `pretrained/`), each alignment run with its
TensorBoard curves, PNG plots, `report.md` and `report.json`. The final table compares
random, popular, cascade, pre-trained, RSFT and ECPO policies on the same simulated users.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from envs.files import atomic_write_text
from onerec_lab.experiment import Evaluation, EvaluationConfig, WorldConfig, build_world, method
from onerec_lab.experiment.pipeline import aligned_run, evaluated
from onerec_lab.experiment.progress import StageProgress
from onerec_lab.experiment.world import LOGGED_SESSIONS, PRETRAINING, PSCORE, SEMANTIC_IDS

REWARD = "pscore + 0.5*format"  # the production-style proxy: P-score plus format validity
ALIGNED = ("rsft", "ecpo")  # the alignment runs, each a registered method by that name
TABLE_COLUMNS = ("true_watch_time", "session_length", "proxy_reward", "legality", "diversity")
PLOT_TITLES = {  # what each panel of comparison.png shows, with its unit
    "true_watch_time": "true watch time (s per session)",
    "session_length": "session length (requests)",
    "proxy_reward": f"proxy reward ({REWARD}, per slate)",
    "legality": "legality (share of real items)",
    "diversity": "diversity (leaf categories per slate)",
}


@dataclass
class QuickstartArgs:
    """Arguments of `onerec-lab quickstart`."""

    out: str = "runs/quickstart"  # folder for every artefact; a rerun reuses unchanged stages
    world: WorldConfig = field(default_factory=WorldConfig)  # the world's sizes and seed
    rsft_steps: int = 15  # RSFT steps (one rollout group per user and step)
    ecpo_steps: int = 60  # ECPO steps
    num_generations: int = 16  # G: items per user in RL rollouts
    rl_users: int = 16  # users per RL step
    rl_learning_rate: float = 3e-4  # AdamW step size of RSFT and ECPO
    eval_users: int = 200  # simulated users of the final evaluation (the same for every policy)
    eval_requests: int = 20  # most requests per evaluated session
    json: bool = False  # print the final report as one JSON object (progress goes to stderr)

    def __post_init__(self) -> None:
        for name in ALIGNED:  # the trainers' and the evaluation's own checks, before any work
            try:
                method(name).make_config(**self.rl_settings(name))
            except ValueError as error:
                raise ValueError(f"the {name} run: {error} (from --{name}-steps, --rl-users, "
                                 "--num-generations, --rl-learning-rate)") from error
        self.evaluation()

    def rl_settings(self, name: str) -> dict[str, Any]:
        """The config fields of the alignment run `name` (rsft or ecpo)."""
        return {"max_steps": getattr(self, f"{name}_steps"), "seed": self.world.seed,
                "users_per_step": self.rl_users, "num_generations": self.num_generations,
                "learning_rate": self.rl_learning_rate}

    def evaluation(self) -> EvaluationConfig:
        return EvaluationConfig(users=self.eval_users, max_requests=self.eval_requests)


def run(args: QuickstartArgs) -> dict[str, Any]:
    """Build the world, align with RSFT and ECPO, evaluate every policy; write the report."""
    started = time.perf_counter()
    with StageProgress("quickstart", quiet=args.json) as progress:
        world = build_world(args.world, args.out, progress)
        policies: dict[str, Any] = {"random": "random", "popular": "popular",
                                    "cascade": "cascade", "pretrained": world.pretrained_path}
        runs, fingerprints, events = {}, {}, list(world.events)
        for name in ALIGNED:
            with progress.stage(f"{name.upper()} with {REWARD!r}") as line:
                policies[name], runs[name], event = aligned_run(
                    world, name, name, REWARD, progress=progress.inner_progress,
                    **args.rl_settings(name))
                line.outcome, fingerprints[name] = event.outcome, event.fingerprint
            events.append(event)
        with progress.stage("evaluation in the simulator (true outcome)") as line:
            evaluations, event = evaluated(world, policies, args.evaluation(), REWARD,
                                           fingerprints)
            line.outcome = event.outcome
        events.append(event)
    report = {
        "rows": [_row(name, evaluation) for name, evaluation in evaluations.items()],
        "stages": {event.stage: event.describe() for event in events},
        "stage_seconds": progress.seconds,
        "total_seconds": round(time.perf_counter() - started, 2),
        "budget_seconds": 600,
        "world": {"items": world.catalog.num_items, "creators": world.catalog.num_creators,
                  "categories_per_level": list(world.catalog.num_categories),
                  "content_farm_share": float(world.catalog.content_farm.mean())},
        "tokenizer": world.report(SEMANTIC_IDS),
        "logged_sessions": world.report(LOGGED_SESSIONS),
        "pretrain": world.report(PRETRAINING),
        "pscore_auc": world.report(PSCORE).get("pscore_auc"),
        "aligned": runs,
        "args": asdict(args),
        "out": str(Path(args.out)),
    }
    _plot(Path(args.out), report["rows"])
    _write_markdown(Path(args.out) / "report.md", report)
    atomic_write_text(Path(args.out) / "report.json", json.dumps(report, indent=2, default=str))
    return report


def _row(name: str, evaluation: Evaluation) -> dict[str, Any]:
    """The table's row of one policy (a figure is None where the evaluation has none)."""
    values = {column: getattr(evaluation, column) for column in TABLE_COLUMNS}
    return {"policy": name, **{column: None if value is None else float(value)
                               for column, value in values.items()}}


def print_human(report: dict[str, Any]) -> None:
    """The comparison table, the stage times and the budget (the CLI's printout)."""
    console = Console()
    table = Table(title="onerec-lab quickstart: the same simulated users under every policy")
    table.add_column("policy")
    for column in TABLE_COLUMNS:
        table.add_column(column, justify="right")
    for row in report["rows"]:
        table.add_row(row["policy"], *("-" if row[c] is None else f"{row[c]:.3f}" for c in TABLE_COLUMNS))
    console.print(table)
    times = ", ".join(f"{name}: {seconds:.0f} s" for name, seconds in report["stage_seconds"].items())
    console.print(f"stages: {times}")
    console.print(
        f"total {report['total_seconds']:.0f} s (budget {report['budget_seconds']} s); "
        f"report: {report['out']}/report.md"
    )


def _plot(out: Path, rows: list[dict[str, Any]]) -> None:
    """One bar chart per table column: what a reader sees first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["policy"] for row in rows]
    figure, axes = plt.subplots(1, len(TABLE_COLUMNS), figsize=(4 * len(TABLE_COLUMNS), 3.6))
    for axis, column in zip(axes, TABLE_COLUMNS, strict=True):
        values = [row[column] if row[column] is not None else 0.0 for row in rows]
        axis.bar(names, values, color=["#999999"] * 3 + ["#4C72B0", "#55A868", "#C44E52"])
        axis.set_title(PLOT_TITLES[column])
        axis.tick_params(axis="x", rotation=45)
    figure.suptitle("quickstart: every policy on the same simulated users (true outcome)")
    figure.tight_layout()
    figure.savefig(out / "comparison.png", dpi=110)
    plt.close(figure)


def command_line(args: dict[str, Any]) -> str:
    """The command that reproduces a run: every option that differs from its default."""

    def flat(values: dict[str, Any]) -> dict[str, Any]:
        return {**{k: v for k, v in values.items() if k != "world"}, **values["world"]}

    defaults = flat(asdict(QuickstartArgs()))
    options = [f"--{name.replace('_', '-')} {value}" for name, value in flat(args).items()
               if name != "json" and value != defaults[name]]
    return " ".join(["onerec-lab quickstart", *options])


def _write_markdown(path: Path, report: dict[str, Any]) -> None:
    args = report["args"]
    lines = [
        "# onerec-lab quickstart",
        "",
        f"Command: `{command_line(args)}`",
        "",
        "![comparison](comparison.png)",
        "",
        "| policy | " + " | ".join(TABLE_COLUMNS) + " |",
        "|---" * (len(TABLE_COLUMNS) + 1) + "|",
        *(
            f"| {row['policy']} | "
            + " | ".join("-" if row[c] is None else f"{row[c]:.3f}" for c in TABLE_COLUMNS)
            + " |"
            for row in report["rows"]
        ),
        "",
        "true_watch_time: seconds watched per session; session_length: requests before the "
        "user left or the session was cut; proxy_reward: the reward spec "
        f"`{REWARD}` on served slates; legality: share of generated codes that are real items "
        "(unconstrained decoding); diversity: distinct leaf categories per slate.",
        "",
        "## Stages",
        "",
        "| stage | seconds |",
        "|---|---|",
        *(f"| {name} | {seconds:.1f} |" for name, seconds in report["stage_seconds"].items()),
        f"| total | {report['total_seconds']:.1f} |",
        "",
        "TensorBoard: `tensorboard --logdir " + report["out"] + "`.",
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")
