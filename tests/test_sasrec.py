"""SASRec learns "item i is followed by i + 1", is seeded, and handles any padding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.interface import Recommender
from policies.sasrec import (
    SASRecConfig,
    SASRecRecommender,
    pack_right,
    train_sasrec,
    training_windows,
)

NUM_ITEMS = 30
CONFIG = SASRecConfig(width=32, layers=1, heads=2, max_len=6, dropout=0.1, batch_size=32,
                      steps=150, learning_rate=5e-3, seed=7)
# Every sequence walks up the catalog (wrapping around): the next item is always i + 1.
SEQUENCES = [[(start + offset) % NUM_ITEMS for offset in range(8)] for start in range(NUM_ITEMS)]


@pytest.mark.parametrize("negatives", [0, 8])  # full softmax, and 8 sampled negatives
def test_loss_goes_down_and_the_successor_ranks_first(negatives: int) -> None:
    losses: list[float] = []
    config = dataclasses.replace(CONFIG, negatives=negatives)
    model = train_sasrec(SEQUENCES, NUM_ITEMS, config,
                         on_step=lambda step, loss: losses.append(loss))
    assert len(losses) == CONFIG.steps
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:10])
    histories = torch.tensor([[-1, -1, (i - 1) % NUM_ITEMS, i] for i in range(NUM_ITEMS)])
    best = model.scores(histories).argmax(dim=1)
    assert (best == (torch.arange(NUM_ITEMS) + 1) % NUM_ITEMS).float().mean() > 0.9


def test_same_seed_same_weights_and_global_rng_untouched() -> None:
    config = SASRecConfig(width=16, layers=1, heads=1, max_len=6, batch_size=8, steps=5, seed=3)
    torch.manual_seed(123)
    before = torch.rand(1)
    first = train_sasrec(SEQUENCES, NUM_ITEMS, config)
    second = train_sasrec(SEQUENCES, NUM_ITEMS, config)
    second_state = second.state_dict()
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second_state[name]), name
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), before)  # training drew nothing from the global RNG


def test_windows_cover_every_transition_once() -> None:
    windows = training_windows([[1, 2, 3, 4, 5, 6, 7], [8], [9, 10]], max_len=3)
    transitions = {
        (int(row[i]), int(row[i + 1])) for row in windows for i in range(3) if row[i] >= 0
    }
    pairs = sum(int(row[i] >= 0) for row in windows for i in range(3))
    assert transitions == {(1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7), (9, 10)}
    assert pairs == len(transitions)


@settings(deadline=None, max_examples=30)
@given(st.lists(st.lists(st.integers(-1, 9), min_size=5, max_size=5), min_size=1, max_size=4))
def test_pack_right_keeps_order_and_moves_padding_left(rows: list[list[int]]) -> None:
    packed = pack_right(torch.tensor(rows))
    for row, out in zip(rows, packed.tolist(), strict=True):
        valid = [item for item in row if item >= 0]
        assert out == [-1] * (5 - len(valid)) + valid


def test_padding_position_does_not_change_scores() -> None:
    model = train_sasrec(SEQUENCES, NUM_ITEMS, SASRecConfig(width=16, layers=1, heads=1,
                                                            max_len=6, steps=2, seed=0))
    left = model.scores(torch.tensor([[-1, -1, 3, 4]]))
    scattered = model.scores(torch.tensor([[3, -1, 4, -1]]))
    torch.testing.assert_close(left, scattered)


def test_recommender_reads_the_positive_pathway_and_skips_seen_items() -> None:
    model = train_sasrec(SEQUENCES, NUM_ITEMS, dataclasses.replace(CONFIG, negatives=0))
    positive = np.full((2, 6), -1)
    positive[0, -2:] = [3, 4]
    positive[1, -2:] = [10, 11]
    observation = {"positive_items": positive, "short_term_items": np.array([[5], [-1]])}
    recommender = SASRecRecommender(model, slate_size=1)
    assert isinstance(recommender, Recommender)
    top = recommender.recommend(observation, 3, np.random.default_rng(0))
    assert top.shape == (2, 3) and top[1, 0] == 12  # the successor of the last item
    assert not {3, 4, 5} & set(top[0].tolist())  # seen items (both pathways) are skipped
    slates = recommender.act(observation, np.random.default_rng(0))
    np.testing.assert_array_equal(slates, top[:, :1])
