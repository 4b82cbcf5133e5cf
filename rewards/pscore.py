"""P-score: a multi-tower engagement model and its monotone fused score.

The OneRec report's reward model (PAPER.md, Reward system): one tower per objective, each with
its own BCE, over a shared user/item representation; one fused score. Here:

- item representation: id embedding + leaf category + creator + duration bucket (+ a linear
  view of the catalog's content features), summed;
- user representation: static features, plus target attention (DIN-style) of each candidate
  item over the user's history items (short-term and positive pathways), each history item
  carrying its logged feedback;
- one sigmoid tower per objective, on a shared MLP of [user, attended interest, item,
  interest * item]: one per binary behaviour in `envs.spec.BEHAVIOURS`, and `watch_time` (the
  paper's view-through objective, OneRec v1's session-watch-time tower). The behaviours are
  flags (long_view is "18 s or the whole video", so a fully watched 10 s clip counts); the
  watch-time tower is what sees the seconds: it is trained by BCE on the soft label
  w / (w + tau) of the logged watch seconds w, tau = `PScoreConfig.watch_time_scale` (the
  mean watch time of the training logs), and its AUC is measured against w >= tau;
- fusion: fused logit = sum_k w_k * sign_k * logit_k with w_k >= 0, sign_k = -1 for hate and
  +1 otherwise; P-score = sigmoid(fused logit).

Monotonicity, by construction: call item a "at least as good" as item b when a's predicted
probability is >= b's on every positive objective and <= b's on hate. Each term
w_k * sign_k * logit_k is then >= for a, so a's P-score is >= b's. The weights w are searched by
`rewards.pareto.pareto_search`; the lifelong pathway is not used (the two shorter pathways
carry the recent, target-relevant history that attention needs).

On disk a P-score is ONE file, `pscore.pt` (format version 2): a dict torch's safe loader
(`weights_only=True`) reads, {"format": "onerec-lab/pscore", "version": 2, "config": JSON
text, "fusion_weights": list, "report": JSON text, "catalog_fingerprint": str or None,
"state": state dict}; one rename replaces config and weights together. Version 1 (older
onerec-lab: `pscore.json` with the config beside `pscore.pt` with the bare state dict) still
loads, with `catalog_fingerprint` None; saving over it removes its `pscore.json` once the new
`pscore.pt` is in place. `load_pscore` checks the config against the weights' shapes on the
meta device before it allocates the model, so a crafted config cannot make it allocate more
than the file holds.

Letters used in shape comments: B batch, S slate, H history length, N items, C content
dimensions, D model width, M shared hidden width, T tower width, K objectives, F feedback.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from envs.files import atomic_write, unreadable
from envs.spec import BEHAVIOURS, BLANK, NUM_FEEDBACK, STATIC_CARDINALITIES, STATIC_FIELDS
from rewards.protocol import RewardInput, RewardOutput, slate_mean

# Every objective a tower can predict, in FEEDBACK_FIELDS order: watch seconds, then the flags.
OBJECTIVES: tuple[str, ...] = ("watch_time", *BEHAVIOURS)
# Objectives whose higher probability makes an item worse: they enter the fusion negatively.
NEGATIVE_OBJECTIVES = frozenset({"hate"})
# Observation keys of the history pathways the model attends over: (items, feedback).
HISTORY_PATHWAYS = (
    ("short_term_items", "short_term_feedback"),
    ("positive_items", "positive_feedback"),
)
WEIGHTS_FILE = "pscore.pt"
LEGACY_CONFIG_FILE = "pscore.json"  # the config of a version-1 P-score (no longer written)
PSCORE_FORMAT = "onerec-lab/pscore"
PSCORE_FORMAT_VERSION = 2  # 1: the legacy pair LEGACY_CONFIG_FILE + WEIGHTS_FILE
REFIT = "refit it with `onerec-lab reward fit --logs DIR --out FOLDER`"


class ItemCatalog(Protocol):
    """The catalog fields the P-score reads (`envs.catalog.Catalog` has them)."""

    category: np.ndarray  # (N, 3) int64
    creator: np.ndarray  # (N,) int64
    duration_s: np.ndarray  # (N,) float32
    content: np.ndarray  # (N, C) float32


@dataclass(frozen=True)
class PScoreConfig:
    """Sizes of the P-score model. Vocabulary sizes come from the catalog (`from_catalog`)."""

    num_items: int  # catalog size N
    num_categories: int  # leaf categories (the finest level of the 3-level tree)
    num_creators: int  # creators in the catalog
    content_dim: int = 0  # width of catalog content features; 0 = item ids and side features only
    embed_dim: int = 32  # D: small, the logs of a CPU study hold ~1e5 impressions
    hidden_dim: int = 64  # M: the shared MLP over [user, interest, item, interest * item]
    tower_dim: int = 32  # T: one hidden layer per tower lets objectives bend differently
    duration_buckets: int = 8  # log-spaced duration buckets between 3 s and 600 s
    objectives: tuple[str, ...] = OBJECTIVES  # one tower each, in FEEDBACK_FIELDS order
    # tau, seconds: watch-time soft label w / (w + tau), AUC label w >= tau. None until
    # `fit_pscore` sets it to the mean watch time of its training logs (saved in the config).
    watch_time_scale: float | None = None

    def __post_init__(self) -> None:
        for name in (
            "num_items",
            "num_categories",
            "num_creators",
            "embed_dim",
            "hidden_dim",
            "tower_dim",
            "duration_buckets",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"PScoreConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.content_dim < 0:
            raise ValueError(f"PScoreConfig.content_dim must be >= 0, got {self.content_dim}")
        unknown = [name for name in self.objectives if name not in OBJECTIVES]
        if unknown or not self.objectives:
            raise ValueError(
                f"PScoreConfig.objectives must be a non-empty subset of {OBJECTIVES}, got "
                f"{self.objectives}"
            )
        if self.watch_time_scale is not None and not (
            math.isfinite(self.watch_time_scale) and self.watch_time_scale > 0
        ):
            raise ValueError(
                "PScoreConfig.watch_time_scale must be a positive number of seconds (or None "
                f"to fit it on the training logs), got {self.watch_time_scale}"
            )

    @classmethod
    def from_catalog(cls, catalog: ItemCatalog, **overrides: object) -> PScoreConfig:
        """Vocabulary sizes read from `catalog`; other fields from `overrides` or defaults."""
        sizes = {
            "num_items": int(catalog.creator.shape[0]),
            "num_categories": int(catalog.category[:, 2].max()) + 1,
            "num_creators": int(catalog.creator.max()) + 1,
            "content_dim": int(catalog.content.shape[1]),
        }
        return cls(**{**sizes, **overrides})

    @property
    def signs(self) -> torch.Tensor:
        """(K,) +1 for objectives to raise, -1 for those to lower."""
        return torch.tensor(
            [-1.0 if name in NEGATIVE_OBJECTIVES else 1.0 for name in self.objectives]
        )


def fuse_logits(logits: torch.Tensor, weights: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """Fused logit sum_k weights_k * signs_k * logits_k: (..., K) -> (...).

    Monotone by construction: non-decreasing in every positive objective's logit and
    non-increasing in every negative one's, because the weights are checked >= 0.
    """
    if logits.shape[-1] != weights.shape[0] or weights.shape != signs.shape:
        raise ValueError(
            f"tower logits end in {logits.shape[-1]} objectives but there are "
            f"{weights.shape[0]} weights and {signs.shape[0]} signs; they must match"
        )
    if not torch.isfinite(logits).all():
        raise ValueError("tower logits contain NaN or infinite values; check the model inputs")
    if (weights < 0).any() or not torch.isfinite(weights).all():
        raise ValueError(f"fusion weights must be finite and >= 0, got {weights.tolist()}")
    return (logits * (weights * signs).to(logits.dtype)).sum(-1)  # (...)


def _duration_bucket(duration_s: np.ndarray, buckets: int) -> np.ndarray:
    edges = np.geomspace(3.0, 600.0, buckets + 1)[1:-1]
    return np.searchsorted(edges, duration_s).astype(np.int64)


class PScoreModel(nn.Module):
    """Multi-tower engagement model; `tower_logits` (B, S, K), `item_scores` (B, S) in [0, 1]."""

    def __init__(self, config: PScoreConfig, catalog: ItemCatalog | None = None) -> None:
        super().__init__()
        self.config = config
        # the `Catalog.fingerprint` of the world it was fitted in (load_pscore reads it back;
        # None when unknown, e.g. a version-1 file)
        self.catalog_fingerprint: str | None = None
        width = config.embed_dim
        # Item side features live in buffers, so a checkpoint scores items without a catalog.
        self.register_buffer("item_category", torch.zeros(config.num_items, dtype=torch.long))
        self.register_buffer("item_creator", torch.zeros(config.num_items, dtype=torch.long))
        self.register_buffer("item_duration", torch.zeros(config.num_items, dtype=torch.long))
        self.register_buffer("item_content", torch.zeros(config.num_items, config.content_dim))
        if catalog is not None:
            self._load_catalog(catalog)
        self.item_embedding = nn.Embedding(config.num_items, width)
        self.category_embedding = nn.Embedding(config.num_categories, width)
        self.creator_embedding = nn.Embedding(config.num_creators, width)
        self.duration_embedding = nn.Embedding(config.duration_buckets, width)
        self.content_projection = (
            nn.Linear(config.content_dim, width) if config.content_dim else None
        )
        self.static_embeddings = nn.ModuleList(
            nn.Embedding(size, width) for size in STATIC_CARDINALITIES
        )
        self.feedback_projection = nn.Linear(NUM_FEEDBACK, width)
        self.query = nn.Linear(width, width, bias=False)
        self.key = nn.Linear(width, width, bias=False)
        self.null_key = nn.Parameter(torch.zeros(width))  # lets a user with no history attend
        self.shared = nn.Sequential(
            nn.Linear(4 * width, config.hidden_dim),
            nn.ReLU(),
            nn.Linear(config.hidden_dim, config.hidden_dim),
            nn.ReLU(),
        )
        k, m, t = len(config.objectives), config.hidden_dim, config.tower_dim
        self.tower_hidden = nn.Parameter(torch.randn(k, m, t) / m**0.5)  # (K, M, T)
        self.tower_hidden_bias = nn.Parameter(torch.zeros(k, t))
        self.tower_out = nn.Parameter(torch.randn(k, t) / t**0.5)  # (K, T)
        self.tower_out_bias = nn.Parameter(torch.zeros(k))
        self.register_buffer("fusion_weights", torch.full((k,), 1.0 / k))
        self.register_buffer("signs", config.signs)
        for module in self.modules():  # small embeddings: N(0, 1) ids would drown the content
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.05)

    def _load_catalog(self, catalog: ItemCatalog) -> None:
        config = self.config
        if catalog.creator.shape[0] != config.num_items:
            raise ValueError(
                f"catalog has {catalog.creator.shape[0]} items, the P-score config "
                f"{config.num_items}; build the config with PScoreConfig.from_catalog"
            )
        self.item_category.copy_(torch.as_tensor(catalog.category[:, 2]))
        self.item_creator.copy_(torch.as_tensor(catalog.creator))
        self.item_duration.copy_(
            torch.as_tensor(
                _duration_bucket(np.asarray(catalog.duration_s), config.duration_buckets)
            )
        )
        if config.content_dim:
            self.item_content.copy_(torch.as_tensor(catalog.content, dtype=torch.float32))

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:
        """(...) item ids, BLANK allowed -> (..., D); a blank borrows item 0's vector (masked
        later)."""
        if (items >= self.config.num_items).any():
            raise ValueError(
                f"item id {int(items.max())} is outside the P-score's catalog of "
                f"{self.config.num_items} items; refit the P-score on this catalog"
            )
        ids = items.clamp(min=0)
        vectors = (
            self.item_embedding(ids)
            + self.category_embedding(self.item_category[ids])
            + self.creator_embedding(self.item_creator[ids])
            + self.duration_embedding(self.item_duration[ids])
        )
        if self.content_projection is not None:
            vectors = vectors + self.content_projection(self.item_content[ids])
        return vectors

    def embed_user(self, static: torch.Tensor) -> torch.Tensor:
        """(B, 5) static features -> (B, D)."""
        if static.dim() != 2 or static.shape[1] != len(STATIC_FIELDS):
            raise ValueError(
                f"context['static'] must be (B, {len(STATIC_FIELDS)}), got {tuple(static.shape)}"
            )
        for column, (name, size) in enumerate(
            zip(STATIC_FIELDS, STATIC_CARDINALITIES, strict=True)
        ):
            values = static[:, column]
            if (values < 0).any() or (values >= size).any():
                raise ValueError(
                    f"static feature {name} must be in [0, {size}), got values in "
                    f"[{int(values.min())}, {int(values.max())}]"
                )
        return sum(
            embedding(static[:, column].long())
            for column, embedding in enumerate(self.static_embeddings)
        )

    def _history(self, context: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """History tokens (B, H, D) and their padding mask (B, H) from the attended pathways."""
        tokens, masks = [], []
        for items_key, feedback_key in HISTORY_PATHWAYS:
            if items_key not in context or feedback_key not in context:
                raise ValueError(
                    f"the P-score reads context[{items_key!r}] and context[{feedback_key!r}]; "
                    f"the context has {sorted(context)}"
                )
            items, feedback = context[items_key].long(), context[feedback_key].float()
            if feedback.shape != (*items.shape, NUM_FEEDBACK):
                raise ValueError(
                    f"context[{feedback_key!r}] must be {(*items.shape, NUM_FEEDBACK)}, got "
                    f"{tuple(feedback.shape)}"
                )
            # watch time is in seconds: log1p keeps it on the scale of the binary labels
            feedback = torch.cat([feedback[..., :1].clamp(min=0).log1p(), feedback[..., 1:]], -1)
            tokens.append(self.embed_items(items) + self.feedback_projection(feedback))
            masks.append(items != BLANK)
        return torch.cat(tokens, 1), torch.cat(masks, 1)  # (B, H, D), (B, H)

    def tower_logits(
        self, context: Mapping[str, torch.Tensor], items: torch.Tensor
    ) -> torch.Tensor:
        """Logit of every objective for every candidate: (B, S) items -> (B, S, K)."""
        if "static" not in context:
            raise ValueError(
                f"the P-score reads context['static']; the context has {sorted(context)}"
            )
        target = self.embed_items(items)  # (B, S, D)
        user = self.embed_user(context["static"])[:, None, :].expand_as(target)  # (B, S, D)
        history, present = self._history(context)  # (B, H, D), (B, H)
        batch, width = history.shape[0], history.shape[2]
        keys = torch.cat(
            [self.key(history), self.null_key.expand(batch, 1, width)], 1
        )  # (B, H+1, D)
        values = torch.cat([history, torch.zeros(batch, 1, width, device=history.device)], 1)
        present = torch.cat([present, present.new_ones(batch, 1)], 1)  # (B, H+1)
        attention = self.query(target) @ keys.transpose(1, 2) / width**0.5  # (B, S, H+1)
        attention = attention.masked_fill(~present[:, None, :], float("-inf")).softmax(-1)
        interest = attention @ values  # (B, S, D)
        shared = self.shared(
            torch.cat([user, interest, target, interest * target], -1)
        )  # (B, S, M)
        hidden = torch.relu(
            torch.einsum("bsm,kmt->bskt", shared, self.tower_hidden) + self.tower_hidden_bias
        )  # (B, S, K, T)
        return (hidden * self.tower_out).sum(-1) + self.tower_out_bias  # (B, S, K)

    def item_scores(self, context: Mapping[str, torch.Tensor], items: torch.Tensor) -> torch.Tensor:
        """P-score of every candidate, 0 for blanks: (B, S) -> (B, S) in [0, 1]."""
        fused = fuse_logits(self.tower_logits(context, items), self.fusion_weights, self.signs)
        return torch.where(items != BLANK, torch.sigmoid(fused), torch.zeros_like(fused))

    def set_fusion_weights(self, weights: torch.Tensor) -> None:
        """Replace the fusion weights (K,), checked finite and >= 0, normalised to sum 1."""
        weights = torch.as_tensor(weights, dtype=torch.float32).flatten()
        if weights.shape != self.fusion_weights.shape or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                f"fusion weights must be {tuple(self.fusion_weights.shape)} non-negative values "
                f"with a positive sum, got {weights.tolist()}"
            )
        self.fusion_weights.copy_(weights / weights.sum())


class PScoreReward:
    """The P-score as a reward: per-item fused score, slate reward = `slate_mean`."""

    name = "pscore"
    requires = frozenset({"context"})

    def __init__(self, model: PScoreModel) -> None:
        self.model = model

    def item_scores(self, batch: RewardInput) -> torch.Tensor:
        batch.require("context", self.name)
        device = next(self.model.parameters()).device
        context = {key: value.to(device) for key, value in batch.context.items()}
        with torch.no_grad():
            scores = self.model.item_scores(context, batch.items.to(device))  # (B, S)
        return scores.to(batch.items.device)

    def __call__(self, batch: RewardInput) -> RewardOutput:
        return RewardOutput.single(self.name, slate_mean(self.item_scores(batch), batch.items))


def save_pscore(
    model: PScoreModel, folder: str | Path, report: dict | None = None,
    catalog_fingerprint: str | None = None,
) -> Path:
    """Write `folder/pscore.pt`, the ONE file of the module docstring, with `atomic_write`; a
    version-1 `pscore.json` there is removed only once the new file is in place.
    `catalog_fingerprint` (the fitting logs' `catalog_fingerprint`; default: the model's own)
    records the world the P-score belongs to. Returns the folder."""
    folder = Path(folder)
    payload = {
        "format": PSCORE_FORMAT,
        "version": PSCORE_FORMAT_VERSION,
        "config": json.dumps(asdict(model.config)),
        "fusion_weights": model.fusion_weights.tolist(),
        "report": json.dumps(report or {}),
        "catalog_fingerprint": (
            model.catalog_fingerprint if catalog_fingerprint is None else catalog_fingerprint
        ),
        "state": {name: value.detach().cpu() for name, value in model.state_dict().items()},
    }
    atomic_write(folder / WEIGHTS_FILE, lambda handle: torch.save(payload, handle))
    (folder / LEGACY_CONFIG_FILE).unlink(missing_ok=True)
    return folder


def load_pscore(path: str | Path, device: str | torch.device = "cpu") -> PScoreModel:
    """Read a P-score folder (or its `pscore.pt`) of format version 2 or 1 (module docstring);
    the model's `catalog_fingerprint` is the recorded one. A truncated, foreign or
    inconsistent file is a one-line ValueError naming it."""
    path = Path(path)
    file = path / WEIGHTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"{path} holds no fitted P-score ({WEIGHTS_FILE}); run "
            "`onerec-lab reward fit --logs DIR --out FOLDER` first"
        )
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # zip, pickle and refused-object errors: not a P-score file
        raise unreadable(file, "P-score file", error, REFIT) from error
    if isinstance(payload, dict) and "format" in payload:
        config, state, fingerprint = _read_current(file, payload)
    else:
        config, state, fingerprint = _read_legacy_config(file), payload, None
    model = _build_checked(file, config, state)
    model.catalog_fingerprint = fingerprint
    return model.to(device).eval()


def _read_current(file: Path, payload: dict) -> tuple[PScoreConfig, object, str | None]:
    """Config, state and catalog fingerprint of a version-2 payload."""
    if payload.get("format") != PSCORE_FORMAT or payload.get("version") != PSCORE_FORMAT_VERSION:
        raise unreadable(file, "P-score file", f"format {payload.get('format')!r} version "
                         f"{payload.get('version')!r}; this onerec-lab reads {PSCORE_FORMAT!r} "
                         f"version {PSCORE_FORMAT_VERSION}", REFIT)
    fingerprint = payload.get("catalog_fingerprint")
    if not isinstance(fingerprint, str | None) or "state" not in payload:
        raise unreadable(file, "P-score file", "its catalog_fingerprint is not text or its "
                         "state is missing", REFIT)
    try:
        config = json.loads(payload["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise unreadable(file, "P-score file", error, REFIT) from error
    return _config_from(file, config), payload["state"], fingerprint


def _read_legacy_config(file: Path) -> PScoreConfig:
    """The config of a version-1 P-score: `pscore.json` beside its bare state dict."""
    config_file = file.with_name(LEGACY_CONFIG_FILE)
    if not config_file.is_file():
        raise unreadable(file, "P-score file", f"it is a bare state dict (format version 1) "
                         f"without its {LEGACY_CONFIG_FILE} beside it", REFIT)
    try:
        header = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise unreadable(config_file, "P-score config", error, REFIT) from error
    if not isinstance(header, dict) or header.get("kind") != "pscore":
        kind = header.get("kind") if isinstance(header, dict) else type(header).__name__
        raise unreadable(config_file, "P-score config", f"kind {kind!r}, expected 'pscore'",
                         REFIT)
    return _config_from(config_file, header.get("config"))


def _config_from(file: Path, config: object) -> PScoreConfig:
    """A `PScoreConfig` from its JSON form; unknown keys and bad values name `file`."""
    if not isinstance(config, dict):
        raise unreadable(file, "P-score file", f"its config is {type(config).__name__}, not a "
                         "JSON object", REFIT)
    unknown = sorted(set(config) - {field.name for field in fields(PScoreConfig)})
    if unknown:
        raise unreadable(file, "P-score file", f"its config has unknown keys {unknown} (from "
                         "another version of onerec-lab?)", REFIT)
    if isinstance(config.get("objectives"), list):
        config = {**config, "objectives": tuple(config["objectives"])}
    try:
        return PScoreConfig(**config)
    except (TypeError, ValueError) as error:
        raise unreadable(file, "P-score file", error, REFIT) from error


def _build_checked(file: Path, config: PScoreConfig, state: object) -> PScoreModel:
    """The model of `config` holding `state`, built for real only once a meta-device skeleton
    shows that every parameter shape matches: memory is bounded by what the file holds."""
    if not isinstance(state, Mapping) or not all(
        isinstance(name, str) and isinstance(value, torch.Tensor) for name, value in state.items()
    ):
        raise unreadable(file, "P-score file", "its weights are not a state dict of tensors",
                         REFIT)
    try:
        with torch.device("meta"):
            skeleton = PScoreModel(config)
    except Exception as error:  # a config value torch cannot size a layer with
        raise unreadable(file, "P-score file", error, REFIT) from error
    expected = {name: tuple(value.shape) for name, value in skeleton.state_dict().items()}
    found = {name: tuple(value.shape) for name, value in state.items()}
    if expected != found:
        differences = [
            f"{name} {found.get(name, 'missing')} in the weights, {expected.get(name, 'none')} "
            "for the config"
            for name in sorted(expected.keys() | found.keys())
            if expected.get(name) != found.get(name)
        ]
        raise unreadable(file, "P-score file", f"its config does not fit its weights: "
                         f"{'; '.join(differences[:3])}", REFIT)
    model = PScoreModel(config)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as error:  # e.g. a dtype that cannot be cast
        raise unreadable(file, "P-score file", error, REFIT) from error
    return model
