"""Random and popular recommenders: shapes, determinism, exclusion of seen items."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.baselines import PopularRecommender, RandomRecommender
from policies.interface import Recommender


def observation(short_term: list[list[int]], positive: list[list[int]]) -> dict[str, np.ndarray]:
    """The item pathways of a batch of users (other pathways are not read by these baselines)."""
    return {
        "static": np.zeros((len(short_term), 5), dtype=np.int64),
        "short_term_items": np.array(short_term, dtype=np.int64),
        "positive_items": np.array(positive, dtype=np.int64),
    }


@settings(deadline=None, max_examples=25)
@given(users=st.integers(1, 6), items=st.integers(1, 40), k=st.integers(1, 50),
       seed=st.integers(0, 99))
def test_random_gives_distinct_items_and_repeats_with_the_seed(users, items, k, seed) -> None:
    recommender = RandomRecommender(items, slate_size=3)
    batch = {"static": np.zeros((users, 5), dtype=np.int64)}
    first = recommender.recommend(batch, k, np.random.default_rng(seed))
    again = recommender.recommend(batch, k, np.random.default_rng(seed))
    assert first.shape == (users, k) and first.dtype == np.int64
    np.testing.assert_array_equal(first, again)
    for row in first:
        shown = row[row >= 0]
        assert len(set(shown.tolist())) == shown.size == min(k, items)
        assert shown.max() < items


def test_popular_ranks_by_popularity_and_skips_seen_items() -> None:
    popularity = np.array([5.0, 1.0, 9.0, 0.0, 7.0])
    batch = observation(short_term=[[-1, 2], [-1, -1]], positive=[[4, -1], [-1, -1]])
    recommender = PopularRecommender(popularity, slate_size=2)
    slates = recommender.act(batch, np.random.default_rng(0))
    np.testing.assert_array_equal(slates, [[0, 1], [2, 4]])
    everything = recommender.recommend(batch, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(everything[0], [0, 1, 3, -1, -1])  # 3 items left, then blanks
    keep_seen = PopularRecommender(popularity, slate_size=2, exclude_seen=False)
    np.testing.assert_array_equal(keep_seen.act(batch, np.random.default_rng(0)), [[2, 4], [2, 4]])


def test_baselines_follow_the_interface_and_reject_bad_sizes() -> None:
    assert isinstance(RandomRecommender(10, 2), Recommender)
    assert isinstance(PopularRecommender(np.ones(10), 2), Recommender)
    with pytest.raises(ValueError, match="slate_size"):
        RandomRecommender(10, 0)
    with pytest.raises(ValueError, match="non-negative"):
        PopularRecommender(np.array([1.0, -1.0]), 2)
