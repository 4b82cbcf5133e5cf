"""Item embeddings for the tokenizer, trained with OneRec's item-to-item contrastive loss.

The report trains its item encoder with (1) in-batch InfoNCE over co-engaged item pairs and
(2) caption next-token prediction, which keeps the embedding about the content. Here (2) is
a content-reconstruction term: a small decoder must give back the item's content feature
vector from its embedding (MSE). Items with content features embed as MLP(content) plus a
small per-item id embedding (what content alone cannot tell apart); items without content,
as in Amazon Beauty, have the id embedding only. Embeddings are L2-normalised, as InfoNCE
compares them by cosine.

Letters used in shape comments: N items, C content dims, D embedding width, P pairs,
B pairs in a batch, H hidden width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class ItemEmbeddingConfig:
    """How to train item embeddings. Defaults train 12k items in seconds on a CPU."""

    dim: int = 64  # embedding width; 64 is the usual semantic-ID input size (TIGER, RQ-VAE)
    temperature: float = 0.07  # InfoNCE temperature (the report gives none; 0.07 as in CLIP/MoCo)
    reconstruction_weight: float = 1.0  # weight of the content-reconstruction MSE term
    id_scale: float = 0.1  # size of the id embedding next to MLP(content) when content is given
    hidden: int = 128  # hidden width of the content encoder and decoder MLPs
    steps: int = 1500  # optimiser steps; on Beauty, hit@10 of the next item flattens by then
    batch_size: int = 512  # pairs per step (511 in-batch negatives); 1024: 3x time, +0.006 hit@10
    learning_rate: float = 3e-3  # Adam step size
    seed: int = 0  # seeds the one torch.Generator behind every random draw
    device: str = "cpu"  # "cuda" trains on a GPU

    def __post_init__(self) -> None:
        for name in ("dim", "hidden", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(
                f"batch_size must be >= 2 so each pair has in-batch negatives, got "
                f"{self.batch_size}"
            )
        for name in ("temperature", "learning_rate"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("reconstruction_weight", "id_scale"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def consecutive_pairs(sequences: Sequence[np.ndarray], window: int = 1) -> np.ndarray:
    """Co-engaged pairs from users' item sequences: every item with the one after it, or
    with each of the `window` items after it (a skip-gram window; 1 = consecutive only).

    Consecutive positives of a user are OneRec's main source of item-to-item pairs.
    Returns (P, 2) int64; repeated items (a, a) are dropped, as they teach nothing.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1 (1: consecutive items only), got {window}")
    chunks = [
        np.stack([sequence[:-gap], sequence[gap:]], axis=1)
        for sequence in (np.asarray(s, dtype=np.int64) for s in sequences)
        for gap in range(1, window + 1)
        if len(sequence) > gap
    ]
    if not chunks:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(chunks)  # (P, 2)
    return pairs[pairs[:, 0] != pairs[:, 1]]


def _linear(inputs: int, outputs: int, generator: torch.Generator) -> nn.Linear:
    """A Linear layer initialised from `generator` (never from the global random state)."""
    layer = nn.utils.skip_init(nn.Linear, inputs, outputs)
    bound = inputs**-0.5
    nn.init.uniform_(layer.weight, -bound, bound, generator=generator)
    nn.init.zeros_(layer.bias)
    return layer


class ItemEmbedder(nn.Module):
    """Embeds item ids (and their content features, when given) into D dims."""

    def __init__(
        self, num_items: int, config: ItemEmbeddingConfig, generator: torch.Generator,
        content: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.ids = nn.utils.skip_init(nn.Embedding, num_items, config.dim)
        nn.init.normal_(self.ids.weight, std=config.dim**-0.5, generator=generator)
        self.register_buffer("content", content)  # (N, C) or None
        self.id_scale = 1.0
        if content is not None:
            width = content.shape[1]
            self.id_scale = config.id_scale
            self.encoder = nn.Sequential(_linear(width, config.hidden, generator), nn.GELU(),
                                         _linear(config.hidden, config.dim, generator))
            self.decoder = nn.Sequential(_linear(config.dim, config.hidden, generator), nn.GELU(),
                                         _linear(config.hidden, width, generator))

    def forward(self, items: Tensor) -> Tensor:
        """(B,) int64 -> (B, D) unit-norm embeddings."""
        embedding = self.id_scale * self.ids(items)
        if self.content is not None:
            embedding = embedding + self.encoder(self.content[items])
        return F.normalize(embedding, dim=-1)  # (B, D)


def _cross_entropy_on_diagonal(logits: Tensor, column_items: Tensor) -> Tensor:
    """Row i's target is column i; other columns holding column i's item are masked out."""
    same_item = column_items[None, :] == column_items[:, None]  # (B, B)
    same_item.fill_diagonal_(False)
    targets = torch.arange(len(logits), device=logits.device)
    return F.cross_entropy(logits.masked_fill(same_item, float("-inf")), targets)


def info_nce(anchors: Tensor, positives: Tensor, anchor_items: Tensor, positive_items: Tensor,
             temperature: float) -> Tensor:
    """Symmetric in-batch InfoNCE: pair i's partner against every other pair's items.

    anchors/positives (B, D) unit norm; *_items (B,) their ids. A column holding the very
    same item as the target is masked out, so a duplicate in the batch is not a negative.
    """
    logits = anchors @ positives.T / temperature  # (B, B): anchors (rows) x positives
    return 0.5 * (_cross_entropy_on_diagonal(logits, positive_items)
                  + _cross_entropy_on_diagonal(logits.T, anchor_items))


def train_item_embeddings(
    num_items: int, pairs: np.ndarray, config: ItemEmbeddingConfig,
    content: np.ndarray | None = None,
) -> Tensor:
    """Train item embeddings on co-engaged `pairs` (P, 2) int64 (+ `content` (N, C)).

    Returns (N, D) float32, unit-norm rows, on the CPU. Items in no pair keep their
    initial id embedding (or their content embedding when content is given).
    """
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or len(pairs) < 1:
        raise ValueError(
            f"pairs must have shape (P, 2) with P >= 1 (co-engaged item pairs), got "
            f"{pairs.shape}; build them with consecutive_pairs(sequences)"
        )
    if pairs.min() < 0 or pairs.max() >= num_items:
        raise ValueError(
            f"pairs must hold item ids in [0, {num_items}), got values in "
            f"[{pairs.min()}, {pairs.max()}]"
        )
    content_tensor = None
    if content is not None:
        content_tensor = torch.as_tensor(np.asarray(content, dtype=np.float32))
        if content_tensor.shape[0] != num_items or content_tensor.dim() != 2:
            raise ValueError(
                f"content must have shape ({num_items}, C), got {tuple(content_tensor.shape)}"
            )
        if not torch.isfinite(content_tensor).all():
            raise ValueError("content has NaN or inf values; repair those items first")
        content_tensor = content_tensor.to(config.device)
    device = torch.device(config.device)
    generator = torch.Generator().manual_seed(config.seed)  # CPU: draws do not depend on device
    model = ItemEmbedder(num_items, config, generator, content_tensor).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    pair_tensor = torch.as_tensor(pairs, dtype=torch.long)
    batch_size = min(config.batch_size, len(pairs))
    for _ in range(config.steps):
        batch = pair_tensor[torch.randint(len(pairs), (batch_size,), generator=generator)]
        items = batch.T.flatten().to(device)  # (2B,): the anchors, then their partners
        embedded = model(items)  # (2B, D), one lookup so the id gradient is built once
        anchors, positives = embedded[:batch_size], embedded[batch_size:]
        loss = info_nce(anchors, positives, items[:batch_size], items[batch_size:],
                        config.temperature)
        if content_tensor is not None and config.reconstruction_weight > 0:
            loss = loss + config.reconstruction_weight * F.mse_loss(
                model.decoder(embedded), content_tensor[items]
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        everything = torch.arange(num_items, device=device)
        return torch.cat([model(chunk) for chunk in everything.split(65_536)]).float().cpu()
