"""Recall@K and NDCG@K against values computed by hand, and invalid generations counted."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.beauty import EvaluationExamples, load_beauty
from onerec_lab.experiment.offline import DEFAULT_STEPS, OfflineConfig, split_metrics
from tests.test_cli import run_cli
from trainers.offline_eval import drop_history_items, evaluate_ranker, ranks_from_scores


def examples(histories: list[list[int]], targets: list[int]) -> EvaluationExamples:
    """Left-padded examples, as `envs.beauty` builds them."""
    width = max(len(history) for history in histories)
    rows = [[-1] * (width - len(history)) + history for history in histories]
    lengths = [len(history) for history in histories]
    return EvaluationExamples(np.array(rows), np.array(lengths), np.array(targets))


# Three users over 6 items. Histories are irrelevant to the fixed scorer below.
EXAMPLES = examples([[0, 1], [3], [5, 0, 1]], [2, 4, 5])
SCORES = torch.tensor(
    [
        [0.9, 0.1, 0.8, 0.3, 0.2, 0.0],  # target 2 has rank 1 (behind item 0)
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # target 4 has rank 1 (behind item 5)
        [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],  # target 5 has rank 5 (last)
    ]
)


def fixed_scorer(histories: torch.Tensor) -> torch.Tensor:
    return SCORES[: histories.shape[0]]


def test_scores_match_hand_computed_metrics() -> None:
    result = evaluate_ranker(fixed_scorer, EXAMPLES, ks=(1, 2, 5), batch_size=3)
    second = 1 / math.log2(3)  # NDCG of a hit at rank 1 (0-based)
    assert result["recall@1"] == 0.0
    assert result["recall@2"] == pytest.approx(2 / 3)
    assert result["ndcg@2"] == pytest.approx(2 * second / 3)
    assert result["recall@5"] == pytest.approx(2 / 3)  # rank 5 is outside the top 5
    assert result["ndcg@5"] == pytest.approx(2 * second / 3)
    assert result["invalid_rate"] == 0.0 and result["users"] == 3


def test_metrics_by_group_split_the_users() -> None:
    result = evaluate_ranker(fixed_scorer, EXAMPLES, ks=(2,), batch_size=2,
                             groups=np.array([7, 3, 7]))
    by_group = result["by_group"]
    assert sorted(by_group) == [3, 7] and (by_group[3]["users"], by_group[7]["users"]) == (1, 2)
    # the pooled mean is the users-weighted mean of the groups'
    pooled = sum(group["recall@2"] * group["users"] for group in by_group.values()) / 3
    assert pooled == pytest.approx(result["recall@2"])
    # user 1 (group 3) hits at rank 1; of group 7, user 0 hits and user 2 (rank 5) misses
    assert (by_group[3]["recall@2"], by_group[7]["recall@2"]) == (1.0, 0.5)
    with pytest.raises(ValueError, match="one label per example"):
        evaluate_ranker(fixed_scorer, EXAMPLES, groups=np.array([1, 2]))


def test_excluding_history_moves_targets_up() -> None:
    # user 0's history [0, 1] holds the item ahead of its target; user 2's history holds its target
    result = evaluate_ranker(fixed_scorer, EXAMPLES, ks=(1,), exclude_history=True)
    assert result["recall@1"] == pytest.approx(1 / 3)


def test_item_lists_count_hits_and_invalid_generations() -> None:
    lists = np.array([[2, -1, 0], [-1, -1, -1], [1, 0, 5]])

    def generator(histories: torch.Tensor) -> np.ndarray:
        return lists

    result = evaluate_ranker(generator, EXAMPLES, ks=(1, 3))
    assert result["recall@1"] == pytest.approx(1 / 3)
    assert result["recall@3"] == pytest.approx(2 / 3)
    assert result["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert result["invalid_rate"] == pytest.approx(4 / 9)


def test_excluding_history_drops_history_items_from_generated_lists() -> None:
    # histories [0, 1], [3], [5, 0, 1]; targets 2, 4, 5 (user 2's target repeats its history)
    lists = torch.tensor([[0, 2, -1], [3, 4, 1], [5, 0, 1]])
    assert drop_history_items(lists, torch.as_tensor(EXAMPLES.histories)).tolist() == [
        [2, -1, -1], [4, 1, -1], [-1, -1, -1]]

    as_generated = evaluate_ranker(lambda h: lists, EXAMPLES, ks=(1, 3))
    masked = evaluate_ranker(lambda h: lists, EXAMPLES, ks=(1, 3), exclude_history=True)
    assert as_generated["recall@1"] == pytest.approx(1 / 3)  # only user 2, by its repeat
    assert masked["recall@1"] == pytest.approx(2 / 3)  # users 0 and 1 move up; user 2 misses
    assert masked["invalid_rate"] == as_generated["invalid_rate"] == pytest.approx(1 / 9)


def test_short_lists_and_bad_scores_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="fewer than"):
        evaluate_ranker(lambda h: np.zeros((h.shape[0], 2), dtype=np.int64), EXAMPLES, ks=(5,))
    with pytest.raises(ValueError, match="NaN"):
        evaluate_ranker(lambda h: torch.full((h.shape[0], 6), float("nan")), EXAMPLES)


def test_constant_scores_earn_no_free_hits() -> None:
    ranks = ranks_from_scores(torch.zeros(2, 100), torch.tensor([0, 99]))
    assert ranks.tolist() == [0, 99]  # ties broken by item id, as a stable sort would


@settings(deadline=None, max_examples=30)
@given(
    users=st.integers(1, 12), items=st.integers(2, 30), seed=st.integers(0, 10_000),
    batch_size=st.integers(1, 5),
)
def test_scores_and_their_sorted_lists_agree(
    users: int, items: int, seed: int, batch_size: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(users, items, generator=generator)
    targets = torch.randint(0, items, (users,), generator=generator).numpy()
    # Each history is the user's own index, so a scorer can look its row up in any batch.
    users_as_histories = examples([[user] for user in range(users)], targets.tolist())
    ordered = torch.argsort(scores, dim=1, descending=True, stable=True)

    def scorer(histories: torch.Tensor) -> torch.Tensor:
        return scores[histories[:, 0]]

    from_scores = evaluate_ranker(scorer, users_as_histories, ks=(1, 2), batch_size=batch_size)
    from_lists = evaluate_ranker(lambda h: ordered, users_as_histories, ks=(1, 2), batch_size=users)
    for name in ("recall@1", "ndcg@1", "recall@2", "ndcg@2"):
        assert from_scores[name] == pytest.approx(from_lists[name])


def test_split_metrics_rank_the_chosen_split_targets(tmp_path) -> None:
    data = tmp_path / "two_users.txt"
    data.write_text("1 1 2 3 4\n2 5 6 7 8\n")  # raw item i is item i - 1
    dataset = load_beauty(data)
    # Each user's validation target (items 2 and 6) first, then 4 other items, 5 invalid codes.
    lists = torch.tensor([[2, 0, 1, 4, 5] + [-1] * 5, [6, 0, 1, 4, 5] + [-1] * 5])

    valid = split_metrics(lambda histories: lists, dataset, "valid")
    test = split_metrics(lambda histories: lists, dataset, "test")  # targets 3 and 7: missed
    assert valid["recall@5"] == valid["ndcg@10"] == 1.0
    assert test["recall@10"] == test["ndcg@10"] == 0.0
    assert valid["invalid_rate"] == test["invalid_rate"] == 0.5
    assert valid["users"] == test["users"] == 2


@pytest.mark.parametrize(("model", "split", "options"), [
    ("sasrec", "test", ()), ("onerec", "test", ()), ("onerec", "valid", ()),
    ("onerec", "test", ("--code-embeddings", "sasrec", "--code-embedding-steps", "20",
                        "--item-id-input")),
    ("onerec", "test", ("--pair-window", "3")),
    ("onerec", "valid", ("--no-repeat-bias",)),
])
def test_evaluate_offline_command_end_to_end(model: str, split: str, options: tuple[str, ...],
                                             tmp_path) -> None:
    rng = np.random.default_rng(0)
    lines = [
        " ".join(map(str, [user, *rng.integers(1, 31, size=rng.integers(4, 9))]))
        for user in range(1, 41)
    ]
    data = tmp_path / "tiny_beauty.txt"
    data.write_text("\n".join(lines) + "\n")
    result = run_cli("evaluate-offline", "--data", str(data), "--model", model, "--steps", "3",
                     "--batch-size", "8", "--codebook", "4", "--split", split, "--json",
                     *options)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["users"] == 40 and report["steps"] == 3 and report["split"] == split
    for name in ("recall@5", "ndcg@5", "recall@10", "ndcg@10", "invalid_rate"):
        assert 0.0 <= report[name] <= 1.0
    assert report["ndcg@10"] <= report["recall@10"] and report["hardware"]
    if model == "onerec":
        assert report["code_embeddings"] == ("sasrec" if "--code-embeddings" in options
                                             else "infonce")
        assert ("repeat_bias" in report) == ("--no-repeat-bias" not in options)
        if "--code-embedding-steps" in options:
            assert report["code_embedding_steps"] == 20
    if "repeat_bias" in report:  # the default's learned offsets, (2, L): 3 steps moved them
        offsets = report["repeat_bias"]["continues"] + report["repeat_bias"]["commits"]
        assert len(offsets) == 8 and any(offset != 0 for offset in offsets)


def test_defaults_depend_on_the_model_and_bad_values_are_errors() -> None:
    assert OfflineConfig(model="onerec").steps == DEFAULT_STEPS["onerec"]
    assert OfflineConfig(model="sasrec").steps == DEFAULT_STEPS["sasrec"]
    assert OfflineConfig(steps=7).steps == 7
    with pytest.raises(ValueError, match="--embedding-temperature"):
        OfflineConfig(embedding_temperature=0.0)
    with pytest.raises(ValueError, match="--dropout"):
        OfflineConfig(dropout=1.0)
    with pytest.raises(ValueError, match="--pair-window must be >= 1"):
        OfflineConfig(pair_window=0)
