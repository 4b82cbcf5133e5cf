"""`onerec-lab tokenize`: learn semantic IDs for a catalog and report their quality.

Items come from the synthetic catalog (content features + co-engaged pairs), or from a
Beauty.txt-format file (`--data`: consecutive items of users' training sequences, id
embeddings only). Embeddings are trained with the item-to-item contrastive loss, then
residual k-means turns them into codes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from torch import Tensor

from envs.beauty import load_beauty
from onerec_lab.experiment.world import make_catalog
from policies.item_embeddings import ItemEmbeddingConfig, consecutive_pairs, train_item_embeddings
from policies.rq_kmeans import RQKMeansConfig
from policies.tokenizer import build_semantic_ids


@dataclass
class TokenizeArgs:
    """Arguments of `onerec-lab tokenize`."""

    items: int = 20_000  # synthetic catalog size (ignored with --data: the file decides)
    levels: int = 3  # semantic levels per item, as in OneRec
    codebook: int = 256  # codes per level (OneRec: 8192; 256 suits CPU-sized catalogs)
    balanced: bool = False  # OneRec v1's balanced k-means (every code gets N/K items)
    seed: int = 0  # seeds the catalog, the embeddings and the k-means
    data: str | None = None  # a Beauty.txt-format file; its training sequences give the pairs
    pairs_per_item: int = 10  # synthetic co-engaged pairs drawn per item for the contrastive loss
    embedding_steps: int = ItemEmbeddingConfig.steps  # optimiser steps of the embedding training
    iterations: int = RQKMeansConfig.iterations  # k-means iterations per level
    json: bool = False  # print the result as one JSON object
    out: str | None = field(default=None, metadata={"output": "file"})  # save the codec
    # (safetensors) to this file

    def __post_init__(self) -> None:
        for name in ("items", "levels", "codebook", "pairs_per_item", "embedding_steps",
                     "iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.data is None and self.items < self.codebook:
            raise ValueError(
                f"items ({self.items}) must be >= codebook ({self.codebook}): k-means needs an "
                "item per code; raise --items or lower --codebook"
            )


def _synthetic_embeddings(args: TokenizeArgs, config: ItemEmbeddingConfig
                          ) -> tuple[Tensor, str, str | None]:
    catalog = make_catalog(args.items, args.seed)
    pairs = catalog.coengaged_pairs(args.pairs_per_item * args.items,
                                    np.random.default_rng(args.seed))
    source = (f"synthetic catalog: contrastive on {len(pairs)} co-engaged pairs + "
              "content reconstruction")
    embeddings = train_item_embeddings(args.items, pairs, config, content=catalog.content)
    return embeddings, source, catalog.fingerprint()


def _beauty_embeddings(args: TokenizeArgs, config: ItemEmbeddingConfig
                       ) -> tuple[Tensor, str, str | None]:
    dataset = load_beauty(args.data)
    pairs = consecutive_pairs(dataset.train_sequences)
    source = (f"{args.data}: contrastive on {len(pairs)} consecutive training pairs "
              "(id embeddings, no content)")
    return train_item_embeddings(dataset.num_items, pairs, config), source, None


def run(args: TokenizeArgs) -> dict:
    """Train embeddings, fit the codes, optionally save the codec; return the figures."""
    embedding_config = ItemEmbeddingConfig(steps=args.embedding_steps, seed=args.seed)
    make_embeddings = _beauty_embeddings if args.data else _synthetic_embeddings
    start = time.perf_counter()
    embeddings, source, catalog = make_embeddings(args, embedding_config)
    embedding_seconds = time.perf_counter() - start
    config = RQKMeansConfig(codebook_sizes=(args.codebook,) * args.levels,
                            iterations=args.iterations, balanced=args.balanced, seed=args.seed)
    codec, report, seconds = build_semantic_ids(embeddings, config)
    codec.catalog_fingerprint = catalog  # the synthetic catalog's identity (None for a file)
    if args.out:
        codec.save(args.out)
    return {
        "items": report.num_items,
        "codebook_sizes": list(report.codebook_sizes),
        "balanced": args.balanced,
        "utilization": list(report.utilization),
        "entropy_bits": list(report.entropy_bits),
        "collision_rate": report.collision_rate,
        "reconstruction_error": report.reconstruction_error,
        "codec_levels": codec.num_levels,
        "seconds": seconds,
        "embedding_seconds": embedding_seconds,
        "embedding_source": source,
        "codec_path": args.out,
    }
