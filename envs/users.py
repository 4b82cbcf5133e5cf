"""The simulated user population: who a user is, what they like, and what they did before.

A user is drawn from an episode key (see envs/streams.py), so the same key always gives the
same person, whether they are simulated alone or among thousands:

- a static profile in `STATIC_FIELDS` order: an id bucket, age group, gender, region and
  activity level (the activity mix is the catalog's, KuaiRand's when calibrated on it);
- latent interests: a unit vector in topic space, a Dirichlet mix of a few favourite leaf
  categories' centres, tilted by the user's (age, gender) group and perturbed;
- a warm history: `warm_history` past impressions served by an older recommender (a mix
  of popular items and items of the favourite leaves), answered by the response model, so
  every observation pathway is populated from the first request.

Letters used in shape comments: N users, T topic dimensions, H history length, F feedback
fields, L leaf categories, I items, S slate size, P favourite leaves, D response draws per
impression.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit

from envs.catalog import Catalog
from envs.lifelong import distinct_items
from envs.response import NUM_DRAWS, ItemTable, ResponseConfig, feedback_columns
from envs.spec import LIFELONG_HISTORY, STATIC_CARDINALITIES, STATIC_FIELDS
from envs.streams import (
    PURPOSE_PROFILE,
    PURPOSE_WARM_HISTORY,
    purpose_keys,
    uniform_columns,
    uniforms,
)

_AGE, _GENDER, _REGION, _ACTIVITY = (STATIC_FIELDS.index(name) for name in
                                     ("age_group", "gender", "region", "activity_level"))


@dataclass(frozen=True)
class PopulationConfig:
    """How users are drawn. Defaults give diverse users whose history fills every pathway."""

    favourite_leaves: int = 3  # a few interests per user: enough for variety, few enough to learn
    group_tilt: float = 0.35  # pull of the (age, gender) group's taste: static features inform
    interest_noise: float = 0.25  # per-user idiosyncrasy on top of the favourite leaves
    warm_history: int = LIFELONG_HISTORY  # past impressions: fills the lifelong pathway fully
    warm_popular_share: float = 0.4  # the old recommender's share of popular (not personal) items
    population_seed: int = 0  # fixes the group tastes: part of the world, not of an episode
    age_probs: tuple[float, ...] = (0.08, 0.22, 0.26, 0.2, 0.12, 0.08, 0.04)  # a young-leaning app
    gender_probs: tuple[float, ...] = (0.48, 0.48, 0.04)  # female, male, unknown

    def __post_init__(self) -> None:
        if self.favourite_leaves < 1:
            raise ValueError(f"favourite_leaves must be >= 1, got {self.favourite_leaves}")
        if self.warm_history < 1:
            raise ValueError(
                f"warm_history must be >= 1 (users start with a past), got {self.warm_history}"
            )
        if not 0.0 <= self.warm_popular_share <= 1.0:
            raise ValueError(
                f"warm_popular_share must be in [0, 1], got {self.warm_popular_share}"
            )
        for name, field in (("age_probs", "age_group"), ("gender_probs", "gender")):
            probs = np.asarray(getattr(self, name))
            expected = STATIC_CARDINALITIES[STATIC_FIELDS.index(field)]
            if probs.shape != (expected,) or (probs < 0).any() or not np.isclose(probs.sum(), 1):
                raise ValueError(
                    f"{name} must be {expected} non-negative probabilities summing to 1, "
                    f"got {getattr(self, name)}"
                )


@dataclass
class UserState:
    """The mutable state of N users (arrays indexed by user row)."""

    static: np.ndarray  # (N, 5) int64 in STATIC_FIELDS order
    interest: np.ndarray  # (N, T) float64 unit vectors, hidden
    fatigue: np.ndarray  # (N, K) float64 decayed impressions per fatigue topic, hidden
    patience: np.ndarray  # (N,) float64 requests left before leaving, hidden
    step_stream: np.ndarray  # (N,) uint64 random stream of the session's requests
    request: np.ndarray  # (N,) int64 requests answered in this session

    @property
    def activity(self) -> np.ndarray:
        return self.static[:, _ACTIVITY]


class Profiles(NamedTuple):
    """Freshly drawn users: who they are and what they like."""

    static: np.ndarray  # (N, 5) int64 in STATIC_FIELDS order
    interest: np.ndarray  # (N, T) float64 unit vectors
    favourite_leaves: np.ndarray  # (N, P) int64 leaf categories the user likes
    favourite_cdf: np.ndarray  # (N, P) float64 cumulative weights of those leaves


class Population:
    """Draws users and their warm histories for one catalog (precomputed lookups)."""

    def __init__(self, catalog: Catalog, items: ItemTable, config: PopulationConfig) -> None:
        self.config = config
        self.items = items
        leaf = catalog.category[:, 2]
        self.num_leaves = int(leaf.max()) + 1
        centres = np.zeros((self.num_leaves, items.topics.shape[1]))
        np.add.at(centres, leaf, items.topics)
        self.leaf_centres = centres / np.maximum(
            np.linalg.norm(centres, axis=1, keepdims=True), 1e-12
        )  # (L, T)
        leaf_mass = np.bincount(leaf, weights=catalog.popularity, minlength=self.num_leaves)
        self.leaf_cdf = np.cumsum(leaf_mass) / leaf_mass.sum()  # (L,)
        self.leaf_order = np.argsort(leaf, kind="stable")  # items grouped by leaf
        counts = np.bincount(leaf, minlength=self.num_leaves)
        self.leaf_start = np.concatenate([[0], np.cumsum(counts)[:-1]])  # (L,)
        self.leaf_count = counts
        self.alias_accept, self.alias_other = _alias_table(catalog.popularity)  # (I,), (I,)
        self.activity_cdf = np.cumsum(catalog.user_activity_probs)
        self.activity_cdf /= self.activity_cdf[-1]
        groups = STATIC_CARDINALITIES[_AGE] * STATIC_CARDINALITIES[_GENDER]
        tilt = np.random.default_rng(config.population_seed).normal(
            size=(groups, items.topics.shape[1])
        )
        self.group_taste = tilt / np.linalg.norm(tilt, axis=1, keepdims=True)  # (groups, T)

    def draw_profiles(self, keys: np.ndarray) -> Profiles:
        """Profiles of N users from their episode keys (N,) uint64."""
        config = self.config
        count = config.favourite_leaves
        dims = self.items.topics.shape[1]
        num_normals = dims + dims % 2
        u = uniforms(purpose_keys(keys, PURPOSE_PROFILE), 0, 5 + 2 * count + num_normals)
        static = np.empty((keys.shape[0], len(STATIC_FIELDS)), dtype=np.int64)
        static[:, 0] = (keys % np.uint64(STATIC_CARDINALITIES[0])).astype(np.int64)
        static[:, _AGE] = np.searchsorted(
            np.cumsum(config.age_probs), u[:, 1] * sum(config.age_probs)
        )
        static[:, _GENDER] = np.searchsorted(
            np.cumsum(config.gender_probs), u[:, 2] * sum(config.gender_probs)
        )
        static[:, _REGION] = (u[:, 3] * STATIC_CARDINALITIES[_REGION]).astype(np.int64)
        static[:, _ACTIVITY] = np.searchsorted(self.activity_cdf, u[:, 4])
        np.minimum(static, np.asarray(STATIC_CARDINALITIES) - 1, out=static)

        leaves = np.searchsorted(self.leaf_cdf, u[:, 5:5 + count]).clip(0, self.num_leaves - 1)
        weights = -np.log(u[:, 5 + count:5 + 2 * count])  # Dirichlet(1) via exponentials
        weights /= weights.sum(axis=1, keepdims=True)  # (N, P)
        group = static[:, _AGE] * STATIC_CARDINALITIES[_GENDER] + static[:, _GENDER]
        normal = box_muller(u[:, 5 + 2 * count:])[:, :dims]  # (N, T)
        interest = (
            np.einsum("np,npt->nt", weights, self.leaf_centres[leaves])
            + config.group_tilt * self.group_taste[group]
            + config.interest_noise * normal / np.sqrt(dims)
        )
        interest /= np.linalg.norm(interest, axis=1, keepdims=True)
        return Profiles(static, interest, leaves.astype(np.int64), np.cumsum(weights, axis=1))

    def warm_history(
        self, keys: np.ndarray, profiles: Profiles, response: ResponseConfig, slate_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The past impressions of N users, oldest first: items (N, H) int64, feedback (N, H, F)
        float32 (a view of one contiguous (N, H) array per field, the layout it is drawn in).

        The old recommender showed popular items (`warm_popular_share`) or items from a
        favourite leaf, in slates of `slate_size`; the user answered with today's interests
        and no fatigue (the past is spread over days).
        """
        length = self.config.warm_history
        u = uniform_columns(purpose_keys(keys, PURPOSE_WARM_HISTORY), length,
                            2 + NUM_DRAWS)  # (2 + D, N, H): each draw one contiguous array
        items = np.empty(u.shape[1:], dtype=np.int64)  # (N, H)
        _warm_items(u[0], u[1], profiles.favourite_leaves, profiles.favourite_cdf,
                    self.config.warm_popular_share, self.leaf_order, self.leaf_start,
                    self.leaf_count, self.alias_accept, self.alias_other, items)
        # a user sees each item ~2.6 times: the affinity <interest, topic> once per item
        distinct, index = distinct_items(items, self.items.topics.shape[0])  # (N, P), (N, H)
        affinity = np.einsum("npt,nt->np", np.take(self.items.topics, distinct, axis=0),
                             profiles.interest)  # (N, P)
        columns = feedback_columns(
            response, self.items, _per_impression(affinity, index),
            profiles.static[:, _ACTIVITY], items, np.ones(items.shape, dtype=bool),
            np.broadcast_to(0.0, items.shape), u[2:], positions=np.arange(length) % slate_size,
        )  # (F, N, H)
        return items, np.moveaxis(columns, 0, -1)


@njit(cache=True, nogil=True, error_model="numpy")
def _warm_items(source, pick, favourite_leaves, favourite_cdf, popular_share, leaf_order,
                leaf_start, leaf_count, alias_accept, alias_other, items):
    """The items of N users' warm histories into items (N, H), one per pair of uniforms
    source, pick (N, H): popular when source < popular_share, otherwise from the favourite
    leaf whose cumulative weight (N, P) the rescaled source falls under, its member picked
    by `pick`. A popular item is Walker's alias method driven by `pick` alone: its integer
    part (times I) picks a column, its fractional part decides between the column and its
    alias, O(1) an item."""
    num_items = alias_accept.size
    personal_scale = max(1.0 - popular_share, 1e-12)
    for user in range(source.shape[0]):
        bounds = favourite_cdf[user, :-1]  # (P - 1,)
        for impression in range(source.shape[1]):
            # both candidates, then a select: a branch on a 40/60 coin mispredicts too often
            uniform = pick[user, impression]
            scaled = uniform * num_items
            column = min(int(scaled), num_items - 1)
            alias = alias_other[column]
            popular = column if scaled - column < alias_accept[column] else alias
            share = (source[user, impression] - popular_share) / personal_scale
            which = 0  # the favourite leaf: how many cumulative weights lie below share
            for bound in range(bounds.size):
                which += share > bounds[bound]
            leaf = favourite_leaves[user, which]
            personal = leaf_order[leaf_start[leaf] + int(uniform * leaf_count[leaf])]
            items[user, impression] = (popular if source[user, impression] < popular_share
                                       else personal)


@njit(cache=True, nogil=True)
def _per_impression(values, index):
    """values (N, P) of each user's distinct items at index (N, H) -> (N, H)."""
    out = np.empty(index.shape, dtype=values.dtype)
    for user in range(index.shape[0]):
        for impression in range(index.shape[1]):
            out[user, impression] = values[user, index[user, impression]]
    return out


def _alias_table(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table of a distribution over I outcomes: (accept (I,), alias (I,))."""
    count = probabilities.shape[0]
    scaled = probabilities.astype(np.float64) / probabilities.sum() * count
    accept = np.ones(count)
    alias = np.arange(count)
    small = [int(i) for i in np.flatnonzero(scaled < 1.0)]
    large = [int(i) for i in np.flatnonzero(scaled >= 1.0)]
    while small and large:  # once per catalog: a Python loop over items is fine here
        low, high = small.pop(), large[-1]
        accept[low], alias[low] = scaled[low], high
        scaled[high] -= 1.0 - scaled[low]
        if scaled[high] < 1.0:
            small.append(large.pop())
    return accept, alias


def box_muller(u: np.ndarray) -> np.ndarray:
    """Standard normals from pairs of uniforms: (N, 2M) -> (N, 2M)."""
    first, second = u[:, 0::2], u[:, 1::2]
    radius = np.sqrt(-2.0 * np.log(first))
    angle = 2.0 * np.pi * second
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)], axis=1)


def initial_patience(response: ResponseConfig, static: np.ndarray) -> np.ndarray:
    """Patience of users at the start of a session, by activity level: (N,) float64."""
    return np.asarray(response.initial_patience, dtype=np.float64)[static[:, _ACTIVITY]]

