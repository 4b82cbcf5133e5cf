"""Ring buffers, the hierarchical k-means and the lifelong compression."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.lifelong import (
    compress_lifelong,
    distinct_items,
    hierarchical_kmeans,
    quantize_content,
)
from envs.pathways import Pathways, RingBuffer
from envs.spec import BLANK, NUM_FEEDBACK


@settings(max_examples=40, deadline=None)
@given(length=st.integers(1, 6),
       pushes=st.lists(st.lists(st.tuples(st.integers(0, 99), st.booleans()), max_size=8),
                       max_size=6))
def test_ring_buffer_window_is_the_last_entries_most_recent_last(length: int,
                                                                 pushes: list) -> None:
    buffer = RingBuffer(num_users=2, length=length, width=1)
    history: list[int] = []
    for push in pushes:
        if not push:
            continue
        items = np.array([[item for item, _ in push]] * 2)
        keep = np.array([[kept for _, kept in push], [False] * len(push)])
        buffer.push(items, items[..., None].astype(np.float32), keep)
        history += [item for item, kept in push if kept]
    items, values = buffer.window()
    expected = ([BLANK] * length + history)[-length:]
    assert items[0].tolist() == expected
    assert values[0, :, 0].tolist() == [max(item, 0) for item in expected]
    assert items[1].tolist() == [BLANK] * length  # the second user kept nothing


@pytest.mark.parametrize("num_items", [8, 1000])  # read in id order; sorted (a big catalog)
def test_distinct_items_by_hand(num_items: int) -> None:
    items = np.array([[5, 2, 5, 7, 2, 2], [3, 3, 3, 3, 3, 3]])
    distinct, index = distinct_items(items, num_items)
    assert distinct.tolist() == [[2, 5, 7], [3, 0, 0]]  # padded with item 0
    assert index.tolist() == [[1, 0, 1, 2, 0, 0], [0] * 6]
    assert np.array_equal(np.take_along_axis(distinct, index, axis=1), items)


def _points(rows: list) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)[None]  # one user, integer-valued coordinates


def test_kmeans_on_six_points_finds_the_two_groups() -> None:
    points = _points([[0, 0], [1, 0], [0, 1], [50, 50], [51, 50], [50, 51]])
    labels, sums = hierarchical_kmeans(points, np.ones((1, 6), dtype=np.int64), max_clusters=2)
    assert labels[0, :3].tolist() == [labels[0, 0]] * 3
    assert labels[0, 3:].tolist() == [labels[0, 3]] * 3 and labels[0, 0] != labels[0, 3]
    near, far = sums[0, labels[0, 0]], sums[0, labels[0, 3]]
    assert near.tolist() == [1, 1, 3, 3]  # weighted sum of points, weight, points
    assert far.tolist() == [151, 151, 3, 3]


def test_kmeans_splits_into_cube_root_many_and_respects_the_budget() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 3)) * 20
    points = np.rint(centres[np.arange(64) % 4] + rng.normal(size=(64, 3)))[None]  # |D| = 64
    labels, _ = hierarchical_kmeans(points.astype(np.float32), np.ones((1, 64), dtype=np.int64),
                                    max_clusters=4)
    # floor(cbrt(64)) = 4 children at the first level, which is the whole budget
    assert sorted(np.unique(labels[0])) == [0, 1, 2, 3]
    for centre in range(4):
        assert len(np.unique(labels[0, np.arange(64) % 4 == centre])) == 1


def test_weights_stand_for_repeated_points_and_padding_is_ignored() -> None:
    points = _points([[0], [1], [10], [11], [99]])
    weights = np.array([[3, 1, 2, 2, 0]])
    labels, sums = hierarchical_kmeans(points, weights, max_clusters=2)
    assert labels[0, 4] == -1
    assert labels[0, 0] == labels[0, 1] != labels[0, 2] == labels[0, 3]
    assert sums[0, labels[0, 0]].tolist() == [1, 4, 2]  # 3 * 0 + 1 * 1, weight 4, 2 points


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 120), min_size=2, max_size=5), seed=st.integers(0, 99),
       max_clusters=st.integers(2, 24))
def test_a_users_clusters_are_the_same_bits_in_any_batch(sizes: list, seed: int,
                                                         max_clusters: int) -> None:
    rng = np.random.default_rng(seed)
    width = max(sizes)
    points = rng.integers(-60, 61, size=(len(sizes), width, 5)).astype(np.float32)
    weights = rng.integers(1, 9, size=(len(sizes), width)) * (np.arange(width) < np.array(
        sizes)[:, None])
    batch_labels, batch_sums = hierarchical_kmeans(points, weights, max_clusters)
    for user, size in enumerate(sizes):
        alone_labels, alone_sums = hierarchical_kmeans(points[user:user + 1, :size],
                                                       weights[user:user + 1, :size],
                                                       max_clusters)
        assert np.array_equal(batch_labels[user, :size], alone_labels[0])
        assert np.array_equal(batch_sums[user], alone_sums[0])
        assert (batch_labels[user, size:] == -1).all()


def test_quantised_content_keeps_the_geometry_on_an_integer_grid() -> None:
    content = np.random.default_rng(3).normal(size=(500, 32))
    points = quantize_content(content, lifelong_history=2000)
    assert points.dtype == np.float32 and np.array_equal(points, np.rint(points))
    assert 64 <= np.abs(points).max() <= 255  # bound for 32 dims and 2,000 impressions
    scale = np.abs(points).max() / np.abs(content - content.mean(0)).max()
    assert np.abs(points / scale - (content - content.mean(0))).max() <= 0.5 / scale + 1e-9


def test_lifelong_entries_by_hand() -> None:
    content = np.array([[0.0, 0.0], [0.2, 0.0], [9.0, 9.0], [9.4, 9.0], [9.2, 9.0]])
    items = np.array([[2, 0, 1, 0, 3, 4]])  # oldest first
    feedback = np.zeros((1, 6, NUM_FEEDBACK), dtype=np.float32)
    feedback[0, :, 0] = [10, 20, 30, 40, 50, 60]
    entries, features = compress_lifelong(items, feedback, quantize_content(content, 6),
                                          length=2)
    # clusters {0, 1} (impressions 1, 2, 3) and {2, 3, 4} (impressions 0, 4, 5); the second
    # was seen last, so it comes last; nearest to {0,0,0.2}'s mean is item 0, to 9.2's item 4
    assert entries.tolist() == [[0, 4]]
    assert features[0, :, 0].tolist() == [30.0, 40.0]
    assert features[0, :, NUM_FEEDBACK].tolist() == [3.0, 3.0]


def test_an_entry_is_the_item_nearest_its_centroid_when_none_sits_on_it() -> None:
    content = np.array([[0.0], [14.0], [19.0], [300.0], [305.0], [337.0]])
    items = np.arange(6)[None]  # each item once: clusters {0, 1, 2} and {3, 4, 5}
    points = quantize_content(content, 6)
    entries, features = compress_lifelong(items, np.zeros((1, 6, NUM_FEEDBACK), np.float32),
                                          points, length=2)
    # centroids rint(-664 / 3) = -221 and rint(664 / 3) = 221: item 1 (4 away) and item 4
    # (13 away) are the nearest
    assert points[:, 0].tolist() == [-237, -217, -210, 201, 208, 255]
    assert entries.tolist() == [[1, 4]]
    assert features[0, :, NUM_FEEDBACK].tolist() == [3.0, 3.0]


def test_short_histories_are_not_compressed_and_pad_in_front() -> None:
    items = np.array([[3, 1, 2]])
    feedback = np.ones((1, 3, NUM_FEEDBACK), dtype=np.float32)
    entries, features = compress_lifelong(items, feedback, quantize_content(np.eye(4), 3),
                                          length=5)
    assert entries.tolist() == [[BLANK, BLANK, 3, 1, 2]]
    assert features[0, :2].sum() == 0 and (features[0, 2:, NUM_FEEDBACK] == 1).all()


def test_a_users_lifelong_does_not_depend_on_the_batch() -> None:
    rng = np.random.default_rng(1)
    points = quantize_content(rng.normal(size=(300, 8)), 500)
    items = rng.integers(0, 300, size=(4, 500))
    feedback = rng.random((4, 500, NUM_FEEDBACK)).astype(np.float32)
    batch_items, batch_features = compress_lifelong(items, feedback, points, length=32)
    alone_items, alone_features = compress_lifelong(items[2:3], feedback[2:3], points, 32)
    assert np.array_equal(batch_items[2:3], alone_items)
    assert np.array_equal(batch_features[2:3], alone_features)
    assert (batch_features[..., NUM_FEEDBACK].sum(1) == 500).all()
    assert (batch_items >= 0).sum(1).max() <= 32


def test_points_quantised_for_a_shorter_history_are_refused() -> None:
    points = quantize_content(np.random.default_rng(2).normal(size=(50, 32)), 100)
    items = np.random.default_rng(2).integers(0, 50, size=(1, 300_000))
    with pytest.raises(ValueError, match="lifelong_history"):
        compress_lifelong(items, np.zeros((*items.shape, NUM_FEEDBACK), np.float32), points, 8)


def test_restore_then_record_continues_like_the_original() -> None:
    rng = np.random.default_rng(2)
    original = Pathways(1, short_term_length=4, positive_length=3, lifelong_length=2,
                        lifelong_history=10)
    history = rng.integers(0, 50, size=(1, 9))
    feedback = (rng.random((1, 9, NUM_FEEDBACK)) < 0.5).astype(np.float32)
    original.start(np.array([0]), np.zeros((1, 5), dtype=np.int64), history, feedback,
                   np.array([[1, 2]]), np.zeros((1, 2, NUM_FEEDBACK + 1), dtype=np.float32))
    copy = Pathways(1, 4, 3, 2, 10)
    copy.restore(np.array([0]), original.observation())
    slate, shown = rng.integers(0, 50, size=(1, 3)), np.array([[True, False, True]])
    for pathways in (original, copy):
        pathways.record(slate, feedback[:, :3], shown)
    for key, value in original.observation().items():
        assert np.array_equal(value, copy.observation()[key]), key
