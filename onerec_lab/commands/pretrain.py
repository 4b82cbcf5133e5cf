"""`onerec-lab pretrain`: next-token pre-training of OneRec on logged sessions (or Beauty).

Data: a logged-sessions folder (`onerec-lab simulate --out DIR`; every high-quality exposure
is an example) or, with `--data`, a Beauty.txt-format file (history -> next item).

Semantic IDs: `--codec`, else `codec.safetensors` in the logs folder, else the one a previous
run saved in `--out`; otherwise they are built here (item embeddings trained on the catalog's
content and the consecutive positives of the logs, then balanced residual k-means with
`--codebook` codes per level, 3 levels) and saved to `--out/codec.safetensors`.

`--out` receives the checkpoint, the codec and TensorBoard logs; a run whose `--out` holds a
checkpoint resumes it.

Data-parallel (gloo on CPU, NCCL on GPUs; `--batch-size` is per process):

    torchrun --standalone --nproc_per_node=2 --local-ranks-filter=0 \
        -m onerec_lab.cli -- pretrain --logs DIR --out CKPT

The `--` keeps torchrun from reading `--logs` as an abbreviation of its own `--logs-specs`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from torch import Tensor

from envs.beauty import load_beauty
from envs.logs import LoggedSessions
from onerec_lab.commands.evaluate_offline import hardware_description, next_item_examples
from policies.cascade import CatalogFeatures
from policies.codec import SemanticIdCodec
from policies.config import PRESETS, config_for
from policies.item_embeddings import ItemEmbeddingConfig, consecutive_pairs, train_item_embeddings
from policies.onerec import build_policy
from policies.rq_kmeans import RQKMeansConfig
from policies.tokenizer import build_semantic_ids
from trainers.pretrain import TENSORBOARD_DIR, PretrainConfig, pretrain, process_rank
from trainers.pretrain_data import (
    ExampleSource,
    HistoryExamples,
    LoggedExamples,
    QualityFilter,
    positive_sequences,
)

CODEC_FILE = "codec.safetensors"
LEVELS = 3  # semantic-ID levels of a codec built here, as in OneRec
DURATION_BUCKETS = 16  # equal-frequency duration buckets of the duration side feature
HISTORY_LENGTH = 20  # Beauty histories: TIGER's last 20 items (the short-term pathway)


@dataclass
class PretrainArgs:
    """Arguments of `onerec-lab pretrain`."""

    out: str  # folder for the checkpoint, codec and TensorBoard logs; resumed from if it has one
    preset: str = "tiny"  # model shape (policies.config.PRESETS): tiny, 0.015B, 0.121B, ...
    logs: str | None = None  # a logged-sessions folder (onerec-lab simulate --out DIR)
    data: str | None = None  # instead of --logs: a Beauty.txt-format file (history -> next item)
    codec: str | None = None  # a codec file; default: the logs' or --out's codec.safetensors
    codebook: int = 64  # codes per level of a codec built here; 64^3 addresses 5k-item catalogs
    embedding_steps: int = 300  # item-embedding optimiser steps of a codec built here
    steps: int = PretrainConfig.max_steps  # optimizer steps of the whole run
    seed: int = 0  # seeds the weights, a built codec and the batch order
    batch_size: int = PretrainConfig.per_device_train_batch_size  # examples per step and process
    learning_rate: float = PretrainConfig.learning_rate  # AdamW peak step size
    warmup_steps: int = PretrainConfig.warmup_steps  # linear warm-up before the cosine decay
    behaviours: tuple[str, ...] = QualityFilter.behaviours  # a logged exposure is a target if any fired
    min_watch_ratio: float = QualityFilter.min_watch_ratio  # a target must also reach this watch ratio
    logging_steps: int = PretrainConfig.logging_steps  # TensorBoard scalars every N steps
    save_steps: int = PretrainConfig.save_steps  # checkpoint every N steps (and at the end)
    bf16: bool | None = None  # bfloat16 autocast; default: on CUDA only
    device: str | None = None  # cpu, cuda, cuda:1...; default: the GPU of this rank if any
    json: bool = False  # print one JSON object (and no progress bar)

    def __post_init__(self) -> None:
        if (self.logs is None) == (self.data is None):
            raise ValueError(
                "give exactly one of --logs (a logged-sessions folder) and --data (a "
                f"Beauty.txt-format file), got logs={self.logs!r} and data={self.data!r}"
            )
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        for name in ("codebook", "embedding_steps", "steps", "batch_size"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be >= 1, got {getattr(self, name)}")


class PreparedData(NamedTuple):
    """The examples, their codec, and what the data decides about the model."""

    examples: ExampleSource  # what the trainer samples from
    codec: SemanticIdCodec  # item <-> codes
    codec_path: Path  # where the codec lives (saved here when built)
    codec_built: bool  # built by this run rather than loaded
    model_overrides: dict[str, Any]  # OneRecConfig fields the data fixes (lengths, side tables)
    item_features: dict[str, Tensor]  # side features per item for policy.set_item_features


def _existing_codec(args: PretrainArgs, num_items: int) -> tuple[SemanticIdCodec, Path] | None:
    """The codec to reuse: --codec, the logs folder's, or a previous run's in --out."""
    if args.codec is not None:
        candidates = [Path(args.codec)]
    else:
        folders = [Path(args.logs)] if args.logs is not None else []
        candidates = [folder / CODEC_FILE for folder in (*folders, Path(args.out))
                      if (folder / CODEC_FILE).is_file()]
    if not candidates:
        return None
    codec = SemanticIdCodec.load(candidates[0])
    if codec.num_items != num_items:
        raise ValueError(
            f"codec {candidates[0]} covers {codec.num_items} items but the data has "
            f"{num_items}; pass the codec built for this catalog, or remove it to build one"
        )
    return codec, candidates[0]


def _codec(
    args: PretrainArgs, num_items: int, pairs: Callable[[], np.ndarray],
    content: np.ndarray | None = None,
) -> tuple[SemanticIdCodec, Path, bool]:
    """(codec, its path, built here?): an existing one, or item embeddings trained on the
    co-engaged `pairs()` (P, 2) (and `content` (N, C)), then balanced RQ-Kmeans."""
    existing = _existing_codec(args, num_items)
    if existing is not None:
        return (*existing, False)
    embeddings = train_item_embeddings(
        num_items, pairs(), ItemEmbeddingConfig(steps=args.embedding_steps, seed=args.seed),
        content=content,
    )
    quantizer = RQKMeansConfig(codebook_sizes=(args.codebook,) * LEVELS, balanced=True,
                               seed=args.seed)
    codec = build_semantic_ids(embeddings, quantizer).codec
    path = Path(args.out) / CODEC_FILE
    if process_rank() == 0:  # every rank builds the same codec; one writes it
        codec.save(path)
    return codec, path, True


def _logged_data(args: PretrainArgs) -> PreparedData:
    """High-quality exposures of a logs folder; side features from its catalog."""
    logs = LoggedSessions.load(args.logs)
    catalog = logs.catalog
    quality_filter = QualityFilter(args.behaviours, args.min_watch_ratio)
    examples = LoggedExamples(logs, quality_filter, source=f"logs {args.logs}")
    codec, codec_path, built = _codec(
        args, catalog.num_items,
        lambda: consecutive_pairs(positive_sequences(logs, quality_filter)), catalog.content,
    )
    return PreparedData(examples, codec, codec_path, built, *logged_model_settings(logs))


def logged_model_settings(logs: LoggedSessions) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """What logs fix about a policy: OneRecConfig overrides (their pathway lengths and the
    catalog's side-feature table sizes) and the side features of each item (N,)."""
    catalog = logs.catalog
    pathways = logs.session_config()
    features = CatalogFeatures.from_catalog(catalog, DURATION_BUCKETS)
    overrides = {
        "short_term_length": pathways.short_term_length,
        "positive_length": pathways.positive_length,
        "lifelong_length": pathways.lifelong_length,
        "num_creators": catalog.num_creators,
        "num_categories": catalog.num_categories[2],  # leaf categories
        "num_duration_buckets": DURATION_BUCKETS,
    }
    item_features = {"creator": features.creator, "category": features.category[:, 2],
                     "duration_bucket": features.duration_bucket}
    return overrides, item_features


def _beauty_data(args: PretrainArgs) -> PreparedData:
    """Every (last 20 items -> next item) pair of the training sequences of a Beauty file."""
    dataset = load_beauty(args.data, max_history=HISTORY_LENGTH)
    codec, codec_path, built = _codec(
        args, dataset.num_items, lambda: consecutive_pairs(dataset.train_sequences)
    )
    histories, targets = next_item_examples(dataset.train_sequences, HISTORY_LENGTH)
    examples = HistoryExamples(histories, targets, dataset.num_items)
    return PreparedData(examples, codec, codec_path, built,
                        {"short_term_length": HISTORY_LENGTH}, {})


def run(args: PretrainArgs) -> dict[str, Any]:
    """Prepare the data and the codec, build the policy, pre-train it; return the figures."""
    started = time.perf_counter()
    prepared = _logged_data(args) if args.logs is not None else _beauty_data(args)
    config = config_for(args.preset, num_items=prepared.codec.num_items,
                        codebook_sizes=prepared.codec.codebook_sizes, **prepared.model_overrides)
    policy = build_policy(config, seed=args.seed)
    policy.set_item_codes(prepared.codec.item_codes)
    policy.set_item_features(**prepared.item_features)
    training = PretrainConfig(
        learning_rate=args.learning_rate, warmup_steps=args.warmup_steps, max_steps=args.steps,
        per_device_train_batch_size=args.batch_size, logging_steps=args.logging_steps,
        save_steps=args.save_steps, bf16=args.bf16, seed=args.seed, output_dir=args.out,
        device=args.device, progress=not args.json,
    )
    result = pretrain(policy, prepared.examples, training)
    return {
        "preset": args.preset,
        "parameters": sum(parameter.numel() for parameter in policy.parameters()),
        "examples": prepared.examples.num_examples,
        "initial_loss": result.initial_loss,
        "final_loss": result.final_loss,
        "steps": result.steps,
        "resumed_from_step": result.resumed_from_step,
        "tokens_per_s": result.tokens_per_s,
        "encoder_tokens_per_s": result.encoder_tokens_per_s,
        "decoder_tokens_per_s": result.decoder_tokens_per_s,
        "train_seconds": round(result.train_seconds, 2),
        "seconds": round(time.perf_counter() - started, 2),
        "world_size": result.world_size,
        "codebook_sizes": list(prepared.codec.codebook_sizes),
        "codec": str(prepared.codec_path),
        "codec_built": prepared.codec_built,
        "checkpoint": result.checkpoint,
        "tensorboard": str(Path(args.out) / TENSORBOARD_DIR),
        "hardware": hardware_description(),
    }
