"""Logging policies: the older recommenders whose sessions become pre-training data.

A logging policy only needs `act`; the cascade policy of policies/ plugs into the same
runner (envs.logs) by implementing `LoggingPolicy`.

Letters used in shape comments: N users, S slate size, I items, M candidate pool.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from envs.catalog import Catalog


class LoggingPolicy(Protocol):
    """Anything that turns a batch of observations into slates."""

    def act(self, observation: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """Slates (N, S) int64 of item ids for a batched observation (arrays with leading N)."""
        ...


class RandomPolicy:
    """Distinct items drawn uniformly from the whole catalog: the no-knowledge baseline."""

    def __init__(self, catalog: Catalog, slate_size: int = 10) -> None:
        if not 1 <= slate_size <= catalog.num_items:
            raise ValueError(
                f"slate_size must be in [1, {catalog.num_items}] (the catalog size), "
                f"got {slate_size}"
            )
        self.num_items = catalog.num_items
        self.slate_size = slate_size

    def act(self, observation: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        users = observation["static"].shape[0]
        picked = np.empty((users, 0), dtype=np.int64)  # (N, j) sorted picks so far
        slate = np.empty((users, self.slate_size), dtype=np.int64)
        for slot in range(self.slate_size):
            # the k-th item not yet picked: shift past every smaller earlier pick, in order
            item = rng.integers(0, self.num_items - slot, size=users)
            for column in range(slot):
                item += item >= picked[:, column]
            slate[:, slot] = item
            picked = np.sort(np.concatenate([picked, item[:, None]], axis=1), axis=1)
        return slate


class PopularPolicy:
    """Distinct items drawn in proportion to popularity from the `pool_size` most popular.

    Sampling without replacement by Gumbel-top-k (the Plackett-Luce model of popularity);
    the slate is ordered from the highest key down, so more popular items tend to lead.
    """

    def __init__(self, catalog: Catalog, slate_size: int = 10, pool_size: int = 500) -> None:
        if not 1 <= slate_size <= min(pool_size, catalog.num_items):
            raise ValueError(
                f"slate_size must be in [1, min(pool_size={pool_size}, "
                f"num_items={catalog.num_items})], got {slate_size}"
            )
        self.slate_size = slate_size
        order = np.argsort(-catalog.popularity.astype(np.float64), kind="stable")
        self.pool = order[:pool_size].astype(np.int64)  # (M,) most popular first
        self.log_weight = np.log(catalog.popularity[self.pool].astype(np.float64))  # (M,)

    def act(self, observation: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        users = observation["static"].shape[0]
        keys = self.log_weight + rng.gumbel(size=(users, self.pool.size))  # (N, M)
        top = np.argpartition(-keys, self.slate_size - 1, axis=1)[:, :self.slate_size]
        order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1)
        return self.pool[np.take_along_axis(top, order, axis=1)]  # (N, S)


LOGGING_POLICIES: dict[str, type] = {"random": RandomPolicy, "popular": PopularPolicy}


def make_logging_policy(name: str, catalog: Catalog, slate_size: int = 10) -> LoggingPolicy:
    """The logging policy registered under `name` (see LOGGING_POLICIES)."""
    if name not in LOGGING_POLICIES:
        raise ValueError(
            f"unknown logging policy {name!r}; choose one of {', '.join(LOGGING_POLICIES)}"
        )
    return LOGGING_POLICIES[name](catalog, slate_size=slate_size)
