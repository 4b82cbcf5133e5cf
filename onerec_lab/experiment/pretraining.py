"""Pre-training a OneRec policy on logged sessions or on Beauty-format histories.

Data: a logged-sessions folder (every high-quality exposure is an example) or a
Beauty.txt-format file (history -> next item). Semantic IDs: the given codec file, else
`codec.safetensors` in the logs folder, else the one a previous run saved in the output
folder; otherwise they are built here (item embeddings trained on the catalog's content and
the consecutive positives of the logs, then balanced residual k-means) and saved to the
output folder. The policy's shape is a preset (`policies.config.PRESETS`) with the pathway
lengths and side-feature tables the data fixes.

    run = pretrain_policy("runs/pretrained", PretrainConfig(max_steps=600), logs="runs/logs")
    run.policy, run.result.final_loss
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from envs.beauty import load_beauty
from envs.logs import LoggedSessions
from onerec_lab.experiment.layout import CODEC_FILE, RunLayout
from onerec_lab.experiment.machine import hardware_description
from policies.cascade import CatalogFeatures
from policies.codec import SemanticIdCodec
from policies.config import PRESETS, config_for
from policies.item_embeddings import ItemEmbeddingConfig, consecutive_pairs, train_item_embeddings
from policies.onerec import OneRecPolicy, build_policy
from policies.rq_kmeans import RQKMeansConfig
from policies.tokenizer import build_semantic_ids
from trainers.pretrain import PretrainConfig, PretrainResult, pretrain, process_rank
from trainers.pretrain_data import (
    ExampleSource,
    HistoryExamples,
    LoggedExamples,
    QualityFilter,
    next_item_examples,
    positive_sequences,
)

LEVELS = 3  # semantic-ID levels of a codec built here, as in OneRec
DURATION_BUCKETS = 16  # equal-frequency duration buckets of the duration side feature
HISTORY_LENGTH = 20  # Beauty histories: TIGER's last 20 items (the short-term pathway)


@dataclass(frozen=True)
class CodecSettings:
    """Where the semantic IDs come from, or how they are built when none exists."""

    codec: str | None = None  # a codec file; default: the logs' or the output's codec.safetensors
    codebook: int = 64  # codes per level of a codec built here; 64^3 addresses 5k-item catalogs
    embedding_steps: int = 300  # item-embedding optimiser steps of a codec built here

    def __post_init__(self) -> None:
        for name in ("codebook", "embedding_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class PreparedData:
    """The examples, their codec, and what the data decides about the model."""

    examples: ExampleSource  # what the trainer samples from
    codec: SemanticIdCodec  # item <-> codes
    codec_path: Path  # where the codec lives (saved here when built)
    codec_built: bool  # built by this run rather than loaded
    model_overrides: dict[str, Any]  # OneRecConfig fields the data fixes (lengths, side tables)
    item_features: dict[str, Tensor]  # side features per item for policy.set_item_features


@dataclass(frozen=True)
class PretrainRun:
    """A pre-trained policy and what its run reported."""

    policy: OneRecPolicy
    result: PretrainResult
    preset: str
    examples: int  # training examples in the data
    codec: Path
    codec_built: bool
    seconds: float  # data preparation and training

    @property
    def parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.policy.parameters())

    def to_dict(self) -> dict[str, Any]:
        """The figures `onerec-lab pretrain` prints."""
        result = self.result
        return {
            "preset": self.preset, "parameters": self.parameters, "examples": self.examples,
            "initial_loss": result.initial_loss, "final_loss": result.final_loss,
            "steps": result.steps, "resumed_from_step": result.resumed_from_step,
            "tokens_per_s": result.tokens_per_s,
            "encoder_tokens_per_s": result.encoder_tokens_per_s,
            "decoder_tokens_per_s": result.decoder_tokens_per_s,
            "train_seconds": round(result.train_seconds, 2), "seconds": round(self.seconds, 2),
            "world_size": result.world_size,
            "codebook_sizes": list(self.policy.codec.codebook_sizes),
            "codec": str(self.codec), "codec_built": self.codec_built,
            "checkpoint": result.checkpoint,
            "tensorboard": None if result.checkpoint is None
            else str(RunLayout(Path(result.checkpoint).parent).tensorboard),
            "hardware": hardware_description(),
        }


def pretrain_policy(
    out: str | Path, training: PretrainConfig, *, logs: str | Path | None = None,
    data: str | Path | None = None, preset: str = "tiny",
    codec: CodecSettings | None = None, quality_filter: QualityFilter | None = None,
) -> PretrainRun:
    """Prepare the data (`logs` folder or Beauty `data` file) and the codec, build a
    `preset` policy seeded by `training.seed`, pre-train it into `out` (resumed when it
    holds a checkpoint of the same run)."""
    if (logs is None) == (data is None):
        raise ValueError(
            "give exactly one of logs (a logged-sessions folder) and data (a Beauty.txt-format "
            f"file), got logs={logs!r} and data={data!r}"
        )
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    started = time.perf_counter()
    layout = RunLayout(Path(out))
    seed = training.seed
    codec = CodecSettings() if codec is None else codec
    quality_filter = QualityFilter() if quality_filter is None else quality_filter
    prepared = (logged_data(Path(logs), layout, codec, quality_filter, seed) if logs is not None
                else beauty_data(Path(data), layout, codec, seed))
    config = config_for(preset, num_items=prepared.codec.num_items,
                        codebook_sizes=prepared.codec.codebook_sizes, **prepared.model_overrides)
    policy = build_policy(config, seed=seed)
    policy.set_item_codes(prepared.codec.item_codes)
    policy.set_item_features(**prepared.item_features)
    result = pretrain(policy, prepared.examples, replace(training, output_dir=str(out)))
    return PretrainRun(policy, result, preset, prepared.examples.num_examples,
                       prepared.codec_path, prepared.codec_built, time.perf_counter() - started)


def _existing_codec(candidates: Sequence[Path], num_items: int, catalog: str | None,
                    data: str) -> tuple[SemanticIdCodec, Path] | None:
    """The first codec file of `candidates` that exists, checked against the data (its item
    count, and the fingerprint of its catalog when both record one)."""
    existing = [path for path in candidates if path.is_file()]
    if not existing:
        return None
    codec = SemanticIdCodec.load(existing[0])
    if codec.num_items != num_items:
        raise ValueError(
            f"codec {existing[0]} covers {codec.num_items} items but {data} has {num_items}; "
            "pass the codec built for this catalog, or another output folder to build one"
        )
    if None not in (codec.catalog_fingerprint, catalog) and codec.catalog_fingerprint != catalog:
        raise ValueError(
            f"codec {existing[0]} was built for another catalog (fingerprint "
            f"{codec.catalog_fingerprint}) than {data} (fingerprint {catalog}); pass --codec "
            "FILE built for these logs, or leave it out and pretrain into another --out"
        )
    return codec, existing[0]


def _codec(
    settings: CodecSettings, search: Sequence[Path], layout: RunLayout, num_items: int,
    pairs: Callable[[], np.ndarray], seed: int, content: np.ndarray | None = None,
    catalog: str | None = None, data: str = "the data",
) -> tuple[SemanticIdCodec, Path, bool]:
    """(codec, its path, built here?): `settings.codec`, else the first of `search` that
    exists, else item embeddings trained on the co-engaged `pairs()` (P, 2) (and `content`
    (N, C)), then balanced RQ-Kmeans, saved in the run folder. `catalog` is the data's
    catalog fingerprint (None: none known), which a loaded codec must match and a built one
    records."""
    candidates = [Path(settings.codec)] if settings.codec is not None else list(search)
    if settings.codec is not None and not candidates[0].is_file():
        raise ValueError(f"codec {settings.codec} does not exist; pass a codec file or leave "
                         "it out to build one")
    existing = _existing_codec(candidates, num_items, catalog, data)
    if existing is not None:
        return (*existing, False)
    embeddings = train_item_embeddings(
        num_items, pairs(), ItemEmbeddingConfig(steps=settings.embedding_steps, seed=seed),
        content=content,
    )
    quantizer = RQKMeansConfig(codebook_sizes=(settings.codebook,) * LEVELS, balanced=True,
                               seed=seed)
    codec = build_semantic_ids(embeddings, quantizer).codec
    codec.catalog_fingerprint = catalog
    if process_rank() == 0:  # every rank builds the same codec; one writes it
        codec.save(layout.codec)
    return codec, layout.codec, True


def logged_data(logs_dir: Path, layout: RunLayout, codec: CodecSettings,
                quality_filter: QualityFilter, seed: int) -> PreparedData:
    """High-quality exposures of a logs folder; side features from its catalog."""
    logs = LoggedSessions.load(logs_dir)
    examples = LoggedExamples(logs, quality_filter, source=f"logs {logs_dir}")
    found = _codec(codec, [logs_dir / CODEC_FILE, layout.codec], layout, logs.catalog.num_items,
                   lambda: consecutive_pairs(positive_sequences(logs, quality_filter)), seed,
                   logs.catalog.content, logs.catalog_fingerprint, f"the logs {logs_dir}")
    return PreparedData(examples, *found, *logged_model_settings(logs))


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


def beauty_data(path: Path, layout: RunLayout, codec: CodecSettings, seed: int) -> PreparedData:
    """Every (last 20 items -> next item) pair of the training sequences of a Beauty file."""
    dataset = load_beauty(path, max_history=HISTORY_LENGTH)
    found = _codec(codec, [layout.codec], layout, dataset.num_items,
                   lambda: consecutive_pairs(dataset.train_sequences), seed)
    histories, targets = next_item_examples(dataset.train_sequences, HISTORY_LENGTH)
    examples = HistoryExamples(histories, targets, dataset.num_items)
    return PreparedData(examples, *found, {"short_term_length": HISTORY_LENGTH}, {})
