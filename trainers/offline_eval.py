"""Offline ranking metrics: Recall@K and NDCG@K under leave-one-out with full ranking.

The protocol is TIGER's (and SASRec's / S3-Rec's) on Amazon Beauty: every user has one held-out
target item, the model sees the user's history (at most 20 items) and ranks ALL items; a hit at
K means the target is among the top K, and NDCG@K = 1 / log2(rank + 2) for a 0-based rank < K
(one relevant item, so the ideal DCG is 1).

A ranker is either a scorer (history -> float scores over all N items) or a generator (history
-> its top-K item list, -1 where it produced no valid item, e.g. an illegal semantic-ID code);
`evaluate_ranker` tells them apart by the dtype of what the ranker returns.

History items are NOT excluded from the ranking by default. TIGER decodes item lists by beam
search over all items and its paper describes no masking of the history (a beam may return a
history item, as a repeat purchase would), so its figures rank all items. The public
S3-Rec/ICLRec code, the usual source of SASRec figures on this file, does mask each user's
history items (their scores set to 0) before taking the top K; `exclude_history=True` gives
that convention (with -inf) for score-based rankers, and for a generated list it drops the
history items from the list (the rest move up, the tail is padded with BLANK; invalid_rate
still counts the list as generated). A masked item, including a target that repeats a
history item, goes to the bottom of the ranking.

Letters used in shape comments: U users (examples), B batch, T history length, N items,
K top-k length of a generated list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from envs.spec import BLANK
from policies.interface import mask_items


class LeaveOneOutExamples(Protocol):
    """One history and one held-out target per user (e.g. `envs.beauty.EvaluationExamples`)."""

    histories: np.ndarray  # (U, T) int64, most recent item last, left-padded with BLANK
    targets: np.ndarray  # (U,) int64, the item that followed the history


# A ranker maps a batch of histories (B, T) int64 to float scores (B, N) or an item list (B, K).
Ranker = Callable[[torch.Tensor], torch.Tensor | np.ndarray]


def ranks_from_scores(
    scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """0-based rank of each target among all N items by descending score.

    Ties are broken by item id (the lower id ranks first), as a stable sort would, so a
    constant scorer earns no free hits. `exclude` (B, H) lists items, padded with BLANK,
    pushed to the bottom of the ranking. scores (B, N) float, targets (B,) -> (B,) int64.
    """
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf; a ranker must return finite scores")
    num_items = scores.shape[1]
    if targets.min() < 0 or targets.max() >= num_items:
        raise ValueError(
            f"targets must be item ids in [0, {num_items}), got range "
            f"[{int(targets.min())}, {int(targets.max())}]; scores have one column per item"
        )
    scores = scores.float()
    if exclude is not None:
        scores = mask_items(scores, exclude, float("-inf"))
    target_scores = scores.gather(1, targets[:, None])  # (B, 1)
    item_ids = torch.arange(num_items, device=scores.device)[None, :]  # (1, N)
    ahead = (scores > target_scores) | ((scores == target_scores) & (item_ids < targets[:, None]))
    return ahead.sum(dim=1)  # (B,)


def ranks_from_lists(item_lists: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based position of each target in its generated list, or the list length if absent.

    item_lists (B, K) int64 with BLANK for invalid generations, targets (B,) -> (B,) int64.
    """
    found = item_lists == targets[:, None]  # (B, K)
    length = item_lists.shape[1]
    first = torch.where(found, torch.arange(length)[None, :], length)  # (B, K)
    return first.min(dim=1).values  # (B,)


def drop_history_items(item_lists: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
    """Each generated list without its history's items, order kept, padded with BLANK.

    item_lists (B, K) int64, histories (B, H) int64 BLANK-padded -> (B, K) int64.
    """
    in_history = ((item_lists[:, :, None] == histories[:, None, :]) & (item_lists[:, :, None] >= 0)
                  ).any(dim=2)  # (B, K)
    order = torch.sort(in_history.int(), dim=1, stable=True).indices  # kept items first
    kept = item_lists.gather(1, order)  # (B, K)
    return kept.masked_fill(in_history.gather(1, order), BLANK)


def metrics_from_ranks(ranks: torch.Tensor, ks: Sequence[int]) -> dict[str, float]:
    """Summed (not averaged) hits and NDCG at each K, for accumulation over batches."""
    sums: dict[str, float] = {}
    for k in ks:
        hit = ranks < k
        sums[f"recall@{k}"] = float(hit.sum())
        gain = 1.0 / torch.log2(ranks.double() + 2.0)
        sums[f"ndcg@{k}"] = float(torch.where(hit, gain, 0.0).sum())
    return sums


def evaluate_ranker(
    ranker: Ranker,
    examples: LeaveOneOutExamples,
    ks: Sequence[int] = (5, 10),
    batch_size: int = 512,
    exclude_history: bool = False,
    groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """Mean Recall@K and NDCG@K of a ranker over leave-one-out examples.

    The ranker gets each batch of histories (B, T) int64 (left-padded with BLANK) and returns
    either float scores over all items (B, N) or integer item lists (B, K') with K' >= max(ks)
    (BLANK for an invalid generation). Returns `recall@k`, `ndcg@k` per k, `invalid_rate` (the
    share of generated list slots that are BLANK; 0 for a scorer) and `users`. With `groups`
    (U,) int labels (e.g. the target's popularity bucket), also `by_group`: label -> the same
    means and `users` over that group's examples.
    """
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive cut-offs such as (5, 10), got {tuple(ks)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    histories = torch.as_tensor(examples.histories, dtype=torch.int64)
    targets = torch.as_tensor(examples.targets, dtype=torch.int64)
    if histories.ndim != 2 or targets.shape != (histories.shape[0],):
        raise ValueError(
            f"examples need histories (U, T) and targets (U,), got {tuple(histories.shape)} "
            f"and {tuple(targets.shape)}"
        )
    if targets.numel() == 0:
        raise ValueError("examples are empty; evaluate on at least one user")
    if groups is not None and np.shape(groups) != tuple(targets.shape):
        raise ValueError(f"groups must hold one label per example ({targets.shape[0]},), got "
                         f"shape {np.shape(groups)}")
    all_ranks: list[torch.Tensor] = []
    invalid_slots, generated_slots = 0, 0
    with torch.no_grad():
        for start in range(0, targets.shape[0], batch_size):
            batch_histories = histories[start:start + batch_size]
            batch_targets = targets[start:start + batch_size]
            output = torch.as_tensor(ranker(batch_histories))
            if output.shape[0] != batch_targets.shape[0] or output.ndim != 2:
                raise ValueError(
                    f"the ranker returned shape {tuple(output.shape)} for {len(batch_targets)} "
                    "histories; return (B, N) scores or (B, K) item lists"
                )
            if output.is_floating_point():
                exclude = batch_histories if exclude_history else None
                ranks = ranks_from_scores(output, batch_targets, exclude)
            else:
                if output.shape[1] < max(ks):
                    raise ValueError(
                        f"the ranker returned lists of {output.shape[1]} items, fewer than "
                        f"max(ks)={max(ks)}; generate at least that many (e.g. a wider beam)"
                    )
                lists = output.long()
                if exclude_history:
                    lists = drop_history_items(lists, batch_histories)
                ranks = ranks_from_lists(lists, batch_targets)
                invalid_slots += int((output < 0).sum())
                generated_slots += output.numel()
            all_ranks.append(ranks)
    ranks = torch.cat(all_ranks)  # (U,)
    users = int(targets.shape[0])
    result: dict[str, Any] = {
        name: value / users for name, value in metrics_from_ranks(ranks, ks).items()}
    if groups is not None:
        labels = torch.as_tensor(np.asarray(groups))
        result["by_group"] = {}
        for label in labels.unique().tolist():
            members = ranks[labels == label]
            result["by_group"][int(label)] = {
                **{name: value / len(members)
                   for name, value in metrics_from_ranks(members, ks).items()},
                "users": len(members),
            }
    result["invalid_rate"] = invalid_slots / generated_slots if generated_slots else 0.0
    result["users"] = users
    return result
