"""Scaling study: does the held-out next-token loss fall with model size?

    python -m benchmarks.scaling [--preset full|smoke] [--results DIR] [--steps N] ...

The report shows pre-training loss falling from its 0.015B to its 2.633B model (no law
fitted; OneRec-V2 fits L = 3.13 + 3660 / N^0.489). Those shapes do not train on a CPU, so
this study trains a geometric ladder of small dense OneRec shapes (encoder and decoder of
equal depth, FFN 2 x width) on the same data, with the same codes, for the same steps and
batch (the same examples seen), and measures each on held-out sessions (`benchmarks.heldout`:
users never seen in training). A power law L(N) = a N^-alpha + c is fitted by numpy least
squares (a grid over c, log-log regression for a and alpha at each c); if the fit puts c at
the edge of its range, L(N) = a N^-alpha (c = 0) is used instead and the report says so.

Data: a synthetic catalog, item embeddings (content + co-engaged pairs) and balanced
RQ-Kmeans codes as `quickstart` builds them; sessions logged by the cascade.

Writes `scaling<suffix>.md`, `.json`, `.png` (held-out loss against parameters with the fit)
and `scaling_curves<suffix>.png` (training loss per step) under `--results`; suffix "" for the
full preset, "_smoke" for the smoke one.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from benchmarks.heldout import (
    LIFELONG_QUERIES,
    SESSION_CONFIG,
    SplitExamples,
    cascade_logs,
    held_out_loss,
    split_sessions,
)
from benchmarks.study import command_line, progress, study_main, with_preset, write_study
from envs.catalog import CatalogConfig, generate_synthetic_catalog
from onerec_lab.experiment.pretraining import logged_model_settings
from policies.codec import SemanticIdCodec
from policies.config import OneRecConfig
from policies.item_embeddings import ItemEmbeddingConfig, train_item_embeddings
from policies.onerec import build_policy
from policies.rq_kmeans import RQKMeansConfig
from policies.tokenizer import build_semantic_ids
from trainers.pretrain import PretrainConfig, pretrain

RESULTS = Path(__file__).resolve().parent / "results"
C_GRID = 4000  # grid points for c in [0, min loss)


@dataclass(frozen=True)
class ScalingPreset:
    """Sizes of one run of the study (each an option of `ScalingBenchArgs` too)."""

    items: int  # synthetic catalog size
    codebook: int  # codes per level, 3 levels
    embedding_steps: int  # item-embedding optimiser steps of the tokenizer
    users: int  # logged sessions (one user each) of the cascade
    cascade_steps: int  # retrieval and ranking steps of the logging cascade
    widths: tuple[int, ...]  # d_model of each shape
    depths: tuple[int, ...]  # encoder (= decoder) layers of each shape
    steps: int  # optimizer steps of every shape (the same examples seen)
    batch_size: int  # examples per step


PRESETS = {
    # quickstart's catalog and codes (32^3 addresses 3k items); the cascade's default steps
    "full": ScalingPreset(items=3_000, codebook=32, embedding_steps=300, users=800,
                          cascade_steps=300, widths=(16, 32, 48, 64, 96, 128),
                          depths=(1, 1, 2, 2, 3, 4), steps=300, batch_size=64),
    "smoke": ScalingPreset(items=400, codebook=8, embedding_steps=20, users=40, cascade_steps=10,
                           widths=(8, 16, 24), depths=(1, 1, 1), steps=4, batch_size=16),
}


@dataclass
class ScalingBenchArgs:
    """Arguments of `python -m benchmarks.scaling`."""

    preset: Literal["full", "smoke"] = "full"  # full: the measured study; smoke: tiny sizes,
    # a minute (results are not comparable)
    results: str = str(RESULTS)  # where scaling*.md / .json / .png are written
    json: bool = False  # print the result as one JSON object
    items: int | None = None  # synthetic catalog size (None: the preset's)
    codebook: int | None = None  # codes per level, 3 levels (None: the preset's)
    embedding_steps: int | None = None  # item-embedding optimiser steps of the tokenizer
    # (None: the preset's)
    users: int | None = None  # logged sessions (one user each) of the cascade (None: the
    # preset's)
    cascade_steps: int | None = None  # retrieval and ranking steps of the logging cascade
    # (None: the preset's)
    requests: int = 10  # most requests per logged session
    held_out_share: float = 0.2  # share of sessions held out for evaluation
    widths: tuple[int, ...] | None = None  # d_model of each shape (None: the preset's)
    depths: tuple[int, ...] | None = None  # encoder (= decoder) layers of each shape (None:
    # the preset's)
    steps: int | None = None  # optimizer steps of every shape, the same examples seen (None:
    # the preset's)
    batch_size: int | None = None  # examples per step (None: the preset's)
    learning_rate: float = 1e-3  # AdamW peak step size of every shape (the lab's default)
    threads: int = 1  # torch intra-op threads (1: the cores are shared)
    seed: int = 0  # seeds the world, the codes, the split, the weights and the batches

    def __post_init__(self) -> None:
        if self.widths is None or self.depths is None:
            return  # checked once the preset fills them in
        if len(self.widths) != len(self.depths) or len(self.widths) < 2:
            raise ValueError(
                f"--widths and --depths must list the same number (>= 2) of shapes, got "
                f"{len(self.widths)} widths and {len(self.depths)} depths"
            )


def shape_config(width: int, depth: int, **overrides: Any) -> OneRecConfig:
    """A dense shape: `depth` encoder and decoder layers, FFN 2 x width (the report's ratio)."""
    return OneRecConfig(d_model=width, num_heads=2 if width < 32 else 4, encoder_layers=depth,
                        decoder_layers=depth, ffn_hidden=2 * width, num_experts=0,
                        experts_active=0, moe_in_decoder=False,
                        lifelong_queries=LIFELONG_QUERIES, **overrides)


def semantic_codes(catalog, args: ScalingBenchArgs) -> SemanticIdCodec:
    """Quickstart's tokenizer: content + co-engaged-pair embeddings, balanced RQ-Kmeans."""
    pairs = catalog.coengaged_pairs(10 * args.items, np.random.default_rng(args.seed))
    embeddings = train_item_embeddings(
        args.items, pairs, ItemEmbeddingConfig(steps=args.embedding_steps, seed=args.seed),
        content=catalog.content)
    config = RQKMeansConfig(codebook_sizes=(args.codebook,) * 3, balanced=True, seed=args.seed)
    return build_semantic_ids(embeddings, config).codec


def train_shape(width: int, depth: int, codec: SemanticIdCodec, split: SplitExamples,
                logs, args: ScalingBenchArgs) -> dict[str, Any]:
    """Pre-train one shape on the training sessions; its held-out figures."""
    overrides, item_features = logged_model_settings(logs)
    config = shape_config(width, depth, num_items=codec.num_items,
                          codebook_sizes=codec.codebook_sizes, **overrides)
    policy = build_policy(config, seed=args.seed)
    policy.set_item_codes(codec.item_codes)
    policy.set_item_features(**item_features)
    parameters = sum(parameter.numel() for parameter in policy.parameters())
    embedding = sum(module.weight.numel() for module in policy.modules()
                    if isinstance(module, nn.Embedding))
    started = time.perf_counter()
    result = pretrain(policy, split.train, PretrainConfig(
        learning_rate=args.learning_rate, warmup_steps=max(1, args.steps // 10),
        max_steps=args.steps, per_device_train_batch_size=args.batch_size, seed=args.seed,
        progress=False, device="cpu"))
    held_out = held_out_loss(policy, split.held_out)
    return {"width": width, "depth": depth, "parameters": parameters,
            "non_embedding_parameters": parameters - embedding,
            "train_final_loss": result.final_loss, "held_out_loss": held_out["loss"],
            "held_out_level_losses": held_out["level_losses"],
            "held_out_item_nll": held_out["item_nll"], "losses": result.losses,
            "seconds_per_step": result.train_seconds / args.steps,
            "seconds": time.perf_counter() - started}


def fit_power_law(parameters: np.ndarray, losses: np.ndarray) -> dict[str, Any]:
    """L(N) = a N^-alpha + c by least squares in L over a grid of c (log-log regression for
    a, alpha at each c); c = 0 when the best c lies at the grid's edge or points are < 4."""
    log_n = np.log(parameters)

    def regress(offset: float) -> tuple[float, float, float]:
        slope, intercept = np.polyfit(log_n, np.log(losses - offset), 1)
        predicted = offset + np.exp(intercept) * parameters ** slope
        return float(np.exp(intercept)), float(-slope), float(((predicted - losses) ** 2).sum())

    a, alpha, sse = regress(0.0)
    plain = {"form": "a * N^-alpha", "a": a, "alpha": alpha, "c": 0.0, "sse": sse}
    if len(losses) < 4:
        return {**plain, "why": f"{len(losses)} points: too few for three parameters"}
    grid = np.linspace(0.0, losses.min(), C_GRID, endpoint=False)[1:]
    fits = [(offset, *regress(offset)) for offset in grid]
    c, a, alpha, sse = min(fits, key=lambda fit: fit[3])
    if c in (grid[0], grid[-1]) or alpha <= 0:
        return {**plain, "why": f"the best offset c = {c:.4f} lies at the edge of [0, min L) "
                                "(or alpha <= 0): the offset is not identified"}
    return {"form": "a * N^-alpha + c", "a": a, "alpha": alpha, "c": float(c), "sse": sse,
            "plain": plain, "why": "the offset c lies inside [0, min L)"}


def plot(rows: list[dict[str, Any]], fit: dict[str, Any], path: Path) -> None:
    """The fit at `path` (scaling<suffix>.png), the training curves beside it
    (scaling_curves<suffix>.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parameters = np.array([row["parameters"] for row in rows], dtype=float)
    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    axis.plot(parameters, [row["held_out_loss"] for row in rows], "o", color="#C44E52",
              label="held-out sessions")
    axis.plot(parameters, [row["train_final_loss"] for row in rows], "s", color="#999999",
              label="training (mean of last 10 steps)")
    grid = np.geomspace(parameters.min() / 1.2, parameters.max() * 1.2, 200)
    label = (f"fit: $L = {fit['a']:.3g}\\, N^{{-{fit['alpha']:.3g}}}"
             + (f" + {fit['c']:.3f}$" if fit["c"] else "$"))
    axis.plot(grid, fit["a"] * grid ** -fit["alpha"] + fit["c"], "-", color="#4C72B0",
              label=label)
    for row in rows:
        axis.annotate(f"{row['depth']}+{row['depth']} layers, d={row['width']}", (row["parameters"], row["held_out_loss"]),
                      textcoords="offset points", xytext=(4, 4), fontsize=7)
    axis.set_xscale("log")
    axis.set_xlabel("parameters N (count, log scale)")
    axis.set_ylabel("next-token loss (nats per code)")
    axis.set_title("OneRec pre-training loss against model size (same data and steps)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(rows)))
    for row, colour in zip(rows, colours, strict=True):
        losses = np.asarray(row["losses"])
        window = min(10, len(losses))
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        axis.plot(np.arange(window, len(losses) + 1), smooth, color=colour,
                  label=f"{row['depth']}+{row['depth']} layers, d={row['width']} "
                        f"({row['parameters'] / 1e6:.2f} M parameters)")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel(f"training loss (nats per code, mean of {window} steps)")
    axis.set_title("Training curves of the scaling ladder")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path.with_name(path.name.replace("scaling", "scaling_curves", 1)), dpi=110)
    plt.close(figure)


def reading_notes(rows: list[dict[str, Any]], fit: dict[str, Any],
                  codec_levels: int) -> list[str]:
    """Where the fall happens (per level, between the largest shapes) and what the fit says."""
    first, last, before_last = rows[0], rows[-1], rows[-2]
    levels = ", ".join(f"level {level + 1} {small:.3f} -> {large:.3f}" for level, (small, large)
                       in enumerate(zip(first["held_out_level_losses"],
                                        last["held_out_level_losses"], strict=True)))
    notes = [
        f"- Per level, smallest -> largest shape: {levels} (nats per code). Level 1 is the "
        "item's coarse cluster (the user's broad taste); later levels narrow it down within "
        "the cluster" + (", and the last is the codec's rank among items sharing 3 codes."
                         if codec_levels > 3 else "."),
        f"- The two largest shapes differ by {before_last['held_out_loss'] - last['held_out_loss']:.4f} "
        f"nats per code for {last['parameters'] / before_last['parameters']:.1f}x the "
        f"parameters; the smallest two by {first['held_out_loss'] - rows[1]['held_out_loss']:.4f}.",
    ]
    if fit["c"]:
        notes.append(
            f"- The fitted floor c = {fit['c']:.4f} lies {last['held_out_loss'] - fit['c']:.4f} "
            "below the largest shape's loss: at this data and step budget the ladder is close "
            f"to saturating, and alpha = {fit['alpha']:.3g} is set by the small shapes' steep "
            "fall; it is not a stable exponent, only the direction is.")
    return notes


def report_lines(command: str, args: ScalingBenchArgs, rows: list[dict[str, Any]],
                 fit: dict[str, Any], facts: dict[str, Any], suffix: str) -> list[str]:
    held = [row["held_out_loss"] for row in rows]
    falls = all(later < earlier for earlier, later in zip(held, held[1:], strict=False))
    change = held[-1] - held[0]
    ratio = rows[-1]["parameters"] / rows[0]["parameters"]
    codec_levels = len(facts["codebook_sizes"])
    if fit["alpha"] > 0 and change < 0:
        verdict = (f"the held-out loss falls with size ({held[0]:.4f} -> {held[-1]:.4f} nats "
                   f"per code over a {ratio:.1f}x range of parameters; "
                   f"{'monotonically' if falls else 'NOT monotonically'}), the direction the "
                   "report shows from 0.015B to 2.633B.")
    else:
        verdict = (f"the held-out loss does NOT fall with size here ({held[0]:.4f} -> "
                   f"{held[-1]:.4f} nats per code over a {ratio:.1f}x range of parameters); "
                   "this contradicts the direction the report shows from 0.015B to 2.633B.")
    fit_text = (f"L(N) = {fit['a']:.4g} * N^-{fit['alpha']:.4g}"
                + (f" + {fit['c']:.4f}" if fit["c"] else "")
                + f" (form `{fit['form']}`; {fit['why']}; sum of squared errors "
                f"{fit['sse']:.3g})")
    if "plain" in fit:
        plain = fit["plain"]
        fit_text += (f". Without c: L(N) = {plain['a']:.4g} * N^-{plain['alpha']:.4g} "
                     f"(sum of squared errors {plain['sse']:.3g})")
    return [
        "# Scaling: held-out pre-training loss against model size", "",
        f"Command: `{command}`", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs "
        f"(load average {facts['load'][0]:.1f} at the start, {facts['load'][1]:.1f} at the "
        f"end), {args.threads} torch thread(s), torch {torch.__version__}, Python "
        f"{platform.python_version()}. Wall time of the whole study: "
        f"{facts['wall_seconds']:.0f} s (world and codes {facts['setup_seconds']:.0f} s).", "",
        f"**Answer**: {verdict}", "",
        f"![held-out loss against parameters](scaling{suffix}.png)", "",
        "## Set-up", "",
        f"- World: synthetic catalog of {args.items:,} items; codes 3 x {args.codebook} "
        "(item embeddings on content + co-engaged pairs, balanced RQ-Kmeans, as quickstart), "
        "the same for every shape.",
        f"- Data: {args.users} sessions logged by the cascade (fitted on popularity-policy "
        f"logs); {facts['held_out_sessions']} sessions ({args.held_out_share:.0%}) held out: "
        f"{facts['train_examples']:,} training and {facts['held_out_examples']:,} held-out "
        "high-quality exposures. Pathways shortened to 20 short-term, "
        f"{SESSION_CONFIG.positive_length} positive, {SESSION_CONFIG.lifelong_length} "
        f"lifelong entries ({LIFELONG_QUERIES} learned queries) to fit a CPU.",
        f"- Training: every shape {args.steps} AdamW steps of {args.batch_size} examples "
        f"({args.steps * args.batch_size:,} examples, "
        f"{args.steps * args.batch_size / facts['train_examples']:.1f} passes), peak learning "
        f"rate {args.learning_rate:g}, warm-up {max(1, args.steps // 10)} steps then cosine; "
        f"seed {args.seed}, one run per shape.",
        "- Shapes: dense (no MoE), encoder depth = decoder depth, FFN 2 x width, 2 heads below "
        "width 32 and 4 from it. Parameters count everything, embedding tables included "
        "(static fields, creators, categories, code tables); the non-embedding count is "
        "listed too.",
        f"- Loss: next-token cross-entropy averaged over the {codec_levels} code levels "
        f"(codec {' x '.join(map(str, facts['codebook_sizes']))}: "
        + ("3 semantic levels and the codec's disambiguation level for colliding items"
           if codec_levels > 3 else "no collisions, so no disambiguation level")
        + "), nats per code, on every held-out exposure; item NLL = the sum over levels "
        "(nats per item).", "",
        "## Results", "",
        "| shape (layers per side, width) | parameters | non-embedding | training loss "
        "| **held-out loss** | held-out per level | held-out item NLL | s / step |",
        "|---|---|---|---|---|---|---|---|",
        *(f"| {row['depth']} x d{row['width']} | {row['parameters']:,} "
          f"| {row['non_embedding_parameters']:,} | {row['train_final_loss']:.4f} "
          f"| **{row['held_out_loss']:.4f}** "
          f"| {' / '.join(f'{value:.3f}' for value in row['held_out_level_losses'])} "
          f"| {row['held_out_item_nll']:.3f} | {row['seconds_per_step']:.2f} |" for row in rows),
        "",
        f"Fit on held-out loss against total parameters: {fit_text}.", "",
        f"![training curves](scaling_curves{suffix}.png)", "",
        "## Reading it", "",
        *reading_notes(rows, fit, codec_levels),
        "- The report's models are 0.015B to 2.633B parameters trained on production logs; "
        "these are 0.1 M to a few M parameters on a synthetic world, so only the direction "
        "is comparable, not the exponent (OneRec-V2's alpha = 0.489 is for decoder-only "
        "models on real data, with N counted differently).",
        "- One seed per shape: differences between neighbouring shapes smaller than the "
        "seed-to-seed spread (not measured here) are not evidence.",
        "- Same steps for every shape means the larger shapes are further from convergence "
        "relative to their capacity; the loss floor c also absorbs the world's irreducible "
        "noise (which exposure a user engages with is random in the simulator).",
    ]


def run(args: ScalingBenchArgs) -> dict[str, Any]:
    """The study at `args`; writes its report and returns its figures and the report's path."""
    command = command_line("benchmarks.scaling", args)
    args = with_preset(args, PRESETS)
    torch.set_num_threads(args.threads)
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    progress("world: catalog, semantic IDs, cascade logs")
    catalog = generate_synthetic_catalog(CatalogConfig(num_items=args.items), seed=args.seed)
    codec = semantic_codes(catalog, args)
    logs = cascade_logs(catalog, args.users, args.requests, args.seed, args.cascade_steps)
    split = split_sessions(logs, args.held_out_share, args.seed)
    setup_seconds = time.perf_counter() - started
    rows = []
    for width, depth in zip(args.widths, args.depths, strict=True):
        progress(f"shape {depth} x d{width}")
        rows.append(train_shape(width, depth, codec, split, logs, args))
        progress(f"  held-out loss {rows[-1]['held_out_loss']:.4f} "
                 f"({rows[-1]['parameters']:,} parameters, {rows[-1]['seconds']:.0f} s)")
    fit = fit_power_law(np.array([row["parameters"] for row in rows], dtype=float),
                        np.array([row["held_out_loss"] for row in rows]))
    facts = {"load": (load_start, os.getloadavg()[0]), "setup_seconds": setup_seconds,
             "wall_seconds": time.perf_counter() - started,
             "codebook_sizes": list(codec.codebook_sizes),
             "held_out_sessions": split.held_out_sessions,
             "train_examples": split.train.num_examples,
             "held_out_examples": split.held_out.num_examples}
    result = {"command": command, "args": asdict(args), "machine": platform.machine(),
              "cpu_cores": os.cpu_count(), "threads": args.threads, **facts, "fit": fit,
              "results": rows}
    report = write_study(
        args.results, "scaling", args.preset, result, lambda path: plot(rows, fit, path),
        lambda suffix: "\n".join(report_lines(command, args, rows, fit, facts, suffix)) + "\n")
    return {"shapes": rows, "fit": fit, "results": str(report)}


def main(argv: list[str] | None = None) -> int:
    return study_main("benchmarks.scaling", __doc__.splitlines()[0], ScalingBenchArgs, run, argv)


if __name__ == "__main__":
    sys.exit(main())
