"""An item-id sequential recommender in the style of SASRec (Kang & McAuley, ICDM 2018).

A causal transformer reads a user's last items (item-id embeddings plus learned positions) and
scores every item for "what comes next" by a dot product with the same item embeddings
(shared input/output table). It is the item-id side of the item-id versus semantic-ID
comparison: OneRec writes items as codes, this model gives each item its own vector.

Training departs from the paper in one place: a softmax cross-entropy, over all items or over
the target and a shared set of uniformly sampled negatives, replaces the paper's binary loss
with one negative per position. Softmax losses are known to train SASRec much better
(Klenitskiy & Vasilev, RecSys 2023, "Turning Dross Into Gold Loss: is BERT4Rec really better
than SASRec?"); the sampled form keeps a CPU step cheap on catalogs of 10^4+ items.

Letters used in shape comments: B batch, T history length (<= max_len), N items, D width,
P supervised positions of a batch, W training windows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from envs.spec import BLANK
from policies.interface import SlateRecommender, check_slate_size, seen_items, top_k_items


@dataclass(frozen=True)
class SASRecConfig:
    """Model size and training budget. Defaults fit Amazon Beauty in minutes on two CPU cores."""

    width: int = 64  # D; SASRec's Beauty setting (50-64) — wider overfits the sparse 5-core data
    layers: int = 2  # self-attention blocks, as in the SASRec paper
    heads: int = 2  # attention heads; width must divide by it
    max_len: int = 20  # longest history read; TIGER's protocol caps histories at 20 items
    dropout: float = 0.3  # SASRec used 0.5 on sparse Amazon data; softmax losses need less
    learning_rate: float = 3e-3  # AdamW; 3x the paper's 1e-3 converges in fewer CPU minutes
    weight_decay: float = 0.0  # AdamW decay; dropout already regularises the embeddings
    batch_size: int = 128  # training windows per step
    negatives: int = 1024  # shared uniform negatives per step (sampled softmax); 0: all N items.
    # On Beauty, 1024 of 12,101 makes a CPU step ~5x cheaper at little cost in accuracy
    steps: int = 2_000  # optimiser steps (an epoch of Beauty at batch 128 is ~180 steps)
    seed: int = 0  # seeds initialisation, batch order and dropout (never the global RNG)

    def __post_init__(self) -> None:
        for name in ("width", "layers", "heads", "max_len", "batch_size", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"SASRecConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.negatives < 0:
            raise ValueError(
                f"SASRecConfig.negatives must be >= 0 (0: full softmax), got {self.negatives}"
            )
        if self.width % self.heads:
            raise ValueError(
                f"SASRecConfig.width={self.width} must be a multiple of heads={self.heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SASRecConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError(
                "SASRecConfig.learning_rate must be > 0 and weight_decay >= 0, got "
                f"{self.learning_rate} and {self.weight_decay}"
            )


class CausalBlock(nn.Module):
    """Pre-norm transformer block: masked self-attention, then a position-wise MLP."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.attention_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.attention_out = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x (B, T, D); allowed (B, 1, T, T) bool, True where a query may attend a key."""
        batch, length, width = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).split(width, dim=2)  # 3 x (B, T, D)
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )  # (B, heads, T, D / heads)
        attended = attended.transpose(1, 2).reshape(batch, length, width)  # (B, T, D)
        x = x + F.dropout(self.attention_out(attended), self.dropout, self.training)
        return x + self.mlp(self.mlp_norm(x))  # (B, T, D)


class SASRec(nn.Module):
    """Causal self-attention over item ids; `scores` ranks all N items for each history."""

    def __init__(self, num_items: int, config: SASRecConfig) -> None:
        super().__init__()
        if num_items < 2:
            raise ValueError(f"num_items must be >= 2 (the catalog size), got {num_items}")
        self.num_items = num_items
        self.config = config
        # Row N is padding: it stays zero and is never scored.
        self.item_embedding = nn.Embedding(num_items + 1, config.width, padding_idx=num_items)
        self.position_embedding = nn.Embedding(config.max_len, config.width)
        self.blocks = nn.ModuleList(
            CausalBlock(config.width, config.heads, config.dropout) for _ in range(config.layers)
        )
        self.final_norm = nn.LayerNorm(config.width)
        nn.init.normal_(self.item_embedding.weight, std=config.width**-0.5)
        with torch.no_grad():
            self.item_embedding.weight[num_items].zero_()

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        """Hidden state after each position of left-padded histories (B, T) -> (B, T, D).

        The last column must be the most recent item (see `pack_right`); positions count from
        the end, so position embeddings encode recency whatever the history length.
        """
        history = history[:, -self.config.max_len:]
        length = history.shape[1]
        valid = history >= 0  # (B, T)
        tokens = torch.where(valid, history, self.num_items)
        positions = torch.arange(self.config.max_len - length, self.config.max_len)
        x = self.item_embedding(tokens) * math.sqrt(self.config.width)
        x = F.dropout(x + self.position_embedding(positions), self.config.dropout, self.training)
        causal = torch.ones(length, length, dtype=torch.bool).tril()  # (T, T)
        # A query sees earlier valid items and always itself (no all-masked row, no NaN).
        allowed = (causal & valid[:, None, :]) | torch.eye(length, dtype=torch.bool)  # (B, T, T)
        for block in self.blocks:
            x = block(x, allowed[:, None])
        return self.final_norm(x)  # (B, T, D)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every item for hidden states (..., D) -> (..., N)."""
        return hidden @ self.item_embedding.weight[: self.num_items].T

    def scores(self, history: torch.Tensor) -> torch.Tensor:
        """Next-item scores for histories (B, T) int64, oldest first, BLANK-padded -> (B, N)."""
        history = pack_right(torch.as_tensor(history, dtype=torch.int64))
        return self.item_logits(self.encode(history)[:, -1])  # (B, N)

    def loss(self, windows: torch.Tensor, negatives: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-item cross-entropy over the valid positions of windows (B, T + 1).

        With `negatives` (M,) item ids, the softmax runs over each target and these shared
        negatives (sampled softmax; uniform negatives need no logQ correction, and a negative
        equal to the target is masked out); without, over all N items.
        """
        inputs, targets = windows[:, :-1], windows[:, 1:]  # (B, T) each
        hidden = self.encode(inputs)  # (B, T, D)
        supervised = (inputs >= 0) & (targets >= 0)  # (B, T)
        hidden, targets = hidden[supervised], targets[supervised]  # (P, D), (P,)
        if negatives is None:
            return F.cross_entropy(self.item_logits(hidden), targets)
        table = self.item_embedding.weight
        positive = (hidden * table[targets]).sum(dim=1, keepdim=True)  # (P, 1)
        negative = hidden @ table[negatives].T  # (P, M)
        negative = negative.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
        logits = torch.cat([positive, negative], dim=1)  # (P, 1 + M)
        return F.cross_entropy(logits, torch.zeros_like(targets))


def pack_right(items: torch.Tensor) -> torch.Tensor:
    """Move the valid items of each row (B, T) to its right end, keeping their order."""
    order = torch.argsort((items >= 0).to(torch.int8), dim=1, stable=True)  # padding first
    return items.gather(1, order)  # (B, T)


def training_windows(sequences: Sequence[Sequence[int]], max_len: int) -> np.ndarray:
    """Cut item sequences into left-padded windows (W, max_len + 1) of consecutive items.

    Windows are taken from the end of each sequence backwards and overlap by one item, so every
    transition (item -> next item) is a training target exactly once. Sequences shorter than
    two items have no transition and give no window.
    """
    rows: list[np.ndarray] = []
    for sequence in sequences:
        sequence = np.asarray(sequence, dtype=np.int64)
        for end in range(sequence.size, 1, -max_len):
            window = sequence[max(0, end - max_len - 1):end]
            row = np.full(max_len + 1, BLANK, dtype=np.int64)
            row[-window.size:] = window
            rows.append(row)
    if not rows:
        raise ValueError("sequences have no transition to learn: every sequence has < 2 items")
    return np.stack(rows)  # (W, max_len + 1)


def train_sasrec(
    sequences: Sequence[Sequence[int]],
    num_items: int,
    config: SASRecConfig,
    on_step: Callable[[int, float], None] | None = None,
) -> SASRec:
    """Train SASRec by next-item prediction on item sequences (oldest first, ids in [0, N)).

    All randomness (initialisation, batch order, dropout) comes from `config.seed` inside a
    forked RNG, so the same seed gives the same weights and the caller's RNG is untouched.
    `on_step(step, loss)` is called after every optimiser step.
    """
    windows = torch.from_numpy(training_windows(sequences, config.max_len))  # (W, max_len + 1)
    if windows.max() >= num_items:
        raise ValueError(
            f"sequences contain item id {int(windows.max())} >= num_items={num_items}; "
            "item ids must be 0-based and below the catalog size"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = SASRec(num_items, config)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        generator = torch.Generator().manual_seed(config.seed)
        order = torch.randperm(len(windows), generator=generator)
        cursor = 0
        model.train()
        for step in range(config.steps):
            if cursor + config.batch_size > len(order):
                order, cursor = torch.randperm(len(windows), generator=generator), 0
            batch = windows[order[cursor:cursor + config.batch_size]]
            cursor += config.batch_size
            negatives = (
                torch.randint(0, num_items, (config.negatives,), generator=generator)
                if config.negatives else None
            )
            loss = model.loss(batch, negatives)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if on_step is not None:
                on_step(step, loss.item())
    model.eval()
    return model


def observation_history(observation: dict[str, np.ndarray]) -> np.ndarray:
    """The engaged items of a simulator observation in time order: (B, H) int64.

    The positive pathway already holds every engaged impression, those of the short-term
    window included, most recent last; the short-term pathway adds only impressions the user
    skipped, which a next-engaged-item model should not read as its history (Beauty's
    sequences hold purchases, not exposures).
    """
    return np.asarray(observation["positive_items"], dtype=np.int64)  # (B, H)


class SASRecRecommender(SlateRecommender):
    """SASRec as a simulator policy: the engaged-item history predicts the next items."""

    def __init__(self, model: SASRec, slate_size: int, exclude_seen: bool = True) -> None:
        self.model = model
        self.slate_size = check_slate_size(slate_size)
        self.exclude_seen = exclude_seen  # skip items of the short-term and positive pathways

    def recommend(
        self, observation: dict[str, np.ndarray], k: int, rng: np.random.Generator
    ) -> np.ndarray:
        history = torch.as_tensor(observation_history(observation), dtype=torch.int64)
        with torch.no_grad():
            scores = self.model.scores(history)  # (B, N)
        exclude = seen_items(observation) if self.exclude_seen else None
        return top_k_items(scores, k, exclude)  # (B, K)
