"""The synthetic and KuaiRand-calibrated catalogs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.catalog import Catalog, CatalogConfig, generate_synthetic_catalog
from envs.kuairand import generate_kuairand_catalog, read_activity_mix
from tests.conftest import shared_data

SMALL = CatalogConfig(num_items=2_000, num_creators=200)


def test_same_seed_same_catalog_and_other_seed_differs() -> None:
    first = generate_synthetic_catalog(SMALL, seed=3)
    second = generate_synthetic_catalog(SMALL, seed=3)
    other = generate_synthetic_catalog(SMALL, seed=4)
    np.testing.assert_array_equal(first.content, second.content)
    np.testing.assert_array_equal(first.creator, second.creator)
    assert not np.array_equal(first.content, other.content)


def test_fields_have_the_documented_shapes_and_ranges() -> None:
    catalog = generate_synthetic_catalog(SMALL, seed=0)
    n = SMALL.num_items
    assert catalog.topics.shape == (n, SMALL.topic_dim)
    np.testing.assert_allclose(np.linalg.norm(catalog.topics, axis=1), 1.0, rtol=1e-5)
    assert catalog.content.shape == (n, SMALL.content_dim)
    assert catalog.popularity.sum() == pytest.approx(1.0, rel=1e-4)
    assert ((catalog.quality > 0) & (catalog.quality < 1)).all()
    assert (catalog.duration_s >= 3).all() and (catalog.duration_s <= 600).all()
    top, middle, leaf = SMALL.categories_per_level
    assert catalog.category[:, 0].max() < top
    assert catalog.category[:, 1].max() < top * middle
    assert catalog.category[:, 2].max() < top * middle * leaf
    assert catalog.creator.max() < SMALL.num_creators


def test_category_tree_is_consistent_and_topical() -> None:
    catalog = generate_synthetic_catalog(SMALL, seed=0)
    _, middle, leaf = SMALL.categories_per_level
    # A leaf belongs to exactly one middle category, which belongs to one top category.
    np.testing.assert_array_equal(catalog.category[:, 2] // leaf, catalog.category[:, 1])
    np.testing.assert_array_equal(catalog.category[:, 1] // middle, catalog.category[:, 0])
    # Items of one leaf are closer in topic space than random pairs.
    same_leaf = catalog.coengaged_pairs(2_000, np.random.default_rng(1))
    random_pairs = np.random.default_rng(2).integers(0, SMALL.num_items, size=(2_000, 2))

    def mean_similarity(pairs: np.ndarray) -> float:
        return float((catalog.topics[pairs[:, 0]] * catalog.topics[pairs[:, 1]]).sum(1).mean())

    assert mean_similarity(same_leaf) > mean_similarity(random_pairs) + 0.2


def test_content_farms_are_worse_and_more_clickbait() -> None:
    catalog = generate_synthetic_catalog(SMALL, seed=0)
    farm = catalog.content_farm
    assert 0 < farm.mean() < 0.3
    assert catalog.quality[farm].mean() < catalog.quality[~farm].mean()
    assert catalog.clickbait[farm].min() > catalog.clickbait[~farm].max()


@settings(max_examples=20, deadline=None)
@given(num_pairs=st.integers(1, 500), seed=st.integers(0, 2**31))
def test_coengaged_pairs_are_valid_item_ids(num_pairs: int, seed: int) -> None:
    catalog = generate_synthetic_catalog(CatalogConfig(num_items=300, num_creators=30), seed=0)
    pairs = catalog.coengaged_pairs(num_pairs, np.random.default_rng(seed))
    assert pairs.shape == (num_pairs, 2) and pairs.dtype == np.int64
    assert pairs.min() >= 0 and pairs.max() < catalog.num_items


def test_save_load_round_trip_and_corrupt_file(tmp_path) -> None:
    catalog = generate_synthetic_catalog(SMALL, seed=0)
    path = tmp_path / "catalog.npz"
    catalog.save(path)
    loaded = Catalog.load(path)
    np.testing.assert_array_equal(loaded.content, catalog.content)
    np.testing.assert_array_equal(loaded.content_farm, catalog.content_farm)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable catalog"):
        Catalog.load(path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_items", 1, "num_items"),
        ("categories_per_level", (8, 0, 4), "categories_per_level"),
        ("num_creators", 0, "num_creators"),
        ("content_farm_share", 1.5, "content_farm_share"),
    ],
)
def test_invalid_config_names_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CatalogConfig(**{field: value})


def test_kuairand_catalog_follows_the_real_marginals() -> None:
    folder = shared_data("kuairand-pure")
    catalog = generate_kuairand_catalog(folder, CatalogConfig(num_items=3_000), seed=0)
    # KuaiRand-Pure's median video lasts about 81 s (the synthetic default is 30 s).
    assert 60 < np.median(catalog.duration_s) < 100
    items_per_creator = np.bincount(catalog.creator)
    assert (items_per_creator == 1).mean() > 0.7  # most KuaiRand authors have one video
    mix = read_activity_mix(folder)
    assert mix.sum() == pytest.approx(1.0) and mix.argmax() == 3  # "full_active" dominates


def test_kuairand_missing_folder_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="video_features_basic_pure.csv"):
        generate_kuairand_catalog(tmp_path, CatalogConfig(num_items=100), seed=0)
    (tmp_path / "video_features_basic_pure.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="lacks the columns"):
        generate_kuairand_catalog(tmp_path, CatalogConfig(num_items=100), seed=0)
