"""Residual k-means: hand-checked clusters, balanced sizes, determinism, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.rq_kmeans import (
    ResidualKMeans,
    RQKMeansConfig,
    balanced_kmeans,
    capacity_assignment,
    kmeans,
    kmeans_plus_plus_init,
    nearest_centroids,
)

SIX_POINTS = torch.tensor(
    [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [10.0, 10.0], [10.0, 11.0], [11.0, 10.0]]
)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_kmeans_recovers_two_obvious_clusters(seed: int) -> None:
    centroids, assignment = kmeans(SIX_POINTS, 2, generator(seed), RQKMeansConfig(iterations=5))
    assert assignment[0] == assignment[1] == assignment[2]
    assert assignment[3] == assignment[4] == assignment[5]
    assert assignment[0] != assignment[3]
    # By hand: the means of {(0,0), (0,1), (1,0)} and {(10,10), (10,11), (11,10)}.
    assert torch.allclose(centroids[assignment[0]], torch.tensor([1 / 3, 1 / 3]))
    assert torch.allclose(centroids[assignment[3]], torch.tensor([31 / 3, 31 / 3]))


def test_nearest_centroids_matches_brute_force_across_blocks() -> None:
    points = torch.randn(50, 3, generator=generator())
    centroids = torch.randn(7, 3, generator=generator(1))
    distance, index = nearest_centroids(points, centroids, 3, chunk_rows=8, chunk_centroids=2)
    brute = ((points[:, None, :] - centroids[None]) ** 2).sum(-1)  # (50, 7)
    expected_distance, expected_index = brute.topk(3, dim=1, largest=False)
    assert torch.equal(index, expected_index)
    assert torch.allclose(distance, expected_distance, atol=1e-5)


def test_kmeans_plus_plus_seeds_are_distinct_points() -> None:
    seeds = kmeans_plus_plus_init(SIX_POINTS, 6, generator())
    assert sorted(map(tuple, seeds.tolist())) == sorted(map(tuple, SIX_POINTS.tolist()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_empty_clusters_are_reseeded(seed: int) -> None:
    # Two distinct locations for three clusters: two centroids coincide, one of them gets
    # no items and must be re-seeded from a point, so every cluster ends up used.
    points = torch.tensor([[0.0, 0.0]] * 3 + [[1.0, 1.0]])
    _, assignment = kmeans(points, 3, generator(seed), RQKMeansConfig(iterations=3))
    assert torch.bincount(assignment, minlength=3).min() >= 1


def greedy_reference(distance: torch.Tensor, index: torch.Tensor, capacity: list[int]) -> list[int]:
    """Sort all candidate pairs by distance; take a pair while item and cluster are free."""
    pairs = sorted(
        (float(distance[i, j]), i, int(index[i, j]))
        for i in range(distance.shape[0]) for j in range(distance.shape[1])
    )
    assignment, room = [-1] * distance.shape[0], list(capacity)
    for _, item, cluster in pairs:
        if assignment[item] < 0 and room[cluster] > 0:
            assignment[item], room[cluster] = cluster, room[cluster] - 1
    return assignment


@settings(deadline=None, max_examples=40)
@given(
    num_items=st.integers(1, 30), num_clusters=st.integers(1, 8), data=st.data(),
    seed=st.integers(0, 10_000),
)
def test_capacity_assignment_is_the_greedy_matching(num_items, num_clusters, data, seed) -> None:
    candidates = data.draw(st.integers(1, num_clusters))
    capacity = data.draw(st.lists(st.integers(0, 4), min_size=num_clusters,
                                  max_size=num_clusters))
    costs = torch.rand(num_items, num_clusters, generator=generator(seed))
    distance, index = costs.topk(candidates, dim=1, largest=False)
    got = capacity_assignment(index, distance, torch.tensor(capacity))
    assert got.tolist() == greedy_reference(distance, index, capacity)


@settings(deadline=None, max_examples=30)
@given(num_items=st.integers(1, 80), data=st.data(), seed=st.integers(0, 10_000))
def test_balanced_kmeans_sizes_are_floor_or_ceil(num_items, data, seed) -> None:
    k = data.draw(st.integers(1, min(num_items, 12)))
    candidates = data.draw(st.integers(1, 4))  # few candidates exercise the widening fallback
    points = torch.randn(num_items, 3, generator=generator(seed))
    config = RQKMeansConfig(iterations=3, balanced_candidates=candidates)
    _, assignment = balanced_kmeans(points, k, generator(seed), config)
    sizes = torch.bincount(assignment, minlength=k)
    assert sizes.min() >= num_items // k
    assert sizes.max() <= -(-num_items // k)
    assert int(sizes.sum()) == num_items


def test_balanced_kmeans_splits_a_lopsided_set_evenly() -> None:
    # Five points near the origin and one far away: plain k-means gives 5 + 1, balanced 3 + 3.
    points = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.2, 0.0], [0.0, 0.2], [9.0, 9.0]])
    _, assignment = balanced_kmeans(points, 2, generator(), RQKMeansConfig(iterations=5))
    assert sorted(torch.bincount(assignment, minlength=2).tolist()) == [3, 3]
    far_cluster = assignment[5]
    assert int((assignment == far_cluster).sum()) == 3


@pytest.mark.parametrize("balanced", [False, True])
def test_same_seed_gives_identical_codes(balanced: bool) -> None:
    points = torch.randn(300, 8, generator=generator(5))
    config = RQKMeansConfig(codebook_sizes=(8, 4, 4), iterations=5, balanced=balanced, seed=3)
    first = ResidualKMeans(config).fit(points)
    second = ResidualKMeans(config).fit(points)
    assert torch.equal(first.train_codes, second.train_codes)
    assert torch.equal(first.encode(points), second.encode(points))
    assert first.train_codes.shape == (300, 3) and first.train_codes.dtype == torch.int64


def test_reconstruct_sums_the_codebooks_and_levels_reduce_error() -> None:
    points = torch.randn(400, 6, generator=generator(7))
    model = ResidualKMeans(RQKMeansConfig(codebook_sizes=(16, 16), iterations=8)).fit(points)
    codes = model.encode(points)
    expected = model.codebooks[0][codes[:, 0]] + model.codebooks[1][codes[:, 1]]
    assert torch.allclose(model.reconstruct(codes), expected)
    one_level = model.codebooks[0][codes[:, 0]]
    assert ((points - expected) ** 2).sum() < ((points - one_level) ** 2).sum()


def test_balanced_fit_uses_every_code_evenly_at_every_level() -> None:
    points = torch.randn(320, 8, generator=generator(2))
    config = RQKMeansConfig(codebook_sizes=(8, 8), iterations=4, balanced=True)
    codes = ResidualKMeans(config).fit(points).train_codes
    for level in range(2):
        assert torch.bincount(codes[:, level], minlength=8).tolist() == [40] * 8


@pytest.mark.parametrize(
    ("embeddings", "config", "message"),
    [
        (torch.randn(5, 3), RQKMeansConfig(codebook_sizes=(8,)), "exceeds the 5 items"),
        (torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), RQKMeansConfig(codebook_sizes=(1,)),
         "NaN or inf"),
        (torch.tensor([[0.0, float("inf")], [1.0, 1.0]]), RQKMeansConfig(codebook_sizes=(1,)),
         "NaN or inf"),
        (torch.randn(10), RQKMeansConfig(codebook_sizes=(2,)), "must be 2-D"),
        (torch.randn(2, 3, 4), RQKMeansConfig(codebook_sizes=(2,)), "must be 2-D"),
    ],
)
def test_bad_embeddings_are_clear_errors(embeddings, config, message) -> None:
    with pytest.raises(ValueError, match=message):
        ResidualKMeans(config).fit(embeddings)


def test_kmeans_with_more_clusters_than_items_is_an_error() -> None:
    with pytest.raises(ValueError, match="k=7 clusters need at least as many items"):
        kmeans(SIX_POINTS, 7, generator())


def test_encode_checks_width_and_fit() -> None:
    points = torch.randn(40, 4, generator=generator())
    with pytest.raises(ValueError, match="not fitted"):
        ResidualKMeans(RQKMeansConfig(codebook_sizes=(2,))).encode(points)
    model = ResidualKMeans(RQKMeansConfig(codebook_sizes=(2,), iterations=2)).fit(points)
    with pytest.raises(ValueError, match="have 5 dims but the codebooks were fitted on 4"):
        model.encode(torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"codes\[:, 0\] must lie in \[0, 2\)"):
        model.reconstruct(torch.tensor([[2]]))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"codebook_sizes": ()}, "codebook_sizes"),
        ({"codebook_sizes": (8, 0)}, "codebook_sizes"),
        ({"iterations": 0}, "iterations"),
        ({"tolerance": -0.1}, "tolerance"),
        ({"chunk_rows": 0}, "chunk_rows"),
        ({"balanced_candidates": 0}, "balanced_candidates"),
    ],
)
def test_config_validation_names_the_field(overrides, field) -> None:
    with pytest.raises(ValueError, match=field):
        RQKMeansConfig(**overrides)
