"""Item embeddings -> semantic IDs: fit residual k-means, build the codec, measure quality."""

from __future__ import annotations

import time
from typing import NamedTuple

from torch import Tensor

from policies.codec import CollisionPolicy, SemanticIdCodec
from policies.rq_kmeans import ResidualKMeans, RQKMeansConfig
from policies.tokenizer_metrics import TokenizerReport, tokenizer_report


class SemanticIds(NamedTuple):
    """What `build_semantic_ids` returns (unpacks as codec, report, seconds)."""

    codec: SemanticIdCodec  # item <-> codes, legality, prefix masks
    report: TokenizerReport  # quality over the L semantic levels
    seconds: float  # wall time of the residual k-means fit


def build_semantic_ids(
    embeddings: Tensor, config: RQKMeansConfig, collision_policy: CollisionPolicy = "extend",
) -> SemanticIds:
    """Learn codes for items from their embeddings (N, D): item i gets the code the fit gave
    it (capacity-constrained when `config.balanced`). Metrics cover the semantic levels
    only, even when the codec appends a disambiguation level."""
    start = time.perf_counter()
    quantizer = ResidualKMeans(config).fit(embeddings)
    seconds = time.perf_counter() - start
    codes = quantizer.train_codes  # (N, L)
    report = tokenizer_report(embeddings, quantizer.reconstruct(codes), codes,
                              config.codebook_sizes)
    return SemanticIds(SemanticIdCodec(codes, config.codebook_sizes, collision_policy), report,
                       seconds)
