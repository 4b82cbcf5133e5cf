"""Ranking quality (AUC) per objective and the iterative Pareto search over fusion weights.

The P-score fuses K tower logits with non-negative weights (see `rewards.pscore.fuse_logits`).
Which weights? Pantheon (arXiv 2505.13894) and the OneRec report tune them so that ranking
quality improves on every objective at once (Pantheon's "iterative Pareto ensemble sort").
`pareto_search` does that on held-out logs: it starts from equal weights, proposes changes of
the weights in log space (each coordinate up and down; MGDA's common ascent direction,
estimated from those coordinate probes; random directions), large moves first and smaller
ones once no move qualifies, and keeps one only if no objective's AUC drops and at least one
rises on the search data, and the new weights beat the start on every objective by a margin
DeLong's paired test calls significant (`paired_auc_z`): only gains above an objective's
noise carry over to unseen logs. Every accepted step is therefore a Pareto improvement on
the search data; among several, the one whose worst objective gains most, in that
objective's standard errors, is kept (broad gains generalise better than a large gain bought
with a zero on another objective).

AUC of objective k for a fused "goodness" score s is the AUC of sign_k * s against label k:
for a negative objective (hate) a good score must rank hated items LOW, so its AUC reads
"how well -s ranks hated items first", directly comparable with the hate tower's own AUC.

Letters used in shape comments: N examples (shown items), K objectives, P parts of the data
(the whole, then each fold), M vectors.
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


def fused_scores(logits: torch.Tensor, weights: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """The fused "goodness" sum_k weights_k * signs_k * logits_k of (N, K) logits: (N,) f64."""
    return logits.double() @ (weights.double() * signs.double())


def fused_auc(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, signs: torch.Tensor
) -> torch.Tensor:
    """Per-objective AUC of the fused score sum_k weights_k * signs_k * logits_k.

    `logits` (N, K) tower logits, `labels` (N, K) bool, `weights` (K,) >= 0, `signs` (K,)
    +1/-1. Objective k is scored with sign_k * fused (see the module docstring); for a
    negative sign AUC(-s) = 1 - AUC(s) exactly, so one ranking serves all K. Returns (K,).
    """
    result = auc_from_ranks(average_ranks(fused_scores(logits, weights, signs)), labels.bool())
    return torch.where(signs < 0, 1.0 - result, result)


def placements(scores: torch.Tensor, labels: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """DeLong's placement values of one ranking, per label column.

    `scores` (N,), `labels` (N, K) bool. For column k: each positive's share of negatives it
    outranks (P_k,) and each negative's share of positives that outrank it (Q_k,), ties
    counting one half; either's mean is the AUC (DeLong, DeLong and Clarke-Pearson 1988).
    """
    ranks = average_ranks(scores)  # (N,)
    result = []
    for column in labels.T:
        positive, negative = ranks[column], ranks[~column]
        below = (positive - average_ranks(positive)) / max(len(negative), 1)  # (P_k,)
        above = 1.0 - (negative - average_ranks(negative)) / max(len(positive), 1)  # (Q_k,)
        result.append((below, above))
    return result


def paired_auc_z(
    scores: torch.Tensor,
    reference: list[tuple[torch.Tensor, torch.Tensor]],
    labels: torch.Tensor,
    signs: torch.Tensor,
) -> torch.Tensor:
    """How many standard errors `scores` (N,) beats a reference ranking in each objective's AUC.

    `reference` = `placements` of the reference scores on the same `labels` (N, K). DeLong's
    paired test: the AUC difference is the mean of the placement differences, its variance
    var(positives' differences) / P + var(negatives' differences) / Q, so the z-score accounts
    for how correlated the two rankings are (a small weight change has a small difference
    AND a small standard error). Sign-adjusted like `fused_auc`. NaN where undefined (one
    class only, or the two rankings agree exactly). Returns (K,) float64.
    """
    z = []
    for (below, above), (ref_below, ref_above), sign in zip(
        placements(scores, labels), reference, signs.tolist(), strict=True
    ):
        if len(below) < 2 or len(above) < 2:
            z.append(math.nan)
            continue
        diff_below, diff_above = below - ref_below, above - ref_above
        variance = diff_below.var() / len(below) + diff_above.var() / len(above)
        difference = float(diff_below.mean()) * sign
        z.append(difference / math.sqrt(variance) if variance > 1e-30 else math.nan)
    return torch.tensor(z, dtype=torch.float64)


@dataclass(frozen=True)
class ParetoConfig:
    """How to search the fusion weights."""

    steps: int = 300  # proposals in all; each costs one sort of the held-out scores per part
    random_directions: int = 8  # random log-weight directions per round (besides 2K + line)
    line_search: int = 4  # common-ascent proposals per round, at step, step/2, step/4, ...
    step_size: float = 1.0  # first (largest) log-weight step: a weight may move by e^1 at first
    min_step_size: float = 0.01  # stop once a round fails at a step this small
    # random parts of the data on which no AUC may drop either; 1 = the whole data only
    # (a crude sign test against noise, superseded by `min_z`).
    folds: int = 1
    # A kept point must beat the start on every objective by at least this many standard
    # errors of DeLong's paired test (`paired_auc_z`, on the search data); 0 = any gain.
    # Chosen on the P-score benchmark's fits 0-2: at 2 no step cleared it from equal weights
    # for 2 of them, at 1.5 for 1; at 1 all 3 moved and none lowered an objective on the
    # test split (benchmarks/results/pscore.md has the fits checked afterwards).
    min_z: float = 1.0
    seed: int = 0  # proposals are random; the same seed gives the same search

    def __post_init__(self) -> None:
        if self.steps < 0 or self.random_directions < 0 or self.line_search < 0:
            raise ValueError(
                f"steps, random_directions and line_search must be >= 0, got {self.steps}, "
                f"{self.random_directions}, {self.line_search}"
            )
        if not 0 < self.min_step_size <= self.step_size:
            raise ValueError(
                f"need 0 < min_step_size <= step_size, got {self.min_step_size} and "
                f"{self.step_size}"
            )
        if self.min_z < 0:
            raise ValueError(f"min_z must be >= 0 (standard errors), got {self.min_z}")
        if self.folds < 1:
            raise ValueError(f"folds must be >= 1, got {self.folds}")


@dataclass
class ParetoResult:
    """The searched weights and how the per-objective AUC moved."""

    weights: torch.Tensor  # (K,) non-negative, summing to 1
    start_auc: torch.Tensor  # (K,) AUC at equal weights (or the given start)
    final_auc: torch.Tensor  # (K,) AUC at `weights`; >= start_auc wherever both are defined
    final_z: torch.Tensor  # (K,) DeLong z of final_auc - start_auc (NaN: undefined/no change)
    proposals: int  # candidate weights evaluated
    accepted: int  # steps kept
    history: list[list[float]] = field(default_factory=list)  # AUC after each accepted step


def _non_negative_least_squares(matrix: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """argmin over u >= 0 of |matrix @ u - target|: (R, M), (R,) -> (M,). Lawson and Hanson's
    active-set method (Solving Least Squares Problems, 1974, ch. 23): exact, finite, and fast
    for the few dozen columns it gets here."""
    columns = matrix.shape[1]
    solution = torch.zeros(columns, dtype=matrix.dtype)
    passive = torch.zeros(columns, dtype=torch.bool)
    tolerance = 1e-12 * max(1.0, float(matrix.abs().max()))
    for _ in range(3 * columns + 1):
        slope = matrix.T @ (target - matrix @ solution)  # (M,) descent direction per column
        if passive.all() or float(slope[~passive].max()) <= tolerance:
            break
        passive[int(torch.where(passive, -math.inf, slope).argmax())] = True
        while True:
            trial = torch.zeros_like(solution)
            trial[passive] = torch.linalg.lstsq(matrix[:, passive], target[:, None]).solution[:, 0]
            if bool((trial[passive] > 0).all()):
                solution = trial
                break
            blocking = passive & (trial <= 0)
            share = solution[blocking] / (solution[blocking] - trial[blocking])
            solution = solution + float(share.min()) * (trial - solution)
            passive &= solution > tolerance
            solution[~passive] = 0.0
    return solution  # (M,)


def min_norm_point(vectors: torch.Tensor) -> torch.Tensor:
    """The point of smallest norm in the convex hull of the rows of `vectors` (M, K): (K,).

    MGDA (Desideri 2012; Sener and Koltun 2018): if d is that point and d != 0, then
    g . d >= |d|^2 > 0 for every row g, so d raises every objective at first order; d = 0
    means no common ascent direction exists (the current point is Pareto-stationary).
    Solved exactly as its dual, least-distance programming: the shortest x with g . x >= 1
    for every row is x = d / |d|^2, found by one non-negative least squares (Lawson and
    Hanson, ch. 23); when no such x exists the origin is in the hull and d = 0.
    """
    vectors = vectors.double()
    num_vectors, width = vectors.shape
    matrix = torch.cat([vectors.T, torch.ones(1, num_vectors, dtype=torch.float64)])  # (K+1, M)
    target = torch.zeros(width + 1, dtype=torch.float64)
    target[-1] = 1.0
    residual = matrix @ _non_negative_least_squares(matrix, target) - target  # (K+1,)
    if float(residual.norm()) <= 1e-9:
        return torch.zeros(width, dtype=torch.float64)  # g . x >= 1 is infeasible
    shortest = -residual[:-1] / residual[-1]  # (K,) x: g . x >= 1 for every row g
    return shortest / float(shortest @ shortest)  # (K,)


def _common_ascent(
    plus: torch.Tensor, minus: torch.Tensor, step_size: float, precision: torch.Tensor
) -> torch.Tensor | None:
    """A unit log-weight direction that raises every objective on every part, or None.

    `plus`, `minus` (K, P, K'): AUC on P parts of K' objectives after stepping each of the K
    log-weights up and down by `step_size`; `precision` (P, K'): 1 / (standard error) of each
    AUC, up to a common factor. Central differences give each (part, objective) a gradient
    over the K log-weights, measured in standard errors; MGDA's min-norm point d of their hull
    then has g . d >= |d|^2 for each, so every objective gains about the same number of its
    own standard errors (a rare behaviour, whose AUC is noisy, is asked for a larger gain than
    a common one). None when d is ~0: the gradients conflict, or no AUC is defined.
    """
    gradients = (plus - minus) / (2 * step_size) * precision  # (K, P, K')
    gradients = gradients.permute(1, 2, 0).flatten(0, 1)  # (P K', K)
    gradients = gradients - gradients.mean(1, keepdim=True)  # adding c to all log-weights: no-op
    usable = ~torch.isnan(gradients).any(1) & (gradients.norm(dim=1) > 1e-12)
    if not usable.any():
        return None
    direction = min_norm_point(gradients[usable])
    length = float(direction.norm())
    return direction / length if length > 1e-12 else None


def _auc_precision(labels: torch.Tensor) -> torch.Tensor:
    """1 / sqrt(1/P + 1/Q) per column of `labels` (N, K), P positives and Q negatives: the
    inverse of an AUC's standard error up to a factor (Hanley and McNeil 1982). (K,)"""
    positives = labels.double().sum(0)
    return 1.0 / torch.sqrt(1.0 / positives + 1.0 / (labels.shape[0] - positives))


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
    (AUC ignores the scale of the fused score). Each round, at the current step size:

    1. probes every log-weight up and down by the step (2K proposals);
    2. from those probes, estimates each objective's AUC gradient on every part of the data
       and proposes MGDA's common ascent direction (`_common_ascent`) at the step and at
       `line_search` - 1 halvings of it: the direction that raises every objective at once,
       which coordinate and random moves rarely hit when the objectives conflict;
    3. proposes `random_directions` random unit directions at the step.

    A proposal qualifies only if no objective's AUC drops and one rises, on all the data (and
    on each of `config.folds` random parts of it, if more than 1), AND it beats the START
    weights on every objective by at least `config.min_z` standard errors of DeLong's paired
    test (`paired_auc_z`): a gain of 1e-4 is noise for a behaviour with 600 positives, not
    for one with 100,000, and only gains above the noise carry over to unseen logs. Among
    qualifying proposals the one whose smallest gain over the current point, over objectives
    and parts and in units of each AUC's standard error, is largest is kept (broad gains
    first); the step size stays (large moves first); a round with none halves it. If no
    proposal ever clears `min_z`, the start is returned: the data cannot tell the weights
    apart. Objectives whose AUC is undefined (one class only) do not constrain the search.
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

    precision = torch.stack([_auc_precision(part_labels) for _, part_labels in parts])  # (P, K)

    def fused(log_weights: torch.Tensor) -> torch.Tensor:
        return fused_scores(logits, torch.softmax(log_weights, 0), signs)  # (N,)

    def evaluate(log_weights: torch.Tensor) -> torch.Tensor:
        """AUC on all the data, then on each part: (P, K) with P = 1 + folds."""
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
    start_placements = placements(fused(log_weights), labels)
    current = evaluate(log_weights)
    current_z = torch.full((num_objectives,), math.nan, dtype=torch.float64)
    result = ParetoResult(torch.softmax(log_weights, 0), current[0], current[0], current_z, 0, 0)
    step_size = config.step_size
    best_gain, best = -math.inf, None

    def consider(proposal: torch.Tensor) -> torch.Tensor:
        """Evaluate one proposal, remember it if it qualifies and beats the round's best."""
        nonlocal best_gain, best
        candidate = evaluate(proposal)
        result.proposals += 1
        rises = bool((candidate[0] > current[0]).any())
        gains = (candidate - current) * precision  # (P, K) in standard errors
        defined = ~torch.isnan(gains)
        gain = float(gains[defined].min()) if defined.any() else math.inf
        if rises and gain >= 0 and gain > best_gain:
            z = paired_auc_z(fused(proposal), start_placements, labels, signs)  # (K,)
            if bool((z[~z.isnan()] >= config.min_z).all()):
                best_gain, best = gain, (proposal, candidate, z)
        return candidate

    def budget_left() -> bool:
        return result.proposals < config.steps

    while budget_left() and step_size >= config.min_step_size:
        best_gain, best = -math.inf, None
        eye = torch.eye(num_objectives, dtype=torch.float64)
        probes = [
            consider(log_weights + sign * step_size * eye[j])
            for sign in (1.0, -1.0)
            for j in range(num_objectives)
            if budget_left()
        ]
        if len(probes) == 2 * num_objectives and config.line_search:
            probes = torch.stack(probes)  # (2K, P, K)
            direction = _common_ascent(
                probes[:num_objectives], probes[num_objectives:], step_size, precision
            )
            for halving in range(config.line_search if direction is not None else 0):
                if budget_left():
                    consider(log_weights + step_size / 2**halving * direction)
        for _ in range(config.random_directions):
            if budget_left():
                direction = torch.randn(num_objectives, generator=generator, dtype=torch.float64)
                consider(log_weights + step_size * direction / direction.norm())
        if best is None:
            step_size /= 2
            continue
        log_weights, current, current_z = best
        result.accepted += 1
        result.history.append([float(value) for value in current[0]])
    result.weights, result.final_auc = torch.softmax(log_weights, 0), current[0]
    result.final_z = current_z
    return result


def spearman(first: torch.Tensor, second: torch.Tensor) -> float:
    """Spearman rank correlation of two (N,) score vectors, ties sharing their average rank."""
    ranks = [average_ranks(values) for values in (first, second)]
    first_centred, second_centred = (rank - rank.mean() for rank in ranks)
    denominator = float(first_centred.norm() * second_centred.norm())
    if denominator == 0:
        raise ValueError("Spearman correlation is undefined when one input is constant")
    return float(first_centred @ second_centred) / denominator


def as_dict(names: tuple[str, ...], values: torch.Tensor) -> dict[str, float | None]:
    """Per-objective values keyed by name; NaN (undefined AUC) becomes None for JSON."""
    return {
        name: None if math.isnan(float(value)) else round(float(value), 6)
        for name, value in zip(names, values, strict=True)
    }
