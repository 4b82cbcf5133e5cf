"""The one policy interface every recommender implements, and the score helpers they share.

A `Recommender` answers a batch of observations (the simulator's four-pathway dict, or any dict
of batched arrays a recommender knows how to read) with its top-K items in order. Its `act`
returns a slate of the size fixed at construction, so every recommender is also a logging
policy of the simulator (`envs.logging_policies.LoggingPolicy`: `act(observation, rng)`).

Letters used in shape comments: B batch (users), N items, H history items, K top-k length,
S slate size.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from envs.spec import BLANK

# Pathways whose items count as "already seen" when a recommender excludes them: the recent
# impressions and the engaged items (lifelong items are cluster representatives, not exposures).
SEEN_PATHWAYS: tuple[str, ...] = ("short_term_items", "positive_items")


@runtime_checkable
class Recommender(Protocol):
    """A policy that ranks items for a batch of users."""

    slate_size: int  # S: the length of the slates `act` returns

    def recommend(
        self, observation: dict[str, np.ndarray], k: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Top-k items per user, best first: (B, k) int64, BLANK where it has nothing to show."""
        ...

    def act(self, observation: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """The slate to show: (B, S) int64, the top `slate_size` items of `recommend`."""
        ...


class SlateRecommender(ABC):
    """Base class giving `act` from `recommend`; subclasses set `slate_size` and `recommend`."""

    slate_size: int

    @abstractmethod
    def recommend(
        self, observation: dict[str, np.ndarray], k: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Top-k items per user, best first: (B, k) int64, BLANK where it has nothing to show."""

    def act(self, observation: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        return self.recommend(observation, self.slate_size, rng)  # (B, S)


def check_slate_size(slate_size: int) -> int:
    """`slate_size`, or a ValueError that says what a slate size must be."""
    if slate_size < 1:
        raise ValueError(f"slate_size must be >= 1 (items shown per request), got {slate_size}")
    return slate_size


def batch_size_of(observation: dict[str, np.ndarray]) -> int:
    """B: the common leading dimension of an observation's arrays."""
    sizes = {key: np.shape(value)[0] for key, value in observation.items()}
    if not sizes or len(set(sizes.values())) != 1:
        raise ValueError(
            f"observation arrays must share one batch dimension, got leading sizes {sizes}"
        )
    return next(iter(sizes.values()))


def seen_items(observation: dict[str, np.ndarray]) -> np.ndarray:
    """Items of the SEEN_PATHWAYS present in the observation: (B, H) int64, BLANK-padded."""
    parts = [np.asarray(observation[key]) for key in SEEN_PATHWAYS if key in observation]
    if not parts:
        return np.full((batch_size_of(observation), 0), BLANK, dtype=np.int64)
    return np.concatenate(parts, axis=1).astype(np.int64)  # (B, H)


def mask_items(scores: torch.Tensor, items: torch.Tensor, value: float) -> torch.Tensor:
    """A copy of scores (B, N) with `value` at the listed items (B, H); BLANK entries skipped."""
    padded = torch.cat([scores, scores.new_zeros(scores.shape[0], 1)], dim=1)  # (B, N + 1)
    columns = torch.where(items < 0, scores.shape[1], items)  # BLANK -> the spare column
    padded.scatter_(1, columns, value)
    return padded[:, :-1]  # (B, N)


def top_k_items(
    scores: torch.Tensor, k: int, exclude: np.ndarray | torch.Tensor | None = None
) -> np.ndarray:
    """The k best items per row of scores (B, N), best first, as (B, k) int64.

    Items listed in `exclude` (B, H; BLANK-padded) and items scored -inf are never returned;
    a row with fewer than k eligible items is padded with BLANK.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1 (items to return per user), got {k}")
    scores = scores.detach().float()
    if exclude is not None:
        exclude = torch.as_tensor(np.asarray(exclude), dtype=torch.int64)
        scores = mask_items(scores, exclude, float("-inf"))
    take = min(k, scores.shape[1])
    values, items = torch.topk(scores, take, dim=1)  # (B, take)
    items = torch.where(torch.isneginf(values), BLANK, items)
    if take < k:
        items = torch.cat([items, items.new_full((items.shape[0], k - take), BLANK)], dim=1)
    return items.numpy().astype(np.int64)  # (B, k)
