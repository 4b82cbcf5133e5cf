"""Ranking quality (AUC) per objective and the iterative Pareto search over fusion weights.

The P-score fuses K tower logits with non-negative weights (see `rewards.pscore.fuse_logits`).
Which weights? Pantheon (arXiv 2505.13894) and the OneRec report tune them so that ranking
quality improves on every objective at once. `pareto_search` does that on held-out logs: it
starts from equal weights, proposes changes of the weights (each coordinate up and down, and
random directions, in log space), and keeps one only if no objective's AUC drops and at least
one rises. Every accepted step is therefore a Pareto improvement on the search data; among
several, the one whose worst objective gains most is kept (broad gains generalise better
than a large gain bought with a zero on another objective).

AUC of objective k for a fused "goodness" score s is the AUC of sign_k * s against label k:
for a negative objective (hate) a good score must rank hated items LOW, so its AUC reads
"how well -s ranks hated items first", directly comparable with the hate tower's own AUC.

Letters used in shape comments: N examples (shown items), K objectives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


def average_ranks(scores: torch.Tensor) -> torch.Tensor:
    """1-based ranks of `scores` (N,), tied values sharing their average rank. Returns (N,) f64."""
    order = scores.argsort()
    _, inverse, counts = torch.unique_consecutive(
        scores[order], return_inverse=True, return_counts=True
    )
    ends = counts.cumsum(0).double()  # (U,) last rank of each tie group
    group_ranks = ends - (counts.double() - 1.0) / 2.0  # (U,) average of first..last rank
    ranks = torch.empty(scores.shape, dtype=torch.float64, device=scores.device)
    ranks[order] = group_ranks[inverse]
    return ranks  # (N,)


def auc_from_ranks(ranks: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mann-Whitney AUC of one ranking against K label columns.

    `ranks` (N,) from `average_ranks`, `labels` (N, K) bool. AUC = (sum of positive ranks -
    P(P+1)/2) / (P * Q) with P positives and Q negatives: the probability that a random
    positive outranks a random negative, ties counting one half. NaN where a column has no
    positive or no negative. Returns (K,) float64.
    """
    positive = labels.double()  # (N, K)
    num_positive = positive.sum(0)  # (K,)
    num_negative = labels.shape[0] - num_positive
    rank_sum = ranks @ positive  # (K,)
    auc = (rank_sum - num_positive * (num_positive + 1) / 2) / (num_positive * num_negative)
    return torch.where((num_positive > 0) & (num_negative > 0), auc, torch.nan)


def auc(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AUC of each score column against its label column.

    `scores` (N,) shared by all columns or (N, K) one per column; `labels` (N, K) or (N,).
    Returns (K,) float64 (a 0-dim tensor when `labels` is (N,)).
    """
    squeeze = labels.dim() == 1
    labels = labels.reshape(labels.shape[0], -1).bool()  # (N, K)
    if scores.shape[0] != labels.shape[0]:
        raise ValueError(
            f"scores have {scores.shape[0]} rows but labels have {labels.shape[0]}; pass one "
            "score per labelled example"
        )
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values; AUC needs finite scores")
    if scores.dim() == 1:
        result = auc_from_ranks(average_ranks(scores), labels)
    else:
        if scores.shape != labels.shape:
            raise ValueError(
                f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} must match "
                "when each objective has its own score column"
            )
        result = torch.stack(
            [
                auc_from_ranks(average_ranks(scores[:, k]), labels[:, k : k + 1])[0]
                for k in range(labels.shape[1])
            ]
        )
    return result[0] if squeeze else result


def fused_auc(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, signs: torch.Tensor
) -> torch.Tensor:
    """Per-objective AUC of the fused score sum_k weights_k * signs_k * logits_k.

    `logits` (N, K) tower logits, `labels` (N, K) bool, `weights` (K,) >= 0, `signs` (K,)
    +1/-1. Objective k is scored with sign_k * fused (see the module docstring); for a
    negative sign AUC(-s) = 1 - AUC(s) exactly, so one ranking serves all K. Returns (K,).
    """
    fused = logits.double() @ (weights.double() * signs.double())  # (N,)
    result = auc_from_ranks(average_ranks(fused), labels.bool())  # (K,)
    return torch.where(signs < 0, 1.0 - result, result)


@dataclass(frozen=True)
class ParetoConfig:
    """How to search the fusion weights."""

    steps: int = 300  # proposals in all; each costs one sort of the held-out scores per part
    random_directions: int = 16  # random log-weight directions per round (plus 2K coordinates)
    step_size: float = 1.0  # first log-weight step: a weight may move by e^1 at first
    min_step_size: float = 0.01  # stop once a round fails at a step this small
    folds: int = 2  # random parts of the data on which no AUC may drop either; 1 = whole only
    seed: int = 0  # proposals are random; the same seed gives the same search

    def __post_init__(self) -> None:
        if self.steps < 0 or self.random_directions < 0:
            raise ValueError(
                f"steps and random_directions must be >= 0, got {self.steps}, "
                f"{self.random_directions}"
            )
        if not 0 < self.min_step_size <= self.step_size:
            raise ValueError(
                f"need 0 < min_step_size <= step_size, got {self.min_step_size} and "
                f"{self.step_size}"
            )
        if self.folds < 1:
            raise ValueError(f"folds must be >= 1, got {self.folds}")


@dataclass
class ParetoResult:
    """The searched weights and how the per-objective AUC moved."""

    weights: torch.Tensor  # (K,) non-negative, summing to 1
    start_auc: torch.Tensor  # (K,) AUC at equal weights (or the given start)
    final_auc: torch.Tensor  # (K,) AUC at `weights`; >= start_auc wherever both are defined
    proposals: int  # candidate weights evaluated
    accepted: int  # steps kept
    history: list[list[float]] = field(default_factory=list)  # AUC after each accepted step


def _worst_gain(new: torch.Tensor, old: torch.Tensor) -> float:
    """The smallest AUC change over objectives defined in both (+inf if none is)."""
    defined = ~(torch.isnan(new) | torch.isnan(old))
    return float((new - old)[defined].min()) if defined.any() else float("inf")


def _directions(num_objectives: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """Unit log-weight directions of one round: each coordinate up and down, then `count`
    random ones. Returns (2K + count, K)."""
    coordinates = torch.cat([torch.eye(num_objectives), -torch.eye(num_objectives)]).double()
    random = torch.randn(count, num_objectives, generator=generator, dtype=torch.float64)
    return torch.cat([coordinates, random / random.norm(dim=1, keepdim=True)])


def pareto_search(
    logits: torch.Tensor,
    labels: torch.Tensor,
    signs: torch.Tensor,
    config: ParetoConfig,
    start: torch.Tensor | None = None,
) -> ParetoResult:
    """Iterative Pareto improvement of the fusion weights on held-out (logits, labels).

    `logits` (N, K), `labels` (N, K) bool, `signs` (K,). Starts from `start` (default equal
    weights 1/K), with weights = softmax(log-weights) so they stay positive and on the simplex
    (AUC ignores the scale of the fused score). Each round proposes log-weight steps of the
    current size along every coordinate (up and down) and along random directions. A proposal
    qualifies only if no objective's AUC drops and one rises, on all the data, and no AUC
    drops on any of `config.folds` random parts of it either (a change that wins only by the
    noise of one part is refused). The qualifying proposal whose worst objective gains most
    is kept; a round with none halves the step size. Objectives whose AUC is undefined (one
    class only) do not constrain the search.
    """
    num_objectives = logits.shape[1]
    if labels.shape != logits.shape or signs.shape != (num_objectives,):
        raise ValueError(
            f"logits {tuple(logits.shape)}, labels {tuple(labels.shape)} and signs "
            f"{tuple(signs.shape)} must be (N, K), (N, K) and (K,)"
        )
    if not torch.isfinite(logits).all():
        raise ValueError("tower logits contain NaN or infinite values; the P-score diverged")
    if start is not None and ((start <= 0).any() or start.shape != (num_objectives,)):
        raise ValueError(f"start weights must be ({num_objectives},) and > 0, got {start.tolist()}")
    labels = labels.bool()
    generator = torch.Generator().manual_seed(config.seed)
    fold = torch.randint(config.folds, (labels.shape[0],), generator=generator)  # (N,)
    parts = [(logits, labels)] + [
        (logits[fold == part], labels[fold == part])
        for part in range(config.folds if config.folds > 1 else 0)
    ]

    def evaluate(log_weights: torch.Tensor) -> torch.Tensor:
        """AUC on all the data, then on each part: (1 + folds, K)."""
        weights = torch.softmax(log_weights, 0)
        return torch.stack(
            [
                fused_auc(part_logits, part_labels, weights, signs)
                for part_logits, part_labels in parts
            ]
        )

    log_weights = (
        torch.zeros(num_objectives, dtype=torch.float64) if start is None else start.double().log()
    )
    current = evaluate(log_weights)
    result = ParetoResult(torch.softmax(log_weights, 0), current[0], current[0], 0, 0)
    step_size = config.step_size
    while result.proposals < config.steps and step_size >= config.min_step_size:
        best_gain, best = 0.0, None
        for direction in _directions(num_objectives, config.random_directions, generator):
            if result.proposals >= config.steps:
                break
            proposal = log_weights + step_size * direction
            candidate = evaluate(proposal)
            result.proposals += 1
            rises = bool((candidate[0] > current[0]).any())
            gains = [_worst_gain(new, old) for new, old in zip(candidate, current, strict=True)]
            if rises and min(gains) >= 0 and (best is None or gains[0] > best_gain):
                best_gain, best = gains[0], (proposal, candidate)
        if best is None:
            step_size /= 2
            continue
        log_weights, current = best
        result.accepted += 1
        result.history.append([float(value) for value in current[0]])
    result.weights, result.final_auc = torch.softmax(log_weights, 0), current[0]
    return result


def as_dict(names: tuple[str, ...], values: torch.Tensor) -> dict[str, float | None]:
    """Per-objective values keyed by name; NaN (undefined AUC) becomes None for JSON."""
    return {
        name: None if math.isnan(float(value)) else round(float(value), 6)
        for name, value in zip(names, values, strict=True)
    }
