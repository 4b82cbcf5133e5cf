"""Amazon Beauty with TIGER's protocol: OneRec (semantic IDs) and SASRec (item ids) against TIGER.

    python -m benchmarks.beauty [--onerec-steps N] [--sasrec-steps N] [--seed S]
                                [--preset P] [--dropout D] [--repeat-bias | --no-repeat-bias]
                                (OneRec variants of the defaults)
    python -m benchmarks.beauty --sweep-steps 3000
    python -m benchmarks.beauty --render

Writes beauty.md and beauty.json under `--results` (default benchmarks/results); with
`--sweep-steps`, instead beauty_sweep.md and .json: OneRec variants (SWEEP) on validation;
with `--render`, only beauty.md again from a saved beauty.json (no training).

Each model trains once, as `onerec-lab evaluate-offline` trains it with its defaults (the OneRec setting tuned
on the validation split), on the training sequences (every user's items but the last two).
That one model then ranks both held-out targets: the validation targets (each user's second
last item; the split the settings were chosen on) and the test targets (the last item; the
figure compared with TIGER). Both splits share the training data, so a validation figure is
the tuning measure of the very model whose test figure is reported.

Protocol (`trainers.offline_eval`): full ranking over all 12,101 items, histories of at most
20 items, Recall and NDCG at 5 and 10. Both models are shown two ways: ranking all items,
and with each user's history items masked (the S3-Rec code's convention, where SASRec's
published Beauty figures come from). OneRec's top 10 is its trie-constrained beam search,
as generated (TIGER describes no masking) or with history items dropped from its beams.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.study import command_line, progress, study_main
from envs.beauty import SequenceDataset, load_beauty
from onerec_lab.experiment.machine import hardware_description
from onerec_lab.experiment.offline import (
    DEFAULT_STEPS,
    ONEREC_LEARNING_RATE,
    OfflineConfig,
    split_metrics,
    train_ranker,
)
from policies.config import PRESETS
from policies.sasrec import SASRecConfig

RESULTS = Path(__file__).resolve().parent / "results"
BEAUTY = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon-beauty" / "Beauty.txt"
METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
# TIGER (Rajput et al., NeurIPS 2023), Amazon Beauty test split, as issue #4 quotes them.
PUBLISHED = {
    "TIGER (paper)": (0.0454, 0.0321, 0.0648, 0.0384),
}
TIGER = dict(zip(METRICS, PUBLISHED["TIGER (paper)"], strict=True))
TIGER_EXAMPLES = 200_000 * 256  # TIGER's Beauty training as we recall it (200k steps of 256)
# The validation sweep behind the defaults: each variant changes one setting of the chosen
# one (evaluate-offline's defaults) and is ranked on the validation targets only;
# "codebook_scale" multiplies --codebook (so the smoke test's tiny codebooks stay valid).
SWEEP: dict[str, dict[str, Any]] = {
    "chosen (defaults)": {},
    "InfoNCE temperature 0.07": {"embedding_temperature": 0.07},
    "InfoNCE temperature 0.5": {"embedding_temperature": 0.5},
    "balanced RQ-Kmeans": {"balanced": True},
    "learning rate 1e-3": {"learning_rate": 1e-3},
    "no dropout": {"dropout": 0.0},
    "codes from SASRec's item embeddings": {"code_embeddings": "sasrec"},
    "InfoNCE pairs within 3 positions": {"pair_window": 3},
    "item-id embedding added to the input": {"item_id_input": True},
    "no repeat bias": {"repeat_bias": False},
    "0.015B shape (d = 128, 2 + 2 layers)": {"preset": "0.015B"},
    "codebook / 4 (3 x 64 at --codebook 256)": {"codebook_scale": 0.25},
    "codebook x 4 (3 x 1024 at --codebook 256)": {"codebook_scale": 4.0},
}


@dataclass
class BeautyBenchArgs:
    """Arguments of `python -m benchmarks.beauty`."""

    data: str = str(BEAUTY)  # Beauty.txt (one line per user: user id, then item ids in order)
    onerec_steps: int | None = None  # OneRec optimiser steps; None = evaluate-offline's 48,000
    sasrec_steps: int | None = None  # SASRec optimiser steps; None = evaluate-offline's 2,000
    # (in the sweep: the steps of the SASRec whose item table gives one variant its codes)
    seed: int = 0  # seeds embeddings, codes, initialisation, batch order and dropout
    codebook: int = 256  # OneRec codes per level (TIGER's 3 x 256; smaller for smoke tests)
    preset: str | None = None  # OneRec size preset; None = evaluate-offline's default
    dropout: float | None = None  # OneRec training dropout; None = evaluate-offline's default
    repeat_bias: bool | None = None  # OneRec repeat bias (policies.repeat); None = the default
    threads: int = 1  # torch intra-op threads (1: the machine's cores are shared)
    sweep_steps: int = 0  # > 0: instead, the validation sweep (SWEEP) at this many steps
    render: bool = False  # instead, rewrite beauty.md from the --results folder's beauty.json
    results: str = str(RESULTS)  # where beauty[_sweep].md and .json are written
    json: bool = False  # print the result as one JSON object

    def __post_init__(self) -> None:
        for name in ("onerec_steps", "sasrec_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.sweep_steps < 0:
            raise ValueError(f"--sweep-steps must be >= 0 (0: no sweep), got {self.sweep_steps}")
        if self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")


# Buckets of a target item's occurrences in the training sequences: the breakdown that shows
# where each model's hits come from (rare targets are more common on the test split).
POPULARITY_EDGES = (0, 3, 6, 11, 21, 51)  # bucket b holds counts in [edge b, edge b+1)


def popularity_labels(dataset: SequenceDataset, split: str) -> np.ndarray:
    """(U,) bucket index (POPULARITY_EDGES) of each user's `split` target's training count."""
    counts = np.bincount(np.concatenate(dataset.train_sequences), minlength=dataset.num_items)
    targets = (dataset.valid if split == "valid" else dataset.test).targets
    return np.digitize(counts[targets], POPULARITY_EDGES) - 1


def bucket_names() -> list[str]:
    edges = POPULARITY_EDGES
    return [f"{low}-{high - 1}" for low, high in zip(edges[:-1], edges[1:], strict=True)] + [
        f">= {edges[-1]}"]


def measure(model: str, steps: int | None, dataset: SequenceDataset, args: BeautyBenchArgs
            ) -> dict[str, Any]:
    """Train `model` once with evaluate-offline's defaults; rank validation and test."""
    overrides = {name: getattr(args, name) for name in ("preset", "dropout", "repeat_bias")
                 if model == "onerec" and getattr(args, name) is not None}
    settings = OfflineConfig(model=model, steps=steps, seed=args.seed, codebook=args.codebook,
                             **overrides)
    default_learning_rate = (ONEREC_LEARNING_RATE if model == "onerec"
                             else SASRecConfig.learning_rate)
    progress(f"{model}: training {settings.steps:,} steps")
    start = time.perf_counter()
    trained = train_ranker(dataset, settings)
    train_seconds = time.perf_counter() - start
    row: dict[str, Any] = {
        "model": model, "steps": settings.steps, "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate or default_learning_rate, "items": dataset.num_items,
        "final_loss": trained.final_loss,
        **trained.details, "train_seconds": round(train_seconds, 1),
    }
    for split in ("valid", "test"):
        for exclude_history in (False, True):
            progress(f"{model}: ranking the {split} targets"
                     + (" (history masked)" if exclude_history else ""))
            started = time.perf_counter()
            name = split + ("_history_masked" if exclude_history else "")
            row[name] = split_metrics(trained.ranker, dataset, split, exclude_history,
                                      groups=popularity_labels(dataset, split))
            row[name]["seconds"] = round(time.perf_counter() - started, 1)
    if model == "onerec":
        row["settings"] = {field: getattr(settings, field) for field in (
            "preset", "beam", "codebook", "balanced", "embedding_temperature",
            "group_by_length", "dropout", "repeat_bias")}
    return row


def sweep(dataset: SequenceDataset, args: BeautyBenchArgs) -> list[dict[str, Any]]:
    """Each SWEEP variant of OneRec trained for `args.sweep_steps` steps, ranked on the
    validation targets (the test targets stay unseen)."""
    rows = []
    for name, overrides in SWEEP.items():
        options = dict(overrides)
        codebook = max(2, round(args.codebook * options.pop("codebook_scale", 1.0)))
        settings = OfflineConfig(model="onerec", steps=args.sweep_steps, seed=args.seed,
                                 codebook=codebook, code_embedding_steps=args.sasrec_steps,
                                 **options)
        progress(f"sweep: {name}, {settings.steps:,} steps")
        start = time.perf_counter()
        trained = train_ranker(dataset, settings)
        rows.append({"variant": name, "overrides": overrides, "codebook": codebook,
                     "steps": settings.steps,
                     "final_loss": trained.final_loss,
                     "train_seconds": round(time.perf_counter() - start, 1),
                     "valid": split_metrics(trained.ranker, dataset, "valid")})
    return rows


def sweep_report(command: str, rows: list[dict[str, Any]]) -> list[str]:
    """The markdown of beauty_sweep.md."""
    return [
        "# Amazon Beauty: OneRec validation sweep", "", f"Command: `{command}`", "",
        f"Machine: {hardware_description()}, Python {platform.python_version()}.", "",
        "Each variant changes one setting of `onerec-lab evaluate-offline`'s OneRec defaults "
        "and is ranked on the validation targets only (each user's second last item).", "",
        "| variant | steps | Recall@5 | NDCG@5 | Recall@10 | NDCG@10 | final loss "
        "| train wall time |", "|---|---|---|---|---|---|---|---|",
        *(f"| {row['variant']} | {row['steps']:,} | {metric_cells(row['valid'])} "
          f"| {row['final_loss']:.3f} | {row['train_seconds'] / 60:.1f} min |" for row in rows),
    ]


def verdict(metrics: dict[str, float]) -> str:
    """Whether Recall@10 and NDCG@10 are both above TIGER's."""
    above = all(metrics[name] > TIGER[name] for name in ("recall@10", "ndcg@10"))
    return (f"Recall@10 {metrics['recall@10']:.4f}, NDCG@10 {metrics['ndcg@10']:.4f}: "
            + ("above" if above else "NOT above") + " TIGER's 0.0648 and 0.0384")


def metric_cells(values: dict[str, float] | tuple[float, ...]) -> str:
    numbers = values if isinstance(values, tuple) else tuple(values[name] for name in METRICS)
    return " | ".join(f"{value:.4f}" for value in numbers)


def report(command: str, rows: list[dict[str, Any]], load: tuple[float, float],
           hardware: str) -> list[str]:
    """The markdown of beauty.md."""
    onerec = next(row for row in rows if row["model"] == "onerec")
    sasrec = next(row for row in rows if row["model"] == "sasrec")
    variants = (  # (label, row, key of its metrics without the split)
        ("**OneRec, semantic IDs (ours), as generated**", onerec, ""),
        ("OneRec, semantic IDs (ours), history items dropped from the beam", onerec,
         "_history_masked"),
        ("SASRec, item ids (ours), all items ranked", sasrec, ""),
        ("SASRec, item ids (ours), history masked", sasrec, "_history_masked"),
    )
    settings = onerec["settings"]
    lines = [
        "# Amazon Beauty (TIGER's protocol)", "", f"Command: `{command}`", "",
        f"Machine: {hardware}, Python {platform.python_version()}; "
        f"{os.cpu_count()} cores shared with other jobs (load average {load[0]:.1f} at the "
        f"start, {load[1]:.1f} at the end).", "",
        "Protocol: leave-one-out (test target = each user's last item, validation target = "
        "the second last, training = the rest), histories of at most 20 items, each of the "
        f"{onerec['test']['users']:,} users' target ranked among all {onerec['items']:,} items. "
        "OneRec's top 10 is its trie-constrained beam search, as generated (TIGER describes no "
        f"masking) or with the user's history items dropped from its {settings['beam']} beams; "
        "SASRec scores every item, with or without the history items masked (the S3-Rec "
        "code's rule, which SASRec's published Beauty figures follow).", "",
        *repeat_bias_lines(onerec),
        "## Test split", "",
        "| model | Recall@5 | NDCG@5 | Recall@10 | NDCG@10 | steps | train wall time |",
        "|---|---|---|---|---|---|---|",
        *(f"| {name} | {metric_cells(values)} | | |" for name, values in PUBLISHED.items()),
        *(f"| {label} | {metric_cells(row['test' + key])} | {row['steps']:,} "
          f"| {row['train_seconds'] / 60:.1f} min |" for label, row, key in variants),
        "",
        *(f"- OneRec {how} on the test split: {verdict(onerec['test' + key])}; invalid "
          f"generations {onerec['test' + key]['invalid_rate']:.4f}." for how, key in (
              ("as generated", ""), ("with history items dropped", "_history_masked"))),
        "",
        "## Validation split (the same trained models)", "",
        "| model | Recall@5 | NDCG@5 | Recall@10 | NDCG@10 |", "|---|---|---|---|---|",
        *(f"| {label} | {metric_cells(row['valid' + key])} |" for label, row, key in variants),
        "",
        *popularity_section(onerec, sasrec),
        "## Budget and settings", "",
        f"- OneRec: {onerec['parameters']:,} parameters (preset `{settings['preset']}`: "
        f"{preset_shape(settings['preset'])}), codes "
        f"{' x '.join(map(str, onerec['codebook_sizes']))} (RQ-Kmeans"
        f"{', balanced' if settings['balanced'] else ''} on item embeddings trained by InfoNCE "
        f"at temperature {settings['embedding_temperature']} on consecutive training pairs; "
        "the last level only tells colliding items apart), "
        f"{onerec['training_pairs']:,} (history, next item) training pairs, "
        f"{onerec['steps']:,} AdamW steps of {onerec['batch_size']} "
        f"{'(one history length per batch)' if settings['group_by_length'] else ''}, "
        f"dropout {settings['dropout']}, beam {settings['beam']}. Wall time {onerec['train_seconds']:.0f} s for embeddings, "
        f"codes and training; ranking the test split {onerec['test']['seconds']:.0f} s. "
        f"Final training loss {onerec['final_loss']:.3f}.",
        f"- SASRec: {sasrec['steps']:,} steps of {sasrec['batch_size']} windows, "
        f"width {sasrec['width']}, {sasrec['layers']} layers, {sasrec['negatives']} sampled "
        f"negatives; {sasrec['train_seconds']:.0f} s.",
        chosen_or_variant(onerec),
    ]
    if not all(onerec["test"][name] > TIGER[name] for name in ("recall@10", "ndcg@10")):
        lines += ["", *shortfall(onerec, sasrec)]
    return lines


def repeat_bias_lines(onerec: dict[str, Any]) -> list[str]:
    """What the learned repeat bias is and what it learned, when the run used it."""
    learned = onerec.get("repeat_bias")
    if not learned:
        return []
    return [
        "OneRec's decoder here has the learned repeat bias (`--repeat-bias`, policies/repeat.py): "
        "per code level, one logit offset for codes that continue one of the user's history "
        "items and one for codes that commit to history items only, trained with the rest of "
        "the model by next-token prediction on the training pairs, and part of every "
        "probability it reports (training, `log_prob`, beam search). "
        + (f"{onerec['training_targets_in_history']:,} of the {onerec['training_pairs']:,} "
           "training targets repeat an item of their history. "
           if "training_targets_in_history" in onerec else "")
        + "The model learned offsets of "
        f"{', '.join(f'{b:+.2f}' for b in learned['continues'])} (continues, levels 1 to "
        f"{len(learned['continues'])}) and {', '.join(f'{b:+.2f}' for b in learned['commits'])} "
        "(commits; on the last level both marks fall on the same codes, so their offsets "
        "add). Its \"as generated\" lists are what this model generates, with no filter "
        "after the search; the history-dropped row still filters them.", "",
    ]


def onerec_settings(onerec: dict[str, Any]) -> dict[str, Any]:
    """A saved run's OneRec settings; runs saved before the repeat bias existed ran without it."""
    return {"repeat_bias": False, **onerec["settings"]}


def chosen_or_variant(onerec: dict[str, Any]) -> str:
    """The last budget line: how the OneRec settings were chosen, or what a variant run changed."""
    settings = onerec_settings(onerec)
    defaults = {field.name: field.default for field in dataclasses.fields(OfflineConfig)}
    defaults["steps"] = DEFAULT_STEPS["onerec"]
    used = {**settings, "steps": onerec["steps"]}
    names = [name for name in ("preset", "dropout", "repeat_bias", "steps")
             if used[name] != defaults[name]]
    if names:
        return (f"- A variant run: {', '.join(f'{name} {used[name]}' for name in names)} "
                f"instead of evaluate-offline's current default "
                f"({', '.join(f'{name} {defaults[name]}' for name in names)}); "
                + ("beauty_repeat.md" if "repeat_bias" in names else "beauty_steps.md")
                + " compares it with the chosen setting on the validation split.")
    return (
        f"- The OneRec settings (InfoNCE temperature {settings['embedding_temperature']}, "
        f"{'balanced' if settings['balanced'] else 'plain'} RQ-Kmeans, learning rate "
        f"{onerec['learning_rate']:g}, the `{settings['preset']}` preset, dropout "
        f"{settings['dropout']}, {onerec['steps']:,} steps"
        + (", the repeat bias" if settings["repeat_bias"] else "")
        + ") were chosen on the validation split; the validation figures above are those of "
        "the reported model. The variants against which they were chosen: `python -m "
        "benchmarks.beauty --sweep-steps 3000` (beauty_sweep.md), for the number of steps "
        "and dropout the longer runs in beauty_steps.md"
        + (", for the repeat bias beauty_repeat.md" if settings["repeat_bias"] else "")
        + "."
    )


def preset_shape(name: str) -> str:
    """A preset's shape in words, e.g. "d = 64, 2 + 2 layers, FFN 128, dense"."""
    config = PRESETS[name]
    where = " and ".join(part for part, used in (("encoder", config.moe_in_encoder),
                                                 ("decoder", config.moe_in_decoder)) if used)
    experts = (f"{where} MoE of {config.num_experts} experts, {config.experts_active} active"
               if config.num_experts and where else "dense")
    return (f"d = {config.d_model}, {config.encoder_layers} + {config.decoder_layers} layers, "
            f"FFN {config.ffn_hidden}, {experts}")


def popularity_section(onerec: dict[str, Any], sasrec: dict[str, Any]) -> list[str]:
    """Recall@10 per bucket of the target's training count, both models, both splits."""
    names = bucket_names()

    def cells(groups: dict[int, dict[str, float]], key: str, total: int) -> str:
        values = [groups.get(bucket, {}).get(key) for bucket in range(len(names))]
        if key == "users":
            return " | ".join(f"{(value or 0) / total:.1%}" for value in values)
        return " | ".join("-" if value is None else f"{value:.4f}" for value in values)

    lines = [
        "## Recall@10 by how often the target occurs in training", "",
        "Buckets of the target item's occurrences in the training sequences; the first rows "
        "give each split's share of targets per bucket.", "",
        f"| | split | {' | '.join(names)} |", "|---|---|" + "---|" * len(names),
    ]
    for split in ("valid", "test"):
        users = onerec[split]["users"]
        lines.append(f"| share of targets | {split} | "
                     f"{cells(onerec[split]['by_group'], 'users', users)} |")
    for label, row in (("OneRec, as generated", onerec), ("SASRec, all items ranked", sasrec)):
        for split in ("valid", "test"):
            lines.append(f"| {label} | {split} | "
                         f"{cells(row[split]['by_group'], 'recall@10', row[split]['users'])} |")
    return [*lines, ""]


def pooled_recall(groups: dict[int, dict[str, float]], buckets: range) -> tuple[float, int]:
    """Recall@10 over the users of some popularity buckets, and how many users they are."""
    members = [groups[bucket] for bucket in buckets if bucket in groups]
    users = sum(group["users"] for group in members)
    hits = sum(group["recall@10"] * group["users"] for group in members)
    return (hits / users if users else float("nan")), users


def popularity_reading(onerec: dict[str, Any], sasrec: dict[str, Any]) -> str:
    """One sentence on where OneRec's test hits come from, against SASRec's."""
    rare, frequent = range(0, 3), range(len(POPULARITY_EDGES) - 1, len(POPULARITY_EDGES))
    below, above = POPULARITY_EDGES[3], POPULARITY_EDGES[-1]
    share = {split: pooled_recall(onerec[split]["by_group"], rare)[1] / onerec[split]["users"]
             for split in ("valid", "test")}
    onerec_rare, sasrec_rare = (pooled_recall(row["test"]["by_group"], rare)[0]
                                for row in (onerec, sasrec))
    onerec_frequent, sasrec_frequent = (pooled_recall(row["test"]["by_group"], frequent)[0]
                                        for row in (onerec, sasrec))
    return (
        f"- Rare targets: on test targets seen fewer than {below} times in training "
        f"({share['test']:.0%} of test targets, {share['valid']:.0%} of validation targets), "
        f"OneRec's Recall@10 is {onerec_rare:.4f} against SASRec's {sasrec_rare:.4f}; on "
        f"targets seen {above} times or more, {onerec_frequent:.4f} against "
        f"{sasrec_frequent:.4f} (table above). The generative model's hits concentrate on "
        "frequent items, and the test split holds more rare targets than validation."
    )


def shortfall(onerec: dict[str, Any], sasrec: dict[str, Any]) -> list[str]:
    """What we think separates this OneRec run from TIGER's figures."""
    def drop(row: dict[str, Any]) -> float:
        return 1 - row["test"]["recall@10"] / row["valid"]["recall@10"]

    return [
        "## Where OneRec falls short of TIGER (our reading)", "",
        popularity_reading(onerec, sasrec),
        f"- Budget: {onerec['steps']:,} steps of {onerec['batch_size']} examples "
        f"({onerec['steps'] * onerec['batch_size'] / onerec['training_pairs']:.0f} epochs) of a "
        f"{onerec['parameters'] / 1e6:.2f} M-parameter model on one shared CPU thread; TIGER's "
        "paper (as we recall it; not re-checked here) trains a ~13 M-parameter T5 (4 + 4 layers, d = 128, dropout 0.1) for 200k steps "
        f"of 256 on Beauty, {TIGER_EXAMPLES / (onerec['steps'] * onerec['batch_size']):.0f} "
        f"times as many examples (validation Recall@10 {onerec['valid']['recall@10']:.4f} at "
        f"{onerec['steps']:,} steps; the other step counts tried are in beauty_steps.md).",
        "- Semantic IDs: TIGER quantises Sentence-T5 embeddings of each item's text (title, "
        "brand, category, price). Beauty.txt carries no item text, so our codes come from "
        "collaborative embeddings of consecutive training pairs; items rare in training get "
        "poorly placed codes.",
        f"- Validation to test: Recall@10 drops by {drop(onerec):.0%} for OneRec against "
        f"{drop(sasrec):.0%} for SASRec on the same split, so the {onerec['steps']:,}-step "
        "setting chosen on validation generalises less well to the later test target than "
        "SASRec does.",
    ]


def load_results(path: Path, needed_by: str = "--render") -> dict[str, Any]:
    """A saved beauty.json, with the popularity buckets' keys back to ints (JSON made them
    strings); a missing or malformed file is a clear error naming what `needed_by` it."""
    try:
        saved = json.loads(path.read_text())
        for row in saved["results"]:
            for metrics in row.values():
                if isinstance(metrics, dict) and "by_group" in metrics:
                    metrics["by_group"] = {int(k): v for k, v in metrics["by_group"].items()}
        missing = {"command", "load", "hardware"} - set(saved)
        if missing:
            raise KeyError(", ".join(sorted(missing)))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SystemExit(f"{needed_by} needs {path} as a benchmark run wrote it (run "
                         f"`python -m benchmarks.beauty` first); reading it failed: {error!r}"
                         ) from error
    return saved


def run(args: BeautyBenchArgs) -> dict[str, Any]:
    """The benchmark (or its sweep, or the re-rendered report) at `args`; returns its figures
    and the path of the markdown it wrote."""
    torch.set_num_threads(args.threads)
    command = command_line("benchmarks.beauty", args)
    results = Path(args.results)
    if args.render:
        saved = load_results(results / "beauty.json")
        lines = report(saved["command"], saved["results"], tuple(saved["load"]),
                       saved["hardware"])
        (results / "beauty.md").write_text("\n".join(lines) + "\n")
        return {"results": str(results / "beauty.md")}
    dataset = load_beauty(args.data, max_history=20)
    results.mkdir(parents=True, exist_ok=True)
    if args.sweep_steps:
        rows = sweep(dataset, args)
        lines = sweep_report(command, rows)
        (results / "beauty_sweep.md").write_text("\n".join(lines) + "\n")
        (results / "beauty_sweep.json").write_text(json.dumps({
            "command": command, "hardware": hardware_description(), "results": rows,
        }, indent=2))
        return {"sweep": rows, "results": str(results / "beauty_sweep.md")}
    load_start = os.getloadavg()[0]
    rows = [measure("onerec", args.onerec_steps, dataset, args),
            measure("sasrec", args.sasrec_steps, dataset, args)]
    load = (load_start, os.getloadavg()[0])
    lines = report(command, rows, load, hardware_description())
    (results / "beauty.md").write_text("\n".join(lines) + "\n")
    (results / "beauty.json").write_text(json.dumps({
        "command": command, "hardware": hardware_description(),
        "arguments": dataclasses.asdict(args), "default_steps": DEFAULT_STEPS, "load": load,
        "published": {name: dict(zip(METRICS, values, strict=True))
                      for name, values in PUBLISHED.items()},
        "results": rows,
    }, indent=2, default=str))
    return {"models": rows, "results": str(results / "beauty.md")}


def main(argv: list[str] | None = None) -> int:
    return study_main("benchmarks.beauty", __doc__.splitlines()[0], BeautyBenchArgs, run, argv)


if __name__ == "__main__":
    sys.exit(main())
