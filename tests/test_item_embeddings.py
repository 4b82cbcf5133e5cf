"""Item embeddings: pairs from sequences, the InfoNCE loss by hand, training behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from policies.item_embeddings import (
    ItemEmbeddingConfig,
    consecutive_pairs,
    info_nce,
    train_item_embeddings,
)
from tests.test_reward_doubles import single_threaded_torch  # noqa: F401 (autouse: tiny tensors)

SMALL = ItemEmbeddingConfig(dim=16, steps=80, batch_size=64, hidden=32, learning_rate=1e-2)


def test_consecutive_pairs_by_hand() -> None:
    sequences = [np.array([1, 2, 2, 3]), np.array([4]), np.array([5, 6])]
    assert consecutive_pairs(sequences).tolist() == [[1, 2], [2, 3], [5, 6]]
    assert consecutive_pairs([np.array([7])]).shape == (0, 2)
    # window 2: each item also pairs with the one two places later (a gap-2 repeat dropped).
    assert sorted(consecutive_pairs(sequences, window=2).tolist()) == [
        [1, 2], [1, 2], [2, 3], [2, 3], [5, 6]]
    with pytest.raises(ValueError, match="window must be >= 1"):
        consecutive_pairs(sequences, window=0)


def test_info_nce_by_hand() -> None:
    unit = torch.eye(2)  # two orthogonal items: logits are the identity at temperature 1
    loss = info_nce(unit, unit, torch.tensor([0, 1]), torch.tensor([2, 3]), temperature=1.0)
    # Each row: -log(e^1 / (e^1 + e^0)) = log(1 + e^-1), the same in both directions.
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_info_nce_does_not_use_a_duplicate_item_as_negative() -> None:
    anchors = torch.eye(2)
    positives = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # the same item twice
    loss = info_nce(anchors, positives, torch.tensor([0, 1]), torch.tensor([5, 5]), 1.0)
    # anchor->positive: the other column is masked, so that direction costs 0; positive->
    # anchor rows both see logits [0, 1] with targets 0 and 1.
    expected = 0.5 * 0.5 * (math.log(1 + math.e) + math.log(1 + math.exp(-1)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def two_groups_pairs(num_items: int = 40, num_pairs: int = 2000, seed: int = 0) -> np.ndarray:
    """Pairs only within items [0, 20) or within [20, 40)."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 2, size=num_pairs) * (num_items // 2)
    return rng.integers(0, num_items // 2, size=(num_pairs, 2)) + group[:, None]


def test_co_engaged_items_end_up_closer_than_others() -> None:
    embeddings = train_item_embeddings(40, two_groups_pairs(), SMALL)
    assert embeddings.shape == (40, 16) and embeddings.dtype == torch.float32
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(40), atol=1e-5)
    similarity = embeddings @ embeddings.T
    within = (similarity[:20, :20].mean() + similarity[20:, 20:].mean()) / 2
    between = similarity[:20, 20:].mean()
    assert within > between + 0.3


def test_same_seed_same_embeddings_with_and_without_content() -> None:
    pairs = two_groups_pairs()
    content = np.random.default_rng(1).normal(size=(40, 6)).astype(np.float32)
    for features in (None, content):
        first = train_item_embeddings(40, pairs, SMALL, content=features)
        second = train_item_embeddings(40, pairs, SMALL, content=features)
        assert torch.equal(first, second)


def test_content_reconstruction_keeps_content_in_the_embedding() -> None:
    # Two kinds of content; every pair joins an item of one kind with one of the other, so
    # the contrastive term alone pulls the kinds together. The reconstruction term must keep
    # them apart: the embedding has to say which content it came from.
    rng = np.random.default_rng(2)
    content = np.repeat(rng.normal(size=(2, 6)), 20, axis=0).astype(np.float32)  # (40, 6)
    content += 0.3 * rng.normal(size=content.shape).astype(np.float32)
    pairs = np.stack([np.arange(20), np.arange(20, 40)], axis=1)  # kind 0 with kind 1

    def paired_similarity(weight: float) -> float:
        config = ItemEmbeddingConfig(dim=16, steps=150, batch_size=20, hidden=32,
                                     learning_rate=1e-2, reconstruction_weight=weight)
        embeddings = train_item_embeddings(40, pairs, config, content=content)
        return float((embeddings[:20] * embeddings[20:]).sum(dim=1).mean())

    assert paired_similarity(10.0) < paired_similarity(0.0) - 0.15


@pytest.mark.parametrize(
    ("pairs", "content", "message"),
    [
        (np.array([1, 2]), None, r"pairs must have shape \(P, 2\)"),
        (np.zeros((0, 2), dtype=np.int64), None, r"pairs must have shape \(P, 2\)"),
        (np.array([[0, 40]]), None, r"item ids in \[0, 40\)"),
        (np.array([[0, 1]]), np.zeros((39, 3), dtype=np.float32), r"content must have shape"),
        (np.array([[0, 1]]), np.full((40, 3), np.nan, dtype=np.float32), "NaN"),
    ],
)
def test_bad_training_inputs_are_clear_errors(pairs, content, message) -> None:
    with pytest.raises(ValueError, match=message):
        train_item_embeddings(40, pairs, SMALL, content=content)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"dim": 0}, "dim"), ({"batch_size": 1}, "batch_size"), ({"temperature": 0.0}, "temperature"),
     ({"reconstruction_weight": -1.0}, "reconstruction_weight")],
)
def test_config_validation_names_the_field(overrides, field) -> None:
    with pytest.raises(ValueError, match=field):
        ItemEmbeddingConfig(**overrides)
