"""The simplest baselines: uniformly random and most-popular recommenders.

Both implement `policies.interface.Recommender`, so they rank offline and log in the simulator.

Letters used in shape comments: B batch (users), N items, K top-k length.
"""

from __future__ import annotations

import numpy as np
import torch

from envs.spec import BLANK
from policies.interface import (
    SlateRecommender,
    batch_size_of,
    check_slate_size,
    seen_items,
    top_k_items,
)


class RandomRecommender(SlateRecommender):
    """K distinct items drawn uniformly per user: the floor every model must beat."""

    def __init__(self, num_items: int, slate_size: int) -> None:
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1 (the catalog size), got {num_items}")
        self.num_items = num_items
        self.slate_size = check_slate_size(slate_size)

    def recommend(
        self, observation: dict[str, np.ndarray], k: int, rng: np.random.Generator
    ) -> np.ndarray:
        if k < 1:
            raise ValueError(f"k must be >= 1 (items to return per user), got {k}")
        keys = rng.random((batch_size_of(observation), self.num_items))  # (B, N)
        take = min(k, self.num_items)
        items = np.argpartition(keys, take - 1, axis=1)[:, :take]  # (B, take), distinct per row
        padding = np.full((items.shape[0], k - take), BLANK, dtype=np.int64)
        return np.concatenate([items.astype(np.int64), padding], axis=1)  # (B, K)


class PopularRecommender(SlateRecommender):
    """The K most popular items, the same for everyone but for what a user has already seen;
    deterministic (`rng` is not used).

    `popularity` (N,) is any non-negative weight per item: the catalog's popularity prior or
    engagement counts from logs (`np.bincount(items, minlength=N)`). With `exclude_seen`, items
    in the user's short-term or positive pathway are skipped, or the list would repeat itself
    on every request. (The simulator's exploring variant, which samples in proportion to
    popularity, is `envs.logging_policies.PopularPolicy`.)
    """

    def __init__(self, popularity: np.ndarray, slate_size: int, exclude_seen: bool = True) -> None:
        popularity = np.asarray(popularity, dtype=np.float64)
        if popularity.ndim != 1 or popularity.size < 1:
            raise ValueError(
                f"popularity must be a 1-D array of N >= 1 items, got shape {popularity.shape}"
            )
        if not np.isfinite(popularity).all() or popularity.min() < 0:
            raise ValueError("popularity must be finite and non-negative (counts or a prior)")
        self.popularity = torch.as_tensor(popularity, dtype=torch.float32)  # (N,)
        self.slate_size = check_slate_size(slate_size)
        self.exclude_seen = exclude_seen

    def recommend(
        self, observation: dict[str, np.ndarray], k: int, rng: np.random.Generator
    ) -> np.ndarray:
        scores = self.popularity.expand(batch_size_of(observation), -1)  # (B, N)
        exclude = seen_items(observation) if self.exclude_seen else None
        return top_k_items(scores, k, exclude)  # (B, K)
