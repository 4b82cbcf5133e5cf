"""Tokenizer benchmark: semantic-ID quality and residual k-means speed against faiss.

    python -m benchmarks.tokenizer [--preset full|smoke] [--threads N] [--results DIR]

Writes `tokenizer<suffix>.md` and `.json` under `--results` (suffix "" for the full preset,
"_smoke" for the smoke one):
- (a) the synthetic catalog (20,000 items, content + co-engaged pairs), 3 x 256 codes,
  balanced against plain k-means: utilisation, entropy per level, collision rate,
  reconstruction error;
- (b) Amazon Beauty (../shared/data, consecutive training pairs, id embeddings), the same;
- (c) speed on 100,000 x 64 float32 points (a Gaussian mixture): one k-means level against
  faiss-cpu's `faiss.Kmeans` at the same K, data and iterations (faiss without subsampling),
  at K = 256 and 8192, and the full 3-level fit against 3 levels of faiss on residuals.
  The best of `repeats` runs counts, ours and faiss interleaved: the cores are shared.

Letters used in shape comments: N points, D dims.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from benchmarks.study import command_line, progress, study_main, with_preset, write_report
from envs.beauty import load_beauty
from envs.catalog import CatalogConfig, generate_synthetic_catalog
from policies.item_embeddings import ItemEmbeddingConfig, consecutive_pairs, train_item_embeddings
from policies.rq_kmeans import ResidualKMeans, RQKMeansConfig, balanced_kmeans, kmeans
from policies.tokenizer import build_semantic_ids

RESULTS = Path(__file__).resolve().parent / "results"
BEAUTY = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon-beauty" / "Beauty.txt"
ENTROPY_SLACK_BITS = 0.1  # the target: balanced entropy within 0.1 bit of log2 K
SPEED_TARGET = 2.0  # the target: ours within 2x of faiss


@dataclass(frozen=True)
class TokenizerPreset:
    """Sizes of one run of the benchmark (each an option of `TokenizerBenchArgs` too)."""

    items: int  # synthetic catalog size of section (a)
    codebook: int  # codes per level in sections (a) and (b)
    iterations: int  # k-means iterations per level, ours and faiss alike
    embedding_steps: int  # item-embedding optimiser steps in sections (a) and (b)
    speed_items: int  # points of the speed section
    speed_sizes: tuple[int, ...]  # K of the speed section
    repeats: int  # timed runs per speed figure; the fastest counts


PRESETS = {
    "full": TokenizerPreset(items=20_000, codebook=256, iterations=20,
                            embedding_steps=ItemEmbeddingConfig.steps, speed_items=100_000,
                            speed_sizes=(256, 8192), repeats=2),
    "smoke": TokenizerPreset(items=2_000, codebook=16, iterations=5, embedding_steps=100,
                             speed_items=5_000, speed_sizes=(64, 256), repeats=1),
}


@dataclass
class TokenizerBenchArgs:
    """Arguments of `python -m benchmarks.tokenizer`."""

    preset: Literal["full", "smoke"] = "full"  # full: the measured benchmark; smoke: small
    # sizes (results are not comparable)
    results: str = str(RESULTS)  # where tokenizer*.md / .json are written
    json: bool = False  # print the result as one JSON object
    threads: int | None = None  # torch and faiss threads (default: torch's, all cores)
    items: int | None = None  # synthetic catalog size of section (a) (None: the preset's)
    codebook: int | None = None  # codes per level in sections (a) and (b) (None: the preset's)
    levels: int = 3  # levels in sections (a), (b) and the full fits of (c)
    iterations: int | None = None  # k-means iterations per level, ours and faiss alike (None:
    # the preset's)
    embedding_steps: int | None = None  # item-embedding optimiser steps in (a) and (b) (None:
    # the preset's)
    speed_items: int | None = None  # points of the speed section (None: the preset's)
    speed_dim: int = 64  # dims of the speed section
    speed_sizes: tuple[int, ...] | None = None  # K of the speed section (None: the preset's)
    repeats: int | None = None  # timed runs per speed figure; the fastest counts (None: the
    # preset's)
    seed: int = 0  # seeds data, embeddings and k-means


def quality_rows(embeddings: torch.Tensor, args: TokenizerBenchArgs) -> dict[str, dict]:
    """Plain and balanced RQ-Kmeans on the same embeddings: metrics and fit seconds."""
    rows = {}
    for name, balanced in (("unbalanced", False), ("balanced", True)):
        config = RQKMeansConfig(codebook_sizes=(args.codebook,) * args.levels,
                                iterations=args.iterations, balanced=balanced, seed=args.seed)
        codec, report, seconds = build_semantic_ids(embeddings, config)
        rows[name] = {**report.to_dict(), "fit_seconds": seconds,
                      "codec_levels": codec.num_levels, "extra_level_size":
                      codec.codebook_sizes[-1] if codec.num_levels > args.levels else None}
    return rows


def synthetic_embeddings(args: TokenizerBenchArgs, config: ItemEmbeddingConfig) -> torch.Tensor:
    catalog = generate_synthetic_catalog(CatalogConfig(num_items=args.items), seed=args.seed)
    pairs = catalog.coengaged_pairs(10 * args.items, np.random.default_rng(args.seed))
    return train_item_embeddings(args.items, pairs, config, content=catalog.content)


def beauty_embeddings(config: ItemEmbeddingConfig) -> torch.Tensor:
    dataset = load_beauty(BEAUTY)
    return train_item_embeddings(dataset.num_items, consecutive_pairs(dataset.train_sequences),
                                 config)


def gaussian_mixture(args: TokenizerBenchArgs) -> torch.Tensor:
    """(N, D) float32 points around 1,024 random centres: clustered like real embeddings."""
    generator = torch.Generator().manual_seed(args.seed)
    centres = torch.randn(1024, args.speed_dim, generator=generator)
    which = torch.randint(1024, (args.speed_items,), generator=generator)
    noise = torch.randn(args.speed_items, args.speed_dim, generator=generator)
    return centres[which] + 0.5 * noise  # (N, D)


def best_time(run: Callable[[], object], repeats: int) -> dict[str, float]:
    """Fastest wall and CPU (all threads) seconds over `repeats` runs."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"wall_s": min(walls), "cpu_s": min(cpus)}


def faiss_levels(faiss, points: np.ndarray, k: int, levels: int, iterations: int,
                 seed: int) -> None:
    """faiss.Kmeans on the residual, level after level (the faiss twin of our fit)."""
    residual = points.copy()
    for level in range(levels):
        trainer = faiss.Kmeans(points.shape[1], k, niter=iterations, seed=seed + level,
                               max_points_per_centroid=-(-len(points) // k),
                               min_points_per_centroid=1, verbose=False)
        trainer.train(residual)
        _, nearest = trainer.index.search(residual, 1)
        residual -= trainer.centroids[nearest[:, 0]]


def speed_rows(args: TokenizerBenchArgs) -> list[dict] | None:
    """Seconds of ours against faiss per K; None when faiss is not installed."""
    try:
        import faiss  # only the benchmark needs it: `pip install faiss-cpu`
    except ImportError:
        return None
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    points = gaussian_mixture(args)
    points_numpy = points.numpy()
    warm_up = points[:4096]  # first calls pay one-off library set-up; keep it out of timings
    kmeans(warm_up, 16, torch.Generator().manual_seed(0), RQKMeansConfig(iterations=2))
    faiss_levels(faiss, warm_up.numpy(), 16, 1, 2, args.seed)
    rows = []
    for k in args.speed_sizes:
        progress(f"(c) speed at K={k}")
        config = RQKMeansConfig(codebook_sizes=(k,) * args.levels, iterations=args.iterations,
                                seed=args.seed)
        balanced_config = RQKMeansConfig(codebook_sizes=(k,) * args.levels, balanced=True,
                                         iterations=args.iterations, seed=args.seed)
        timings = {name: {"wall_s": float("inf"), "cpu_s": float("inf")}
                   for name in ("ours", "faiss", "ours_balanced", "ours_3_levels",
                                "faiss_3_levels", "ours_balanced_3_levels")}
        runs = {
            "ours": lambda k=k, c=config: kmeans(points, k, torch.Generator().manual_seed(0), c),
            "faiss": lambda k=k: faiss_levels(faiss, points_numpy, k, 1, args.iterations,
                                              args.seed),
            "ours_balanced": lambda k=k, c=balanced_config: balanced_kmeans(
                points, k, torch.Generator().manual_seed(0), c),
            "ours_3_levels": lambda c=config: ResidualKMeans(c).fit(points),
            "faiss_3_levels": lambda k=k: faiss_levels(faiss, points_numpy, k, args.levels,
                                                       args.iterations, args.seed),
            "ours_balanced_3_levels": lambda c=balanced_config: ResidualKMeans(c).fit(points),
        }
        for _ in range(args.repeats):  # interleaved, so a busy spell hits both sides
            for name, run in runs.items():
                measured = best_time(run, 1)
                timings[name] = {key: min(timings[name][key], measured[key]) for key in measured}
        rows.append({"k": k, **timings,
                     "ratio_one_level": timings["ours"]["wall_s"] / timings["faiss"]["wall_s"],
                     "ratio_one_level_cpu": timings["ours"]["cpu_s"] / timings["faiss"]["cpu_s"],
                     "ratio_3_levels": (timings["ours_3_levels"]["wall_s"]
                                        / timings["faiss_3_levels"]["wall_s"])})
    return rows


def quality_table(title: str, rows: dict[str, dict], codebook: int) -> list[str]:
    lines = [f"## {title}", "",
             "| k-means | utilisation per level | entropy per level (bits) | collision rate | "
             "reconstruction error | codec levels | fit s |", "|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        extra = f" (+1 of size {row['extra_level_size']})" if row["extra_level_size"] else ""
        lines.append(
            f"| {name} | {' / '.join(f'{u:.4f}' for u in row['utilization'])} | "
            f"{' / '.join(f'{e:.4f}' for e in row['entropy_bits'])} | "
            f"{row['collision_rate']:.4f} | {row['reconstruction_error']:.4f} | "
            f"{row['codec_levels']}{extra} | {row['fit_seconds']:.1f} |"
        )
    balanced, plain = rows["balanced"], rows["unbalanced"]
    full_use = all(u == 1.0 for u in balanced["utilization"])
    max_bits = float(np.log2(codebook))
    flat = all(max_bits - e <= ENTROPY_SLACK_BITS for e in balanced["entropy_bits"])
    fewer = balanced["collision_rate"] < plain["collision_rate"]
    lines += ["", f"Targets (balanced): utilisation 1.0 at every level: "
              f"**{'met' if full_use else 'MISSED'}**; entropy within {ENTROPY_SLACK_BITS} bit "
              f"of {max_bits:.0f} bits at every level: **{'met' if flat else 'MISSED'}**; "
              f"collision rate below unbalanced: **{'met' if fewer else 'MISSED'}**.", ""]
    return lines


def speed_table(rows: list[dict] | None, args: TokenizerBenchArgs) -> list[str]:
    lines = [f"## (c) Speed: {args.speed_items:,} x {args.speed_dim} float32 points, "
             f"{args.iterations} iterations per level, best of {args.repeats}", ""]
    if rows is None:
        return lines + ["faiss is not installed (`pip install faiss-cpu`): section skipped.", ""]
    lines += ["Seconds, wall (CPU time of all threads in brackets). Ours includes its k-means++ "
              "seeding; faiss seeds with a random sample and runs on all points "
              "(`max_points_per_centroid` raised so it does not subsample).", "",
              "| K | ours, 1 level | faiss, 1 level | ours / faiss | balanced, 1 level | "
              "ours, 3 levels | faiss, 3 levels | ours / faiss | balanced, 3 levels |",
              "|---|---|---|---|---|---|---|---|---|"]

    def cell(timing: dict) -> str:
        return f"{timing['wall_s']:.2f} ({timing['cpu_s']:.2f})"

    for row in rows:
        lines.append(
            f"| {row['k']} | {cell(row['ours'])} | {cell(row['faiss'])} | "
            f"{row['ratio_one_level']:.2f}x ({row['ratio_one_level_cpu']:.2f}x) | "
            f"{cell(row['ours_balanced'])} | {cell(row['ours_3_levels'])} | "
            f"{cell(row['faiss_3_levels'])} | {row['ratio_3_levels']:.2f}x | "
            f"{cell(row['ours_balanced_3_levels'])} |"
        )
    within = all(row["ratio_one_level"] <= SPEED_TARGET for row in rows)
    lines += ["", f"Target: one level within {SPEED_TARGET:.0f}x of faiss at every K: "
              f"**{'met' if within else 'MISSED'}**.", ""]
    return lines


def run(args: TokenizerBenchArgs) -> dict[str, Any]:
    """The benchmark at `args`; writes its report and returns its figures and the report's
    path."""
    command = command_line("benchmarks.tokenizer", args)
    args = with_preset(args, PRESETS)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    embedding_config = ItemEmbeddingConfig(seed=args.seed, steps=args.embedding_steps)
    progress("(a) synthetic catalog: embeddings, then both fits")
    start = time.perf_counter()
    synthetic = quality_rows(synthetic_embeddings(args, embedding_config), args)
    synthetic_seconds = time.perf_counter() - start
    beauty = None
    if BEAUTY.is_file():
        progress("(b) Amazon Beauty: embeddings, then both fits")
        start = time.perf_counter()
        beauty = quality_rows(beauty_embeddings(embedding_config), args)
        beauty_seconds = time.perf_counter() - start
    speed = speed_rows(args)
    lines = [
        "# Tokenizer benchmark", "", f"Command: `{command}`", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs "
        f"(load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end), "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}.", "",
        f"Codes: {args.levels} x {args.codebook}, {args.iterations} iterations per level. "
        "Reconstruction error: sum ||x - x_hat||^2 / sum ||x||^2 over the semantic levels; "
        "collision rate: share of items whose full code another item shares.", "",
    ]
    lines += quality_table(
        f"(a) Synthetic catalog, {args.items:,} items (embeddings + both fits: "
        f"{synthetic_seconds:.0f} s)", synthetic, args.codebook)
    if beauty is None:
        lines += ["## (b) Amazon Beauty", "", f"{BEAUTY} is absent: section skipped.", ""]
    else:
        lines += quality_table(f"(b) Amazon Beauty, 12,101 items (embeddings + both fits: "
                               f"{beauty_seconds:.0f} s)", beauty, args.codebook)
    lines += speed_table(speed, args)
    result = {
        "command": command, "args": asdict(args), "threads": torch.get_num_threads(),
        "load_average": [load_start, os.getloadavg()[0]],
        "synthetic": synthetic, "beauty": beauty, "speed": speed,
    }
    report = write_report(args.results, "tokenizer", args.preset, result, "\n".join(lines))
    return {"synthetic": synthetic, "beauty": beauty, "speed": speed, "results": str(report)}


def main(argv: list[str] | None = None) -> int:
    return study_main("benchmarks.tokenizer", __doc__.splitlines()[0], TokenizerBenchArgs, run,
                      argv)


if __name__ == "__main__":
    sys.exit(main())
