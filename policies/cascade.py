"""The classic two-stage cascade: two-tower retrieval, then a multi-task ranking model.

This is the pre-OneRec production recommender and the simulator's logging policy. Stage 1, a
two-tower model (user tower over the static features and pooled pathway histories; item tower
over the item id and catalog side features) is trained with an in-batch sampled softmax on
logged engaged impressions, with the logQ correction of Yi et al. (RecSys 2019) so popular
items are not over-retrieved; it retrieves the top R items by dot product. Stage 2, a ranking
model (its own towers plus an MLP over [user, item, user * item]) predicts every behaviour of
an impression with a binary cross-entropy per behaviour; candidates are ordered by a weighted
sum of the predicted probabilities (hate weighs negatively) and the best S form the slate.

A cascade needs logs to learn from: `bootstrap_cascade` runs the production loop of logging
with a popularity policy first, then fitting the cascade, then logging with the cascade and
fitting it again on its own logs.

Letters used in shape comments: B batch (users or log rows), S slate size, N items, D width,
H pathway length, K lifelong entries, F feedback fields, C content dimensions, R retrieved
candidates, M candidates scored per user, E engaged impressions, Y behaviours.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from envs.catalog import Catalog
from envs.files import atomic_write
from envs.logging_policies import LoggingPolicy, PopularPolicy
from envs.logs import LoggedSessions, collect_sessions
from envs.simulator import SessionConfig
from envs.spec import BEHAVIOURS, FEEDBACK_FIELDS, STATIC_CARDINALITIES, feedback_index
from policies.interface import SlateRecommender, check_slate_size, seen_items, top_k_items

CASCADE_SCHEMA_VERSION = 1

# Behaviours that make an impression "engaged" (a positive of the retrieval model), and those
# that count towards a history item's weight in the user tower (everything but hate).
POSITIVE_BEHAVIOURS: tuple[str, ...] = tuple(name for name in BEHAVIOURS if name != "hate")


class LoggedData(Protocol):
    """What the cascade reads from logged sessions (`envs.logs.LoggedSessions`)."""

    slates: np.ndarray  # (rows, S) int64 item ids sent, BLANK for an empty slot
    feedback: np.ndarray  # (rows, S, F) float32 in FEEDBACK_FIELDS order
    shown: np.ndarray  # (rows, S) bool: the user saw the item (only those have feedback)

    def contexts(self, row_indices: np.ndarray) -> dict[str, np.ndarray]:
        """The observation each row's slate answered, batched over row_indices."""
        ...


@dataclass(frozen=True)
class CascadeConfig:
    """Sizes and training budget of the cascade; defaults train in minutes on a CPU."""

    width: int = 32  # D of embeddings and tower outputs; the cascade is a small baseline
    duration_buckets: int = 16  # equal-frequency duration buckets of the item tower
    candidates: int = 200  # R retrieved per request, as a production retriever feeds a ranker
    temperature: float = 0.05  # softmax temperature of the cosine retrieval scores
    engaged_behaviours: tuple[str, ...] = ("click", "long_view")  # retrieval positives
    # One weight per BEHAVIOURS entry: rarer, deeper engagement counts more, hate against.
    ranking_weights: tuple[float, ...] = (1.0, 1.0, 2.0, 2.0, 2.0, 2.0, -4.0)
    retrieval_steps: int = 300  # optimiser steps of the two-tower model
    ranking_steps: int = 300  # optimiser steps of the ranking model
    batch_size: int = 256  # engaged impressions (retrieval) or log rows (ranking) per step
    learning_rate: float = 3e-3  # Adam; small towers tolerate a large step
    exclude_seen: bool = True  # never retrieve items of the short-term or positive pathway
    seed: int = 0  # seeds initialisation and batch sampling (never the global RNG)

    def __post_init__(self) -> None:
        object.__setattr__(self, "engaged_behaviours", tuple(self.engaged_behaviours))
        object.__setattr__(self, "ranking_weights", tuple(float(w) for w in self.ranking_weights))
        for name in ("width", "duration_buckets", "candidates", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"CascadeConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("retrieval_steps", "ranking_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"CascadeConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.temperature <= 0 or self.learning_rate <= 0:
            raise ValueError(
                "CascadeConfig.temperature and learning_rate must be > 0, got "
                f"{self.temperature} and {self.learning_rate}"
            )
        unknown = [name for name in self.engaged_behaviours if name not in BEHAVIOURS]
        if unknown or not self.engaged_behaviours:
            raise ValueError(
                f"CascadeConfig.engaged_behaviours must name behaviours of {BEHAVIOURS}, "
                f"got {self.engaged_behaviours}"
            )
        if len(self.ranking_weights) != len(BEHAVIOURS):
            raise ValueError(
                f"CascadeConfig.ranking_weights needs one weight per behaviour {BEHAVIOURS}, "
                f"got {len(self.ranking_weights)} weights"
            )


@dataclass(frozen=True)
class FeatureShape:
    """Sizes of the catalog side features, enough to rebuild the model without the catalog."""

    num_items: int  # N
    num_categories: tuple[int, int, int]  # categories per level of the tree
    num_creators: int  # size of the creator table
    content_dim: int  # C
    duration_buckets: int  # size of the duration-bucket table


class CatalogFeatures(nn.Module):
    """The item side features as buffers, so a saved cascade carries what it was trained on."""

    def __init__(self, shape: FeatureShape) -> None:
        super().__init__()
        self.shape = shape
        self.register_buffer("category", torch.zeros(shape.num_items, 3, dtype=torch.int64))
        self.register_buffer("creator", torch.zeros(shape.num_items, dtype=torch.int64))
        self.register_buffer("duration_bucket", torch.zeros(shape.num_items, dtype=torch.int64))
        self.register_buffer("content", torch.zeros(shape.num_items, shape.content_dim))

    @classmethod
    def from_catalog(cls, catalog: Catalog, duration_buckets: int) -> CatalogFeatures:
        shape = FeatureShape(
            num_items=catalog.num_items, num_categories=catalog.num_categories,
            num_creators=catalog.num_creators, content_dim=catalog.content.shape[1],
            duration_buckets=duration_buckets,
        )
        features = cls(shape)
        edges = np.quantile(np.log(catalog.duration_s), np.linspace(0, 1, duration_buckets + 1))
        buckets = np.digitize(np.log(catalog.duration_s), edges[1:-1])  # (N,) in [0, buckets)
        features.category.copy_(torch.from_numpy(catalog.category))
        features.creator.copy_(torch.from_numpy(catalog.creator))
        features.duration_bucket.copy_(torch.from_numpy(buckets))
        features.content.copy_(torch.from_numpy(catalog.content))
        return features


class TwoTower(nn.Module):
    """A user tower and an item tower that meet in a D-dimensional space."""

    def __init__(self, features: CatalogFeatures, width: int) -> None:
        super().__init__()
        shape = features.shape
        self.features = features
        self.item_id = nn.Embedding(shape.num_items, width)
        self.category = nn.ModuleList(nn.Embedding(size, width) for size in shape.num_categories)
        self.creator = nn.Embedding(shape.num_creators, width)
        self.duration = nn.Embedding(shape.duration_buckets, width)
        self.content = nn.Linear(shape.content_dim, width)
        self.item_mlp = mlp(width, 2 * width, width)
        # Static values shift by one so that BLANK (-1, unknown) gets its own row 0.
        self.static = nn.ModuleList(
            nn.Embedding(size + 1, width) for size in STATIC_CARDINALITIES
        )
        self.feedback = nn.Linear(len(FEEDBACK_FIELDS), width)
        self.user_mlp = mlp(6 * width, 2 * width, width)
        for table in (self.item_id, self.creator, self.duration, *self.category, *self.static):
            nn.init.normal_(table.weight, std=0.1)

    def item_embedding(self, items: torch.Tensor) -> torch.Tensor:
        """Sum of the id and side-feature embeddings of items (...) -> (..., D); BLANK -> 0."""
        valid = items >= 0
        items = items.clamp(min=0)
        features = self.features
        category = features.category[items]  # (..., 3)
        embedding = (
            self.item_id(items)
            + sum(table(category[..., level]) for level, table in enumerate(self.category))
            + self.creator(features.creator[items])
            + self.duration(features.duration_bucket[items])
            + self.content(features.content[items])
        )
        return embedding * valid[..., None]  # (..., D)

    def item(self, items: torch.Tensor) -> torch.Tensor:
        """Item tower output (..., D) for item ids (...)."""
        embedding = self.item_embedding(items)
        return embedding + self.item_mlp(embedding)  # (..., D)

    def user(self, observation: dict[str, np.ndarray]) -> torch.Tensor:
        """User tower output (B, D) from the static features and the three item pathways.

        Pools of item embeddings: short-term items weighted by their number of positive
        behaviours (what was engaged) and unweighted (what was shown); positive items
        weighted by 1 + their positive behaviours; lifelong entries by the size of the
        cluster each stands for. The short-term feedback averages to one more input.
        """
        static = torch.as_tensor(observation["static"], dtype=torch.int64) + 1  # (B, 5)
        static_embedding = sum(table(static[:, i]) for i, table in enumerate(self.static))
        short_items = torch.as_tensor(observation["short_term_items"], dtype=torch.int64)
        short_feedback = torch.as_tensor(observation["short_term_feedback"], dtype=torch.float32)
        positive_items = torch.as_tensor(observation["positive_items"], dtype=torch.int64)
        positive_feedback = torch.as_tensor(observation["positive_feedback"], dtype=torch.float32)
        lifelong_items = torch.as_tensor(observation["lifelong_items"], dtype=torch.int64)
        lifelong_features = torch.as_tensor(observation["lifelong_features"], dtype=torch.float32)
        cluster_size = lifelong_features[..., -1].clamp(min=1.0)  # (B, K): items it stands for
        shown = (short_items >= 0).float()  # (B, H)
        short_embedding = self.item_embedding(short_items)  # (B, H, D)
        pooled = [
            pool(short_embedding, shown * engagement(short_feedback)),  # what the user engaged
            pool(short_embedding, shown),  # what the user was shown, engaged or not
            pool(
                self.item_embedding(positive_items),
                (positive_items >= 0).float() * (1.0 + engagement(positive_feedback)),
            ),
            pool(self.item_embedding(lifelong_items), (lifelong_items >= 0) * cluster_size),
        ]
        feedback_summary = pool(normalise_feedback(short_feedback), shown)  # (B, F)
        inputs = torch.cat([static_embedding, *pooled, self.feedback(feedback_summary)], dim=1)
        return self.user_mlp(inputs)  # (B, D)


class RankingModel(nn.Module):
    """Per-behaviour engagement logits of (user, item) pairs, from its own two towers."""

    def __init__(self, features: CatalogFeatures, width: int) -> None:
        super().__init__()
        self.towers = TwoTower(features, width)
        self.head = mlp(3 * width, 2 * width, len(BEHAVIOURS))

    def forward(self, observation: dict[str, np.ndarray], items: torch.Tensor) -> torch.Tensor:
        """Logits (B, M, Y) for candidate items (B, M) of each user."""
        user = self.towers.user(observation)[:, None, :].expand(-1, items.shape[1], -1)
        item = self.towers.item(items)  # (B, M, D)
        return self.head(torch.cat([user, item, user * item], dim=2))  # (B, M, Y)


class CascadeModel(nn.Module):
    """Both stages and the shared catalog features, as one module (one state dict)."""

    def __init__(self, features: CatalogFeatures, width: int) -> None:
        super().__init__()
        self.features = features
        self.retrieval = TwoTower(self.features, width)
        self.ranking = RankingModel(self.features, width)


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    """Two linear layers with a ReLU between."""
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, outputs))


def pool(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean over the history axis: values (B, H, X), weights (B, H) -> (B, X)."""
    total = weights.sum(dim=1, keepdim=True).clamp(min=1e-6)  # (B, 1)
    return (values * weights[..., None]).sum(dim=1) / total


def engagement(feedback: torch.Tensor) -> torch.Tensor:
    """Number of positive behaviours of each impression: feedback (..., F) -> (...)."""
    columns = [feedback_index(name) for name in POSITIVE_BEHAVIOURS]
    return (feedback[..., columns] > 0).float().sum(dim=-1)


def normalise_feedback(feedback: torch.Tensor) -> torch.Tensor:
    """Feedback (..., F) with watch time on a log scale, so no field dwarfs the others."""
    watch_time = feedback_index("watch_time")
    return torch.cat(
        [
            feedback[..., :watch_time],
            torch.log1p(feedback[..., watch_time:watch_time + 1].clamp(min=0)),
            feedback[..., watch_time + 1:],
        ],
        dim=-1,
    )


class CascadeRecommender(SlateRecommender):
    """Retrieve R candidates with the two-tower model, rank them, show the best."""

    def __init__(self, model: CascadeModel, config: CascadeConfig, slate_size: int) -> None:
        self.model = model.eval()
        self.config = config
        self.slate_size = check_slate_size(slate_size)
        with torch.no_grad():
            all_items = torch.arange(model.features.shape.num_items)
            self.item_vectors = F.normalize(model.retrieval.item(all_items), dim=1)  # (N, D)
        self.ranking_weights = torch.tensor(config.ranking_weights)  # (Y,)

    def retrieve(self, observation: dict[str, np.ndarray], count: int) -> np.ndarray:
        """The top `count` items by two-tower score: (B, count) int64, BLANK-padded."""
        with torch.no_grad():
            user = F.normalize(self.model.retrieval.user(observation), dim=1)  # (B, D)
            scores = user @ self.item_vectors.T  # (B, N)
        exclude = seen_items(observation) if self.config.exclude_seen else None
        return top_k_items(scores, count, exclude)  # (B, count)

    def ranking_scores(self, observation: dict[str, np.ndarray], items: np.ndarray) -> np.ndarray:
        """Weighted engagement score of candidate items (B, M); -inf for BLANK -> (B, M)."""
        items = torch.as_tensor(items, dtype=torch.int64)
        with torch.no_grad():
            probabilities = torch.sigmoid(self.model.ranking(observation, items))  # (B, M, Y)
            scores = probabilities @ self.ranking_weights  # (B, M)
        return torch.where(items >= 0, scores, float("-inf")).numpy()

    def recommend(
        self, observation: dict[str, np.ndarray], k: int, rng: np.random.Generator
    ) -> np.ndarray:
        """The k best-ranked of the R retrieved items (deterministic: `rng` is not used)."""
        candidates = self.retrieve(observation, max(k, self.config.candidates))  # (B, R)
        scores = torch.from_numpy(self.ranking_scores(observation, candidates))  # (B, R)
        order = top_k_items(scores, k)  # (B, K) positions in candidates, BLANK if none
        picked = np.take_along_axis(candidates, np.maximum(order, 0), axis=1)
        return np.where(order >= 0, picked, order)  # (B, K)

    def save(self, path: str | Path) -> None:
        """Write weights, catalog features and config to one file (temp file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {
            "kind": "cascade",
            "schema_version": CASCADE_SCHEMA_VERSION,
            "config": dataclasses.asdict(self.config),
            "shape": dataclasses.asdict(self.model.features.shape),
            "slate_size": self.slate_size,
        }
        payload = {"header": json.dumps(header), "state": self.model.state_dict()}
        atomic_write(path, lambda handle: torch.save(payload, handle))

    @classmethod
    def load(cls, path: str | Path) -> CascadeRecommender:
        """Read a cascade written by `save`; a wrong or damaged file is a clear error."""
        path = Path(path)
        try:
            payload = torch.load(path, weights_only=True)
            header = json.loads(payload["header"])
        except FileNotFoundError:
            raise
        except Exception as error:  # unpickling, json and key errors all mean "not a cascade"
            raise ValueError(
                f"{path} is not a readable cascade file ({error}); write it with "
                "CascadeRecommender.save"
            ) from error
        version = header.get("schema_version")
        if header.get("kind") != "cascade" or version != CASCADE_SCHEMA_VERSION:
            raise ValueError(
                f"{path} has kind {header.get('kind')!r} and schema_version "
                f"{version}, expected a cascade of schema_version "
                f"{CASCADE_SCHEMA_VERSION}; retrain it with this version of onerec-lab"
            )
        shape = header["shape"]
        shape = FeatureShape(**{**shape, "num_categories": tuple(shape["num_categories"])})
        config = CascadeConfig(**header["config"])
        model = CascadeModel(CatalogFeatures(shape), config.width)
        model.load_state_dict(payload["state"])
        return cls(model, config, header["slate_size"])


def fit_cascade(
    logs: LoggedData,
    catalog: Catalog,
    config: CascadeConfig,
    on_step: Callable[[str, int, float], None] | None = None,
) -> CascadeRecommender:
    """Train retrieval, then ranking, on logged sessions; returns the cascade policy.

    The cascade shows slates as wide as the logged ones. All randomness comes from
    `config.seed` inside a forked RNG. `on_step(stage, step, loss)` is called after every
    optimiser step with stage "retrieval" or "ranking".
    """
    slates = np.asarray(logs.slates, dtype=np.int64)  # (rows, S)
    feedback = np.asarray(logs.feedback, dtype=np.float32)  # (rows, S, F)
    if slates.ndim != 2 or feedback.shape[:2] != slates.shape or slates.size == 0:
        raise ValueError(
            f"logs need non-empty slates (rows, S) and feedback (rows, S, F), got "
            f"{slates.shape} and {feedback.shape}"
        )
    shown = np.asarray(logs.shown, dtype=bool) & (slates >= 0)  # (rows, S) real impressions
    if slates.max() >= catalog.num_items:
        raise ValueError(
            f"logs show item {int(slates.max())} but the catalog has {catalog.num_items} items; "
            "fit the cascade with the catalog the logs were collected on"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        features = CatalogFeatures.from_catalog(catalog, config.duration_buckets)
        model = CascadeModel(features, config.width)
        rng = np.random.default_rng(config.seed)
        _train_retrieval(model.retrieval, logs, slates, shown, feedback, config, rng, on_step)
        _train_ranking(model.ranking, logs, slates, shown, feedback, config, rng, on_step)
    return CascadeRecommender(model, config, slates.shape[1])


def _train_retrieval(
    towers: TwoTower,
    logs: LoggedData,
    slates: np.ndarray,
    shown: np.ndarray,
    feedback: np.ndarray,
    config: CascadeConfig,
    rng: np.random.Generator,
    on_step: Callable[[str, int, float], None] | None,
) -> None:
    """Fit the two towers on engaged impressions by `retrieval_loss`."""
    columns = [feedback_index(name) for name in config.engaged_behaviours]
    engaged = shown & (feedback[..., columns] > 0).any(axis=2)  # (rows, S)
    rows, slots = np.nonzero(engaged)
    if rows.size < 2:
        raise ValueError(
            f"logs hold {rows.size} engaged impressions ({', '.join(config.engaged_behaviours)}); "
            "the retrieval model needs at least 2: log more sessions"
        )
    items = slates[rows, slots]  # (E,) the engaged items
    # log Q: the log share of positives that are this item, the in-batch sampling bias.
    log_frequency = torch.from_numpy(np.log(np.bincount(items)[items] / items.size)).float()

    def batch_loss() -> torch.Tensor:
        picked = rng.choice(rows.size, size=min(config.batch_size, rows.size), replace=False)
        return retrieval_loss(
            towers, logs.contexts(rows[picked]), torch.from_numpy(items[picked]),
            log_frequency[picked], config.temperature,
        )

    _optimise(towers, batch_loss, config.retrieval_steps, "retrieval", config, on_step)


def _train_ranking(
    ranking: RankingModel,
    logs: LoggedData,
    slates: np.ndarray,
    shown: np.ndarray,
    feedback: np.ndarray,
    config: CascadeConfig,
    rng: np.random.Generator,
    on_step: Callable[[str, int, float], None] | None,
) -> None:
    """Fit the ranking model on every logged impression, one BCE per behaviour."""
    labels = feedback[..., [feedback_index(name) for name in BEHAVIOURS]] > 0  # (rows, S, Y)

    def batch_loss() -> torch.Tensor:
        rows = rng.choice(slates.shape[0], size=min(config.batch_size, slates.shape[0]),
                          replace=False)
        items = torch.from_numpy(slates[rows])  # (B, S)
        seen = torch.from_numpy(shown[rows])  # (B, S)
        logits = ranking(logs.contexts(rows), items)  # (B, S, Y)
        return F.binary_cross_entropy_with_logits(
            logits[seen], torch.from_numpy(labels[rows]).float()[seen]
        )

    _optimise(ranking, batch_loss, config.ranking_steps, "ranking", config, on_step)


def _optimise(
    module: nn.Module,
    batch_loss: Callable[[], torch.Tensor],
    steps: int,
    stage: str,
    config: CascadeConfig,
    on_step: Callable[[str, int, float], None] | None,
) -> None:
    """`steps` Adam steps on the loss of a fresh batch each; reports each to `on_step`."""
    optimizer = torch.optim.Adam(module.parameters(), lr=config.learning_rate)
    for step in range(steps):
        loss = batch_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(stage, step, loss.item())


def retrieval_loss(
    towers: TwoTower,
    observation: dict[str, np.ndarray],
    items: torch.Tensor,
    log_frequency: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """In-batch sampled softmax with logQ correction: each user's engaged item (B,) against
    the other users' items; a duplicate of the positive is not counted as a negative."""
    user = F.normalize(towers.user(observation), dim=1)  # (B, D)
    item = F.normalize(towers.item(items), dim=1)  # (B, D)
    logits = user @ item.T / temperature - log_frequency[None, :]  # (B, B)
    duplicate = (items[:, None] == items[None, :]) & ~torch.eye(len(items), dtype=torch.bool)
    logits = logits.masked_fill(duplicate, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(items)))


def bootstrap_cascade(
    catalog: Catalog,
    config: CascadeConfig,
    num_users: int,
    max_requests: int,
    seed: int,
    rounds: int = 2,
    session_config: SessionConfig | None = None,
) -> tuple[CascadeRecommender, list[LoggedSessions]]:
    """Train the cascade the way production does: on logs of its own making.

    Before any model exists, the simulator logs `num_users` sessions with the popularity
    logging policy (`envs.logging_policies.PopularPolicy`). Then, for each of `rounds` rounds,
    the cascade is fitted on the latest logs and logs `num_users` new sessions itself (round r
    simulates the users of seeds `seed + r * num_users` onwards). Returns the last cascade and
    the logs of every round, oldest first: the popular round, then one per cascade, the last
    collected with the returned cascade (the usual pre-training data of a generative policy).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1 (fits of the cascade on its logs), got {rounds}")
    session_config = SessionConfig() if session_config is None else session_config
    policy: LoggingPolicy = PopularPolicy(catalog, session_config.slate_size)
    logs: list[LoggedSessions] = []
    for round_index in range(rounds + 1):
        if round_index:
            policy = fit_cascade(logs[-1], catalog, config)
        logs.append(collect_sessions(
            policy, catalog, num_users, max_requests, seed + round_index * num_users,
            config=session_config, policy_name="cascade" if round_index else "popular",
        ))
    return policy, logs
