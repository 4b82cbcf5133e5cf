"""`onerec-lab quickstart`: the main job of the lab on the embedded synthetic world.

Stages, each timed: world (a synthetic catalog) -> semantic IDs (item embeddings trained
with the item-to-item contrastive loss, then balanced residual k-means). The job grows with
the lab: logged sessions, pre-training, the P-score, RSFT/ECPO and evaluation join here as
they land. Everything is written into `--out`: the catalog, the codec and a markdown report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from envs.catalog import CatalogConfig, generate_synthetic_catalog
from policies.item_embeddings import ItemEmbeddingConfig, train_item_embeddings
from policies.rq_kmeans import RQKMeansConfig
from policies.tokenizer import build_semantic_ids


@dataclass
class QuickstartArgs:
    """Arguments of `onerec-lab quickstart`."""

    out: str = "runs/quickstart"  # folder for the catalog, codec, report (created if missing)
    items: int = 5_000  # catalog size; 5k items keep the whole job within minutes on 2 cores
    levels: int = 3  # semantic-ID levels, as in OneRec
    codebook: int = 64  # codes per level; 64^3 codes comfortably address 5k items
    embedding_steps: int = 300  # item-embedding optimiser steps; ~15 s on one CPU core
    seed: int = 0  # seeds every stage; the same seed reproduces the same run
    json: bool = False  # print the final report as one JSON object (progress goes to stderr)

    def __post_init__(self) -> None:
        if self.items < 2 * self.codebook:
            raise ValueError(
                f"items ({self.items}) must be at least twice codebook ({self.codebook}) for "
                "k-means to have data per code; raise --items or lower --codebook"
            )
        if self.levels < 1:
            raise ValueError(f"levels must be >= 1, got {self.levels}")


class StageTimer:
    """Runs named stages under a progress display and records their wall times."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}

    def run(self, name: str, stage: Callable[[], Any]) -> Any:
        task = self.progress.add_task(name, total=None)
        start = time.perf_counter()
        result = stage()
        self.seconds[name] = round(time.perf_counter() - start, 3)
        self.progress.update(task, description=f"{name} [green]done[/] ({self.seconds[name]:.1f} s)")
        self.progress.stop_task(task)
        return result


def run(args: QuickstartArgs) -> dict[str, Any]:
    """Run every stage that exists, write the outputs, return the report."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    started = time.perf_counter()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        timer = StageTimer(progress)
        catalog = timer.run(
            "world: synthetic catalog",
            lambda: generate_synthetic_catalog(CatalogConfig(num_items=args.items), args.seed),
        )
        catalog.save(out / "catalog.npz")

        def semantic_ids():
            pairs = catalog.coengaged_pairs(10 * args.items, np.random.default_rng(args.seed))
            embeddings = train_item_embeddings(
                args.items, pairs, ItemEmbeddingConfig(steps=args.embedding_steps, seed=args.seed),
                content=catalog.content,
            )
            config = RQKMeansConfig(
                codebook_sizes=(args.codebook,) * args.levels, balanced=True, seed=args.seed
            )
            return build_semantic_ids(embeddings, config)

        codec, tokenizer_report, _ = timer.run("semantic IDs: embeddings + RQ-Kmeans", semantic_ids)
        codec.save(out / "codec.safetensors")

    report = {
        "stages": list(timer.seconds),
        "stage_seconds": timer.seconds,
        "total_seconds": round(time.perf_counter() - started, 3),
        "world": {
            "items": catalog.num_items,
            "creators": catalog.num_creators,
            "categories_per_level": list(catalog.num_categories),
            "content_farm_share": float(catalog.content_farm.mean()),
        },
        "tokenizer": tokenizer_report.to_dict(),
        "pending_stages": [
            "logged sessions from the cascade", "pre-training", "P-score", "RSFT and ECPO",
            "evaluation",
        ],
        "args": asdict(args),
        "out": str(out),
    }
    _write_markdown(out / "report.md", report)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _write_markdown(path: Path, report: dict[str, Any]) -> None:
    tokenizer = report["tokenizer"]
    lines = [
        "# onerec-lab quickstart",
        "",
        f"Command: `onerec-lab quickstart --out {report['out']} --items "
        f"{report['args']['items']} --seed {report['args']['seed']}`",
        "",
        "## Stages",
        "",
        "| stage | seconds |",
        "|---|---|",
        *(f"| {name} | {seconds:.2f} |" for name, seconds in report["stage_seconds"].items()),
        "",
        "## Semantic IDs",
        "",
        "| level | utilisation | entropy (bits) |",
        "|---|---|---|",
        *(
            f"| {level} | {use:.3f} | {bits:.3f} |"
            for level, (use, bits) in enumerate(
                zip(tokenizer["utilization"], tokenizer["entropy_bits"], strict=True)
            )
        ),
        "",
        f"Collision rate {tokenizer['collision_rate']:.4f}, relative reconstruction error "
        f"{tokenizer['reconstruction_error']:.4f}.",
        "",
        "Not yet part of the job: " + ", ".join(report["pending_stages"]) + ".",
    ]
    path.write_text("\n".join(lines) + "\n")
