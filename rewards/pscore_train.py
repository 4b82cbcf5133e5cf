"""Fit the P-score on logged sessions and search its fusion weights.

Requests are split at random (seeded) into train / search / test. The towers are trained with
one BCE per objective on the train split (the watch-time tower on its soft label
w / (w + tau), tau the mean logged watch time of the train split); the fusion weights are
searched on the search split (`rewards.pareto.pareto_search`); every AUC in the report is
measured on the test split, which neither step saw, so the "fused >= equal-weight" comparison
there is an honest one. The report also says how well the fused score tracks the logged watch
seconds on the test split (Spearman correlation, and AUC against "watched longer than the
median"): the alignment target is watch time, and a P-score blind to it is a proxy RL can game.

Letters used in shape comments: R requests, S slate, N shown items, K objectives, F feedback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch

from envs.spec import BLANK, FEEDBACK_FIELDS
from rewards.pareto import (
    ParetoConfig,
    as_dict,
    auc,
    fused_auc,
    fused_scores,
    paired_auc_z,
    pareto_search,
    placements,
    spearman,
)
from rewards.pscore import ItemCatalog, PScoreConfig, PScoreModel


class LoggedData(Protocol):
    """What the P-score reads from logged sessions (`envs.logs.LoggedSessions` has it)."""

    num_requests: int
    slates: np.ndarray  # (R, S) int64, BLANK = nothing shown
    feedback: np.ndarray  # (R, S, F) float32 in FEEDBACK_FIELDS order

    def contexts(self, row_indices: np.ndarray) -> Mapping[str, np.ndarray]: ...


@dataclass(frozen=True)
class PScoreTrainConfig:
    """How to fit the P-score."""

    epochs: int = 4  # passes over the train split; AUC on held-out logs plateaus after a few
    batch_size: int = 256  # requests per step (each brings S candidates)
    learning_rate: float = 1e-2  # Adam; 3e-3 left held-out AUC ~0.03 lower after 4 epochs
    search_share: float = 0.2  # requests held out for the Pareto weight search
    test_share: float = 0.2  # requests held out for the reported AUCs
    seed: int = 0  # split, initialisation, shuffling and search proposals
    pareto: ParetoConfig = field(default_factory=ParetoConfig)  # the fusion-weight search

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not (
            0 < self.search_share
            and 0 < self.test_share
            and self.search_share + self.test_share < 1
        ):
            raise ValueError(
                "search_share and test_share must be > 0 with a sum below 1 (the rest trains), "
                f"got {self.search_share} and {self.test_share}"
            )


@dataclass
class PScoreFit:
    """A fitted P-score and its JSON-ready report."""

    model: PScoreModel
    report: dict[str, Any]


def split_requests(
    num_requests: int, search_share: float, test_share: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint train / search / test request indices (a seeded permutation)."""
    order = np.random.default_rng(seed).permutation(num_requests)
    num_search = max(1, round(search_share * num_requests))
    num_test = max(1, round(test_share * num_requests))
    if num_requests - num_search - num_test < 1:
        raise ValueError(f"{num_requests} logged requests are too few to split; log more sessions")
    return (
        order[num_search + num_test :],
        order[:num_search],
        order[num_search : num_search + num_test],
    )


def _objective_columns(
    feedback: np.ndarray | torch.Tensor, objectives: tuple[str, ...], watch_time_scale: float | None
) -> list[torch.Tensor]:
    """Each objective's column of the feedback (..., F): K float tensors (...)."""
    feedback = torch.as_tensor(np.asarray(feedback)).float()
    if "watch_time" in objectives and watch_time_scale is None:
        raise ValueError(
            "the watch_time objective needs PScoreConfig.watch_time_scale (seconds); "
            "fit_pscore sets it from the training logs, or pass one"
        )
    return [feedback[..., FEEDBACK_FIELDS.index(name)] for name in objectives]


def objective_targets(
    feedback: np.ndarray | torch.Tensor, objectives: tuple[str, ...], watch_time_scale: float | None
) -> torch.Tensor:
    """BCE targets of `objectives` from feedback: (..., F) -> (..., K) float in [0, 1].

    A behaviour's target is its flag; watch time's is the soft label w / (w + tau) of the
    watch seconds w (tau = `watch_time_scale`): 0 for a skip, 1/2 at tau, towards 1 for long
    watches, so the tower learns the seconds, not only a threshold.
    """
    columns = _objective_columns(feedback, objectives, watch_time_scale)
    targets = [
        values.clamp(min=0) / (values.clamp(min=0) + watch_time_scale)
        if name == "watch_time"
        else (values > 0.5).float()
        for name, values in zip(objectives, columns, strict=True)
    ]
    return torch.stack(targets, -1)  # (..., K)


def objective_labels(
    feedback: np.ndarray | torch.Tensor, objectives: tuple[str, ...], watch_time_scale: float | None
) -> torch.Tensor:
    """Binary labels of `objectives` for AUC: (..., F) -> (..., K) bool. A behaviour's flag;
    for watch time, w >= tau (where its soft target reaches 1/2)."""
    columns = _objective_columns(feedback, objectives, watch_time_scale)
    labels = [
        values >= watch_time_scale if name == "watch_time" else values > 0.5
        for name, values in zip(objectives, columns, strict=True)
    ]
    return torch.stack(labels, -1)  # (..., K)


def fit_watch_time_scale(logs: LoggedData, rows: np.ndarray) -> float:
    """tau: the mean watch seconds per item shown in `rows`.

    Below tau the soft label w / (w + tau) is nearly linear in w, so the tower's probability
    follows expected watch seconds (what a session's watch time sums); above tau it saturates,
    so a few very long watches do not dominate the BCE. The median would sit among the
    scroll-past glances (a few seconds) and saturate on every real watch.
    """
    shown = np.asarray(logs.slates[rows]) != BLANK  # (r, S)
    watch = np.asarray(logs.feedback[rows])[..., FEEDBACK_FIELDS.index("watch_time")][shown]
    scale = float(watch.clip(min=0).mean()) if watch.size else 0.0
    if scale <= 0:
        raise ValueError(
            "no item shown in the training split was watched at all (watch_time > 0); the "
            "watch_time objective cannot be fitted on these logs"
        )
    return scale


def _batch(logs: LoggedData, rows: np.ndarray, device: torch.device) -> tuple[dict, torch.Tensor]:
    context = {
        key: torch.as_tensor(np.asarray(value), device=device)
        for key, value in logs.contexts(rows).items()
    }
    return context, torch.as_tensor(np.asarray(logs.slates[rows]), device=device).long()


def predict(
    model: PScoreModel, logs: LoggedData, rows: np.ndarray, batch_size: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tower logits and logged feedback of every shown item of `rows`: ((N, K), (N, F))."""
    device = next(model.parameters()).device
    logits, feedback = [], []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            context, items = _batch(logs, chunk, device)
            shown = items != BLANK  # (b, S)
            logits.append(model.tower_logits(context, items)[shown].cpu())
            feedback.append(torch.as_tensor(np.asarray(logs.feedback[chunk]))[shown.cpu()])
    return torch.cat(logits), torch.cat(feedback)  # (N, K), (N, F)


def train_towers(
    model: PScoreModel, logs: LoggedData, rows: np.ndarray, config: PScoreTrainConfig
) -> list[float]:
    """One BCE per tower on the shown items of `rows` (soft targets for watch time, see
    `objective_targets`); returns the mean loss of each epoch."""
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    rng = np.random.default_rng(config.seed)
    losses = []
    for _ in range(config.epochs):
        model.train()
        rows = rng.permutation(rows)
        total, steps = 0.0, 0
        for start in range(0, len(rows), config.batch_size):
            chunk = rows[start : start + config.batch_size]
            context, items = _batch(logs, chunk, device)
            shown = items != BLANK  # (b, S)
            targets = objective_targets(
                logs.feedback[chunk], model.config.objectives, model.config.watch_time_scale
            ).to(device)  # (b, S, K)
            logits = model.tower_logits(context, items)  # (b, S, K)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits[shown], targets[shown]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        losses.append(total / max(steps, 1))
    return losses


def watch_time_tracking(
    logits: torch.Tensor,
    watch: torch.Tensor,
    duration: torch.Tensor,
    weights: torch.Tensor,
    signs: torch.Tensor,
) -> dict[str, float]:
    """How the fused score of `logits` (N, K) orders items by their logged watch seconds
    `watch` (N,): Spearman correlation and AUC against "watched longer than the median" (None
    when no item is); and its Spearman correlation with the items' durations `duration`
    (N,), the lever a policy pulls when a proxy pays for short clips (issue #6: RL on the
    P-score drifted to them)."""
    fused = logits.double() @ (weights.double() * signs.double())  # (N,)
    above_median = auc(fused, watch > watch.median())
    return {
        "spearman": round(spearman(fused, watch), 6),
        "auc_vs_median": None if above_median.isnan() else round(float(above_median), 6),
        "duration_spearman": round(spearman(fused, duration), 6),
    }


def fit_pscore(
    logs: LoggedData,
    catalog: ItemCatalog,
    config: PScoreTrainConfig,
    model_config: PScoreConfig | None = None,
    device: str | torch.device = "cpu",
) -> PScoreFit:
    """Train the towers, search the fusion weights, and report per-objective test AUC."""
    train_rows, search_rows, test_rows = split_requests(
        logs.num_requests, config.search_share, config.test_share, config.seed
    )
    model_config = model_config or PScoreConfig.from_catalog(catalog)
    if "watch_time" in model_config.objectives and model_config.watch_time_scale is None:
        model_config = replace(
            model_config, watch_time_scale=fit_watch_time_scale(logs, train_rows)
        )
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG left untouched
        torch.manual_seed(config.seed)
        model = PScoreModel(model_config, catalog).to(device)
    losses = train_towers(model, logs, train_rows, config)

    objectives, signs = model_config.objectives, model_config.signs
    scale = model_config.watch_time_scale
    search_logits, search_feedback = predict(model, logs, search_rows)
    search_labels = objective_labels(search_feedback, objectives, scale)
    search = pareto_search(search_logits, search_labels, signs, config.pareto)
    model.set_fusion_weights(search.weights)

    test_logits, test_feedback = predict(model, logs, test_rows)
    test_labels = objective_labels(test_feedback, objectives, scale)
    equal = torch.full((len(objectives),), 1.0 / len(objectives), dtype=torch.float64)
    tower_auc = auc(test_logits, test_labels)
    pscore_auc = fused_auc(test_logits, test_labels, search.weights, signs)
    equal_auc = fused_auc(test_logits, test_labels, equal, signs)
    test_z = paired_auc_z(fused_scores(test_logits, search.weights, signs),
                          placements(fused_scores(test_logits, equal, signs), test_labels),
                          test_labels, signs)
    defined = ~(torch.isnan(pscore_auc) | torch.isnan(equal_auc))
    watch = test_feedback[:, FEEDBACK_FIELDS.index("watch_time")].double()  # (N,)
    test_items = np.asarray(logs.slates[test_rows])  # (R, S), predict's row-major order
    duration = torch.as_tensor(
        np.asarray(catalog.duration_s)[test_items[test_items != BLANK]], dtype=torch.float64
    )  # (N,)
    report = {
        "objectives": list(objectives),
        "auc": as_dict(objectives, tower_auc),
        "pscore_auc": as_dict(objectives, pscore_auc),
        "equal_weight_auc": as_dict(objectives, equal_auc),
        "test_z": as_dict(objectives, test_z),  # DeLong z of pscore_auc - equal_weight_auc
        "fusion_weights": as_dict(objectives, search.weights),
        "target_met": bool(
            (pscore_auc[defined] >= equal_auc[defined]).all()
            and (pscore_auc[defined] > equal_auc[defined]).any()
        ),
        "search": {
            "pscore_auc": as_dict(objectives, search.final_auc),
            "equal_weight_auc": as_dict(objectives, search.start_auc),
            "proposals": search.proposals,
            "accepted": search.accepted,
            "z": as_dict(objectives, search.final_z),  # DeLong z over equal weights, search split
        },
        "watch_time_scale": scale,
        "watch_time_tracking": {
            name: watch_time_tracking(test_logits, watch, duration, weights, signs)
            for name, weights in (("pscore", search.weights), ("equal_weight", equal))
        },
        "positives": dict(zip(objectives, test_labels.sum(0).tolist(), strict=True)),
        "examples": {
            "train_requests": len(train_rows),
            "search_items": len(search_labels),
            "test_items": len(test_labels),
        },
        "train_loss": [round(value, 5) for value in losses],
    }
    return PScoreFit(model.eval(), report)
