"""A catalog whose marginals come from KuaiRand-Pure's feature files.

Durations, tags and the number of items per creator are drawn (with replacement) from
`video_features_basic_pure.csv`; the user population's activity mix comes from
`user_features_pure.csv`. The latent topics still come from the synthetic category tree:
KuaiRand publishes no content, so each tag becomes a leaf category.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from envs.catalog import ACTIVITY_LEVELS, Catalog, CatalogConfig, build_catalog

VIDEO_FILE = "video_features_basic_pure.csv"
USER_FILE = "user_features_pure.csv"


def _read_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; pass the folder that holds KuaiRand-Pure's {path.name} "
            "(e.g. ../shared/data/kuairand-pure)"
        )
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in required if column not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} lacks the columns {missing}; is it KuaiRand-Pure's {path.name}?")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path} has a header but no rows")
    return rows


def read_video_marginals(folder: str | Path) -> dict[str, np.ndarray]:
    """Durations (s), first tag and creator of every video with a known duration."""
    path = Path(folder) / VIDEO_FILE
    rows = _read_rows(path, ("author_id", "video_duration", "tag"))
    durations, tags, authors = [], [], []
    for line_number, row in enumerate(rows, start=2):
        if not row["video_duration"]:
            continue  # ~3% of videos have no duration; they carry no marginal information
        try:
            durations.append(float(row["video_duration"]) / 1000.0)
            tags.append(int(row["tag"].split(",")[0]) if row["tag"] else -1)
            authors.append(int(row["author_id"]))
        except ValueError as error:
            raise ValueError(f"{path}, line {line_number}: {error}") from error
    return {
        "duration_s": np.asarray(durations, dtype=np.float64),
        "tag": np.asarray(tags, dtype=np.int64),
        "author": np.asarray(authors, dtype=np.int64),
    }


def read_activity_mix(folder: str | Path) -> np.ndarray:
    """Share of users at each of `ACTIVITY_LEVELS` (other KuaiRand labels are folded in)."""
    path = Path(folder) / USER_FILE
    rows = _read_rows(path, ("user_active_degree",))
    fold = {"single_low_active": "low_active", "2_14_day_new": "middle_active",
            "30day_retention": "low_active", "day_new": "low_active"}
    counts = np.zeros(len(ACTIVITY_LEVELS))
    for row in rows:
        level = fold.get(row["user_active_degree"], row["user_active_degree"])
        if level in ACTIVITY_LEVELS:
            counts[ACTIVITY_LEVELS.index(level)] += 1
    return counts / counts.sum()


def generate_kuairand_catalog(folder: str | Path, config: CatalogConfig, seed: int) -> Catalog:
    """A catalog of `config.num_items` items with KuaiRand-Pure's marginals.

    Durations and tags are resampled from the videos; creators are built so that the number
    of items per creator follows KuaiRand's authors (most authors have one video). Tags map
    onto the leaf categories of the tree (tag modulo the number of leaves, so every tag keeps
    a fixed leaf).
    """
    videos = read_video_marginals(folder)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, videos["duration_s"].shape[0], size=config.num_items)
    duration_s = videos["duration_s"][picks].clip(1.0, 3_600.0)
    tag = videos["tag"][picks]
    tag = np.where(tag >= 0, tag, videos["tag"].max() + 1)  # one "unknown" tag for the untagged
    leaf = tag % config.num_leaf_categories

    # Items per creator as in KuaiRand: draw creator sizes until every item has a creator.
    _, per_author = np.unique(videos["author"], return_counts=True)
    sizes = rng.choice(per_author, size=config.num_items)
    creator_of_slot = np.repeat(np.arange(config.num_items), sizes)[: config.num_items]
    creator = creator_of_slot[rng.permutation(config.num_items)]
    # Creators are topical: sort items by leaf so that a creator's items share a leaf mostly.
    creator = np.sort(creator)[np.argsort(np.argsort(leaf, kind="stable"), kind="stable")]
    _, creator = np.unique(creator, return_inverse=True)

    return build_catalog(
        config, rng, leaf, creator, duration_s, tag=tag, user_activity_probs=read_activity_mix(folder)
    )
