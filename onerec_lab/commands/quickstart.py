"""`onerec-lab quickstart`: the main job of the lab on the embedded synthetic world.

    world -> semantic IDs -> logged sessions from the cascade -> pre-train -> fit P-score
          -> RSFT and ECPO -> evaluate every policy with the simulator's TRUE outcome

Each stage is one of the lab's commands run in-process, timed, under a progress display.
Everything lands in `--out`: the catalog, codec and logs (`logs/`), the cascade, every
checkpoint with its TensorBoard run, PNG plots, `report.md` and `report.json`. The final
table compares random, popular, cascade, pre-trained, RSFT and ECPO policies on the same
simulated users.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from envs.catalog import CatalogConfig, generate_synthetic_catalog
from onerec_lab.commands.align import AlignArgs
from onerec_lab.commands.align import run as run_align
from onerec_lab.commands.evaluate import EvaluateArgs
from onerec_lab.commands.evaluate import run as run_evaluate
from onerec_lab.commands.pretrain import PretrainArgs
from onerec_lab.commands.pretrain import run as run_pretrain
from onerec_lab.commands.reward import RewardFitArgs, run_fit
from policies.cascade import CascadeConfig, bootstrap_cascade
from policies.item_embeddings import ItemEmbeddingConfig, train_item_embeddings
from policies.rq_kmeans import RQKMeansConfig
from policies.tokenizer import build_semantic_ids
from trainers.pretrain import CHECKPOINT_FILE

REWARD = "pscore + 0.5*format"  # the production-style proxy: P-score plus format validity
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

    out: str = "runs/quickstart"  # folder for every artefact (created; stages are re-run)
    items: int = 3_000  # catalog size; 3k items keep the whole job within minutes on 2 cores
    codebook: int = 32  # codes per level (3 levels); 32^3 codes comfortably address 3k items
    embedding_steps: int = 300  # item-embedding optimiser steps
    log_users: int = 600  # simulated users per logging round (popular, then cascade rounds)
    log_requests: int = 10  # most requests per logged session
    pretrain_steps: int = 600  # next-token pre-training steps of the tiny OneRec (150 steps
    # left it below the cascade that logged its data; 600 put it above)
    pscore_epochs: int = 8  # P-score passes over the logs (2 gave a proxy that ECPO hacked)
    rsft_steps: int = 15  # RSFT steps (one rollout group per user and step)
    ecpo_steps: int = 60  # ECPO steps
    num_generations: int = 16  # G: items per user in RL rollouts
    rl_users: int = 16  # users per RL step
    rl_learning_rate: float = 3e-4  # AdamW step size of RSFT and ECPO
    eval_users: int = 200  # simulated users of the final evaluation (the same for every policy)
    eval_requests: int = 20  # most requests per evaluated session
    seed: int = 0  # seeds every stage; the same seed reproduces the same run
    json: bool = False  # print the final report as one JSON object (progress goes to stderr)

    def __post_init__(self) -> None:
        if self.items < 2 * self.codebook:
            raise ValueError(
                f"items ({self.items}) must be at least twice codebook ({self.codebook}) for "
                "k-means to have data per code; raise --items or lower --codebook"
            )
        for name in ("embedding_steps", "log_users", "log_requests", "pretrain_steps",
                     "pscore_epochs", "rsft_steps", "ecpo_steps", "rl_users", "eval_users",
                     "eval_requests"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be >= 2 for group-relative advantages, got "
                f"{self.num_generations}"
            )


class StageTimer:
    """Runs named stages under a progress display and records their wall times."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}

    def run(self, name: str, stage: Callable[[], Any]) -> Any:
        task = self.progress.add_task(name, total=None)
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # stages are quiet; the table speaks
            result = stage()
        self.seconds[name] = round(time.perf_counter() - start, 2)
        self.progress.update(task, description=f"{name} [green]done[/] ({self.seconds[name]:.1f} s)")
        self.progress.stop_task(task)
        return result


def semantic_ids(args: QuickstartArgs, catalog, logs_dir: Path) -> dict[str, Any]:
    """Item embeddings (contrastive + content reconstruction) -> balanced RQ-Kmeans codec."""
    pairs = catalog.coengaged_pairs(10 * args.items, np.random.default_rng(args.seed))
    embeddings = train_item_embeddings(
        args.items, pairs, ItemEmbeddingConfig(steps=args.embedding_steps, seed=args.seed),
        content=catalog.content,
    )
    config = RQKMeansConfig(codebook_sizes=(args.codebook,) * 3, balanced=True, seed=args.seed)
    codec, report, _ = build_semantic_ids(embeddings, config)
    codec.save(logs_dir / "codec.safetensors")
    return report.to_dict()


def logged_sessions(args: QuickstartArgs, catalog, logs_dir: Path, out: Path) -> dict[str, Any]:
    """Popular policy logs -> fit the cascade -> the cascade logs the pre-training data."""
    cascade, rounds = bootstrap_cascade(
        catalog, CascadeConfig(seed=args.seed), args.log_users, args.log_requests, args.seed,
        rounds=1,
    )
    cascade.save(out / "cascade.pt")
    rounds[-1].save(logs_dir)
    return {"rounds": len(rounds), "requests": int(rounds[-1].num_requests)}


def run(args: QuickstartArgs) -> dict[str, Any]:
    """Run every stage, write the outputs, return the report with the comparison table."""
    out = Path(args.out)
    logs_dir = out / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    started = time.perf_counter()
    checkpoints = {name: out / name / CHECKPOINT_FILE for name in ("pretrained", "rsft", "ecpo")}
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        timer = StageTimer(progress)
        catalog = timer.run(
            "world: synthetic catalog",
            lambda: generate_synthetic_catalog(CatalogConfig(num_items=args.items), args.seed),
        )
        tokenizer = timer.run(
            "semantic IDs: embeddings + balanced RQ-Kmeans",
            lambda: semantic_ids(args, catalog, logs_dir),
        )
        logged = timer.run(
            "logged sessions: popular -> cascade -> cascade logs",
            lambda: logged_sessions(args, catalog, logs_dir, out),
        )
        pretrained = timer.run("pre-training (next-token prediction)", lambda: run_pretrain(
            PretrainArgs(out=str(out / "pretrained"), logs=str(logs_dir), preset="tiny",
                         steps=args.pretrain_steps, seed=args.seed, json=True)
        ))
        pscore = timer.run("P-score: multi-tower fit + Pareto fusion search", lambda: run_fit(
            RewardFitArgs(logs=str(logs_dir), out=str(logs_dir / "pscore"), seed=args.seed,
                          epochs=args.pscore_epochs, json=True)
        ))
        aligned = {}
        for method, steps in (("rsft", args.rsft_steps), ("ecpo", args.ecpo_steps)):
            aligned[method] = timer.run(f"{method.upper()} with {REWARD!r}", lambda m=method, s=steps: run_align(
                AlignArgs(policy=str(checkpoints["pretrained"]), out=str(out / m), method=m,
                          reward=REWARD, logs=str(logs_dir), steps=s, seed=args.seed,
                          users=args.rl_users, num_generations=args.num_generations,
                          learning_rate=args.rl_learning_rate, eval_users=8, json=True)
            ))
        policies = {"random": "random", "popular": "popular",
                    "cascade": f"cascade:{out / 'cascade.pt'}",
                    **{name: str(path) for name, path in checkpoints.items()}}
        evaluations = timer.run("evaluation in the simulator (true outcome)", lambda: {
            name: run_evaluate(EvaluateArgs(
                policy=policy, users=args.eval_users, seed=args.seed,
                requests=args.eval_requests, logs=str(logs_dir), reward=REWARD, json=True,
            ))
            for name, policy in policies.items()
        })

    rows = [_row(name, evaluation) for name, evaluation in evaluations.items()]
    report = {
        "rows": rows,
        "stages": list(timer.seconds),
        "stage_seconds": timer.seconds,
        "total_seconds": round(time.perf_counter() - started, 2),
        "budget_seconds": 600,
        "world": {
            "items": catalog.num_items,
            "creators": catalog.num_creators,
            "categories_per_level": list(catalog.num_categories),
            "content_farm_share": float(catalog.content_farm.mean()),
        },
        "tokenizer": tokenizer,
        "logged_sessions": logged,
        "pretrain": {key: pretrained[key] for key in ("initial_loss", "final_loss", "parameters")},
        "pscore_auc": pscore.get("pscore_auc"),
        "aligned": {method: {key: value for key, value in result.items()
                             if key.endswith(("_before", "_after"))}
                    for method, result in aligned.items()},
        "args": asdict(args),
        "out": str(out),
    }
    _plot(out, rows)
    _write_markdown(out / "report.md", report)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def _row(name: str, evaluation: dict[str, Any]) -> dict[str, Any]:
    row = {"policy": name}
    for column in TABLE_COLUMNS:
        value = evaluation.get(column)
        row[column] = None if value is None else float(value)
    return row


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
    defaults = asdict(QuickstartArgs())
    options = [f"--{name.replace('_', '-')} {value}" for name, value in args.items()
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
    path.write_text("\n".join(lines) + "\n")
