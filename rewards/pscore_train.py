"""Fit the P-score on logged sessions and search its fusion weights.

Requests are split at random (seeded) into train / search / test. The towers are trained with
one BCE per objective on the train split; the fusion weights are searched on the search split
(`rewards.pareto.pareto_search`); every AUC in the report is measured on the test split, which
neither step saw, so the "fused >= equal-weight" comparison there is an honest one.

Letters used in shape comments: R requests, S slate, N shown items, K objectives, F feedback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from envs.spec import BLANK, FEEDBACK_FIELDS
from rewards.pareto import ParetoConfig, as_dict, auc, fused_auc, pareto_search
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


def objective_labels(
    feedback: np.ndarray | torch.Tensor, objectives: tuple[str, ...]
) -> torch.Tensor:
    """Binary labels of `objectives` from feedback: (..., F) -> (..., K) bool."""
    columns = [FEEDBACK_FIELDS.index(name) for name in objectives]
    return torch.as_tensor(np.asarray(feedback)[..., columns] > 0.5)


def _batch(logs: LoggedData, rows: np.ndarray, device: torch.device) -> tuple[dict, torch.Tensor]:
    context = {
        key: torch.as_tensor(np.asarray(value), device=device)
        for key, value in logs.contexts(rows).items()
    }
    return context, torch.as_tensor(np.asarray(logs.slates[rows]), device=device).long()


def predict(
    model: PScoreModel, logs: LoggedData, rows: np.ndarray, batch_size: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tower logits and labels of every shown item of `rows`: ((N, K) float, (N, K) bool)."""
    device = next(model.parameters()).device
    logits, labels = [], []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            context, items = _batch(logs, chunk, device)
            shown = items != BLANK  # (b, S)
            logits.append(model.tower_logits(context, items)[shown].cpu())
            chunk_labels = objective_labels(logs.feedback[chunk], model.config.objectives)
            labels.append(chunk_labels[shown.cpu()])
    return torch.cat(logits), torch.cat(labels)  # (N, K), (N, K)


def train_towers(
    model: PScoreModel, logs: LoggedData, rows: np.ndarray, config: PScoreTrainConfig
) -> list[float]:
    """One BCE per tower on the shown items of `rows`; returns the mean loss of each epoch."""
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
            labels = objective_labels(logs.feedback[chunk], model.config.objectives).to(device)
            logits = model.tower_logits(context, items)  # (b, S, K)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits[shown], labels[shown].float()
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        losses.append(total / max(steps, 1))
    return losses


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
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG left untouched
        torch.manual_seed(config.seed)
        model = PScoreModel(model_config, catalog).to(device)
    losses = train_towers(model, logs, train_rows, config)

    objectives, signs = model_config.objectives, model_config.signs
    search_logits, search_labels = predict(model, logs, search_rows)
    search = pareto_search(search_logits, search_labels, signs, config.pareto)
    model.set_fusion_weights(search.weights)

    test_logits, test_labels = predict(model, logs, test_rows)
    equal = torch.full((len(objectives),), 1.0 / len(objectives), dtype=torch.float64)
    tower_auc = auc(test_logits, test_labels)
    pscore_auc = fused_auc(test_logits, test_labels, search.weights, signs)
    equal_auc = fused_auc(test_logits, test_labels, equal, signs)
    defined = ~(torch.isnan(pscore_auc) | torch.isnan(equal_auc))
    report = {
        "objectives": list(objectives),
        "auc": as_dict(objectives, tower_auc),
        "pscore_auc": as_dict(objectives, pscore_auc),
        "equal_weight_auc": as_dict(objectives, equal_auc),
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
