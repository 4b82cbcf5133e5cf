"""The item catalog: what exists in the simulated world.

Every item has a latent topic vector (what it is about; only the simulator sees it), a place
in a 3-level category tree, a creator, a duration, a popularity prior, a quality and a
"click-bait" appeal (what makes content-farm items attractive but unsatisfying), a content
feature vector (a noisy view of the topic: what a recommender may see, the stand-in for the
multimodal embedding of the report) and flags for business experiments.

Letters used in shape comments: N items, T topic dimensions, C content dimensions.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from envs.files import atomic_write, content_fingerprint, unreadable

CATALOG_SCHEMA_VERSION = 1
CATALOG_KIND = "catalog"

# User activity levels (KuaiRand's `user_active_degree`, from least to most active).
ACTIVITY_LEVELS = ("low_active", "middle_active", "high_active", "full_active")


@dataclass(frozen=True)
class CatalogConfig:
    """How to draw a synthetic catalog. Defaults give a world a CPU handles in seconds."""

    num_items: int = 20_000  # the report's catalogs are huge; 20k keeps every study CPU-sized
    topic_dim: int = 16  # latent interest space; 16 dims keep topics separable yet overlapping
    categories_per_level: tuple[int, int, int] = (8, 4, 4)  # children per node: 8 / 32 / 128
    num_creators: int | None = None  # None: one per 13 items (KuaiRand-Pure has ~1.2 per author;
    # more items per creator give the creator feature structure worth learning)
    content_dim: int = 32  # width of the pseudo-content vector a recommender may observe
    content_noise: float = 0.35  # noise of the content view; 0 would leak the latent topic
    content_farm_share: float = 0.08  # share of creators that run content farms
    median_duration_s: float = 30.0  # short-video scale; KuaiRand-Pure's median is 81 s
    duration_sigma: float = 0.8  # lognormal spread of durations
    popularity_sigma: float = 1.2  # lognormal spread of the popularity prior (long tail)
    mean_age_days: float = 30.0  # mean time since upload (exponential), for freshness boosts

    def __post_init__(self) -> None:
        if self.num_items < 2:
            raise ValueError(f"num_items must be >= 2, got {self.num_items}")
        if len(self.categories_per_level) != 3 or min(self.categories_per_level) < 1:
            raise ValueError(
                "categories_per_level must be three positive counts (top, middle, leaf "
                f"children per node), got {self.categories_per_level}"
            )
        if self.num_creators is not None and not 1 <= self.num_creators <= self.num_items:
            raise ValueError(
                f"num_creators must be in [1, num_items={self.num_items}] or None, "
                f"got {self.num_creators}"
            )
        if not 0.0 <= self.content_farm_share < 1.0:
            raise ValueError(
                f"content_farm_share must be in [0, 1), got {self.content_farm_share}"
            )
        for name in ("topic_dim", "content_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("content_noise", "duration_sigma", "popularity_sigma"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("median_duration_s", "mean_age_days"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @property
    def creator_count(self) -> int:
        """`num_creators`, or its default of one creator per 13 items."""
        return self.num_creators or max(1, self.num_items // 13)

    @property
    def num_leaf_categories(self) -> int:
        top, middle, leaf = self.categories_per_level
        return top * middle * leaf


@dataclass(frozen=True, eq=False)
class Catalog:
    """All items of a world, as parallel numpy arrays indexed by item id (0 .. N-1)."""

    topics: np.ndarray  # (N, T) float32, unit norm: the hidden "what it is about"
    category: np.ndarray  # (N, 3) int64: [top, middle, leaf] ids, each globally unique per level
    creator: np.ndarray  # (N,) int64
    tag: np.ndarray  # (N,) int64: a sparse content tag (the leaf category unless data says)
    duration_s: np.ndarray  # (N,) float32 seconds
    popularity: np.ndarray  # (N,) float32, sums to 1: the prior of a random exposure
    quality: np.ndarray  # (N,) float32 in (0, 1): how satisfying the item is once watched
    clickbait: np.ndarray  # (N,) float32 in [0, 1): extra appeal that satisfies nobody
    age_days: np.ndarray  # (N,) float32 days since upload
    content: np.ndarray  # (N, C) float32: the observable pseudo-content features
    content_farm: np.ndarray  # (N,) bool
    user_activity_probs: np.ndarray  # (len(ACTIVITY_LEVELS),) float64: the user population mix

    def __post_init__(self) -> None:
        n = self.topics.shape[0]
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, np.ndarray):
                raise ValueError(f"catalog field {field.name} must be a numpy array")
            if field.name != "user_activity_probs" and value.shape[0] != n:
                raise ValueError(
                    f"catalog field {field.name} has {value.shape[0]} rows, expected {n} items"
                )
        if self.category.shape != (n, 3):
            raise ValueError(f"catalog category must be (N, 3), got {self.category.shape}")
        if not np.isfinite(self.topics).all() or not np.isfinite(self.content).all():
            raise ValueError("catalog topics/content contain NaN or inf values")

    @property
    def num_items(self) -> int:
        return int(self.topics.shape[0])

    @property
    def num_creators(self) -> int:
        return int(self.creator.max()) + 1

    @property
    def num_categories(self) -> tuple[int, int, int]:
        return tuple(int(self.category[:, level].max()) + 1 for level in range(3))

    def coengaged_pairs(self, num_pairs: int, rng: np.random.Generator) -> np.ndarray:
        """Pairs of items a user would plausibly engage with one after the other.

        Stands in for "consecutive positives of a user" before any session is logged: the
        anchor follows the popularity prior, the partner shares the anchor's leaf category
        with probability 0.7, its middle category with 0.2, and is any item otherwise.
        Returns (P, 2) int64.
        """
        if num_pairs < 1:
            raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
        anchors = rng.choice(self.num_items, size=num_pairs, p=self.popularity)
        scope = rng.choice(3, size=num_pairs, p=[0.7, 0.2, 0.1])  # 0 leaf, 1 middle, 2 any
        partners = rng.integers(0, self.num_items, size=num_pairs)
        for level, column in ((0, 2), (1, 1)):
            chosen = scope == level
            partners[chosen] = _draw_in_group(
                self.category[:, column], self.category[anchors[chosen], column], rng
            )
        return np.stack([anchors, partners], axis=1).astype(np.int64)  # (P, 2)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every field by name: what a file stores and what the fingerprint hashes."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    def fingerprint(self) -> str:
        """The world's identity: `content_fingerprint` of every field. Artefacts built on
        this catalog (logs, P-score, codec) record it so that a mix of worlds is refused."""
        return self._fingerprint

    @functools.cached_property
    def _fingerprint(self) -> str:  # computed once: the arrays are not mutated after creation
        return content_fingerprint(self.arrays())

    @staticmethod
    def header() -> dict[str, object]:
        """What a file records about the catalog format (checked by `from_arrays`)."""
        return {"schema_version": CATALOG_SCHEMA_VERSION, "kind": CATALOG_KIND}

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], header: Mapping[str, object], source: str | Path
    ) -> Catalog:
        """A catalog from its stored fields and `header`; `source` (the file) is named in the
        error when they are not a catalog of this format."""
        fix = "regenerate it with this version of onerec-lab"
        if not isinstance(header, Mapping) or header.get("kind") != CATALOG_KIND \
                or header.get("schema_version") != CATALOG_SCHEMA_VERSION:
            raise unreadable(source, "catalog", f"its catalog header is {header!r}, expected "
                             f"kind {CATALOG_KIND!r} schema_version {CATALOG_SCHEMA_VERSION}", fix)
        missing = [field.name for field in fields(cls) if field.name not in arrays]
        if missing:
            raise unreadable(source, "catalog", f"the catalog fields {missing} are missing", fix)
        try:
            return cls(**{field.name: arrays[field.name] for field in fields(cls)})
        except (ValueError, IndexError) as error:  # __post_init__'s checks, 0-d arrays
            raise unreadable(source, "catalog", error, fix) from error

    def save(self, path: str | Path) -> None:
        """Write the catalog to one .npz file with `atomic_write` (old file or new, never a
        part)."""
        header = np.array(json.dumps(self.header()))
        atomic_write(path, lambda handle: np.savez(handle, __header__=header, **self.arrays()))

    @classmethod
    def load(cls, path: str | Path) -> Catalog:
        """Read a catalog written by `save`; a wrong or damaged file is a clear ValueError."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["__header__"]))
                arrays = {name: data[name] for name in data.files if name != "__header__"}
        except FileNotFoundError:
            raise
        except Exception as error:  # zip, json and key errors all mean "not a catalog file"
            raise unreadable(path, "catalog file", error,
                             "regenerate it with Catalog.save") from error
        return cls.from_arrays(arrays, header, path)


def _draw_in_group(
    groups: np.ndarray, wanted: np.ndarray, rng: np.random.Generator, skew: float = 1.0
) -> np.ndarray:
    """For each entry of `wanted` (a group id), the index of one member of that group.

    `groups[i]` is the group of member i. Members are drawn uniformly for skew=1; skew > 1
    favours the lowest-numbered members of a group (a Zipf-like head). An empty group gives
    -1. Vectorised: one sort, two binary searches.
    """
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    starts = np.searchsorted(sorted_groups, wanted, side="left")
    counts = np.searchsorted(sorted_groups, wanted, side="right") - starts
    offsets = (rng.random(wanted.shape[0]) ** skew * counts).astype(np.int64)
    picked = order[np.minimum(starts + offsets, order.shape[0] - 1)]
    return np.where(counts > 0, picked, -1)


def _category_tree(
    config: CatalogConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Topic centres of the leaf categories and each leaf's (top, middle, leaf) path.

    Children are their parent's centre plus noise, so nearby categories share topics.
    Returns ((num_leaves, T) float64 centres, (num_leaves, 3) int64 paths).
    """
    top_count, middle_per_top, leaf_per_middle = config.categories_per_level
    top_centres = rng.normal(size=(top_count, config.topic_dim))
    middle_parent = np.repeat(np.arange(top_count), middle_per_top)
    middle_centres = top_centres[middle_parent] + 0.6 * rng.normal(
        size=(middle_parent.size, config.topic_dim)
    )
    leaf_parent = np.repeat(np.arange(middle_parent.size), leaf_per_middle)
    leaf_centres = middle_centres[leaf_parent] + 0.4 * rng.normal(
        size=(leaf_parent.size, config.topic_dim)
    )
    paths = np.stack(
        [middle_parent[leaf_parent], leaf_parent, np.arange(leaf_parent.size)], axis=1
    )
    return leaf_centres, paths.astype(np.int64)


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def build_catalog(
    config: CatalogConfig,
    rng: np.random.Generator,
    leaf: np.ndarray,
    creator: np.ndarray,
    duration_s: np.ndarray,
    tag: np.ndarray | None = None,
    user_activity_probs: np.ndarray | None = None,
) -> Catalog:
    """Fill in the latent and derived item fields for given leaves, creators and durations.

    Both generators (synthetic and KuaiRand-calibrated) share this step: topics follow the
    category tree, content farms are creators, quality and click-bait follow the farm flag.
    """
    n = leaf.shape[0]
    leaf_centres, paths = _category_tree(config, rng)
    topics = _unit(leaf_centres[leaf] + 0.35 * rng.normal(size=(n, config.topic_dim)))

    num_creators = int(creator.max()) + 1
    farm_creators = rng.random(num_creators) < config.content_farm_share
    content_farm = farm_creators[creator]
    creator_quality = rng.normal(size=num_creators)
    quality_logit = 0.8 * creator_quality[creator] + 0.6 * rng.normal(size=n) - 1.5 * content_farm
    quality = 1.0 / (1.0 + np.exp(-quality_logit))
    clickbait = np.where(content_farm, rng.uniform(0.4, 0.9, size=n), rng.uniform(0.0, 0.2, size=n))

    log_popularity = config.popularity_sigma * rng.normal(size=n) + 1.0 * quality + 0.8 * clickbait
    popularity = np.exp(log_popularity - log_popularity.max())
    popularity /= popularity.sum()

    projection = rng.normal(size=(config.topic_dim, config.content_dim)) / np.sqrt(config.topic_dim)
    content = topics @ projection + config.content_noise * rng.normal(size=(n, config.content_dim))

    if user_activity_probs is None:
        user_activity_probs = np.array([0.05, 0.15, 0.3, 0.5])
    return Catalog(
        topics=topics.astype(np.float32),
        category=paths[leaf],
        creator=creator.astype(np.int64),
        tag=(leaf if tag is None else tag).astype(np.int64),
        duration_s=duration_s.astype(np.float32),
        popularity=popularity.astype(np.float32),
        quality=quality.astype(np.float32),
        clickbait=clickbait.astype(np.float32),
        age_days=rng.exponential(config.mean_age_days, size=n).astype(np.float32),
        content=content.astype(np.float32),
        content_farm=content_farm,
        user_activity_probs=np.asarray(user_activity_probs, dtype=np.float64),
    )


def generate_synthetic_catalog(config: CatalogConfig, seed: int) -> Catalog:
    """Draw a whole synthetic catalog from `config`; the same seed gives the same catalog."""
    rng = np.random.default_rng(seed)
    num_leaves = config.num_leaf_categories
    leaf_weights = rng.dirichlet(np.full(num_leaves, 2.0))
    leaf = rng.choice(num_leaves, size=config.num_items, p=leaf_weights)
    # Creators specialise: each has a home leaf; an item's creator is drawn from its leaf's
    # creators with a Zipf-like head, or from all creators when its leaf has none.
    creator_leaf = rng.choice(num_leaves, size=config.creator_count, p=leaf_weights)
    creator = _draw_in_group(creator_leaf, leaf, rng, skew=2.0)
    orphans = creator < 0
    creator[orphans] = rng.integers(0, config.creator_count, size=int(orphans.sum()))
    duration_s = np.exp(
        np.log(config.median_duration_s) + config.duration_sigma * rng.normal(size=config.num_items)
    ).clip(3.0, 600.0)
    return build_catalog(config, rng, leaf, creator, duration_s)
