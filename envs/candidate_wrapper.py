"""`CandidateSlateEnv`: choose S of N retrieved candidates, an action space PPO can learn.

The session env's action is a slate of ids out of the whole catalog (thousands of choices
per slot), which a policy-gradient agent cannot explore. Production splits the job: a
retrieval stage proposes a few dozen candidates and a policy only orders them. This wrapper
does the same: a candidate source proposes N items per request, the observation shows them
with their observable features, and the action scores them; the S best are served.

A candidate source is any callable `source(observation, rng) -> (B, N)` int64 on a batched
observation (arrays with a leading B; the wrapper calls it with B = 1), BLANK where it has
nothing to propose. Batched, so one source serves the env and a batched recommender alike;
envs imports no policies, so a trained retriever plugs in as a callable, e.g.
`lambda observation, rng: cascade.retrieve(observation, 50)` for the cascade's two-tower
stage. The default, `PopularRecentCandidates`, needs nothing trained.

Letters used in shape comments: B batch (users), N candidates, S slate size, I items,
C item features, H pathway length, G categories.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.catalog import Catalog
from envs.response import REFERENCE_DURATION_S
from envs.session_env import OneRecSession
from envs.spec import BLANK


class CandidateSource(Protocol):
    """What proposes the candidates: batched observation and a generator -> (B, N) int64."""

    def __call__(self, observation: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        ...


@dataclass(frozen=True)
class CandidateConfig:
    """How many candidates a request gets and how the default source proposes them."""

    num_candidates: int = 50  # N: five slates' worth, a real choice yet small for a policy head
    personal_share: float = 0.5  # share of N drawn from the user's engaged categories
    category_level: int = 2  # tree level of those categories: 0 top, 1 middle, 2 leaf
    popular_pool: int = 500  # the rest come from this many most popular items (the logging pool)

    def __post_init__(self) -> None:
        if self.num_candidates < 1:
            raise ValueError(
                f"CandidateConfig.num_candidates must be >= 1, got {self.num_candidates}"
            )
        if not 0.0 <= self.personal_share <= 1.0:
            raise ValueError(
                f"CandidateConfig.personal_share must be in [0, 1], got {self.personal_share}"
            )
        if self.category_level not in (0, 1, 2):
            raise ValueError(
                "CandidateConfig.category_level must be 0 (top), 1 (middle) or 2 (leaf), "
                f"got {self.category_level}"
            )
        if self.popular_pool < 1:
            raise ValueError(f"CandidateConfig.popular_pool must be >= 1, got {self.popular_pool}")


def item_feature_table(catalog: Catalog) -> np.ndarray:
    """Observable features of every item: content vector, log duration relative to 30 s and
    log popularity relative to uniform (I, C) float32. Never the hidden topics or quality."""
    log_duration = np.log(catalog.duration_s / REFERENCE_DURATION_S)
    log_popularity = np.log(catalog.popularity * catalog.num_items)
    columns = [catalog.content, log_duration[:, None], log_popularity[:, None]]
    return np.concatenate(columns, axis=1).astype(np.float32)  # (I, C)


def candidate_features(table: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Rows of `table` (I, C) for candidates (..., N), zeros for BLANK: (..., N, C)."""
    features = table[np.maximum(candidates, 0)]
    return np.where((candidates >= 0)[..., None], features, np.float32(0.0))


class PopularRecentCandidates:
    """Untrained retrieval: part from the user's engaged categories, part popular.

    `round(personal_share * N)` candidates come from the categories of the user's positive
    pathway (weighted by how often each was engaged), drawn in proportion to category count
    times popularity; the rest are drawn in proportion to popularity from the `popular_pool`
    most popular items (both by Gumbel-top-k, so without replacement). Items of the
    short-term or positive pathway are never proposed, nor is an item twice; a shortfall of
    category items is filled with popular ones, and BLANK pads what is still missing. Order:
    category candidates first, each part from its highest key down.
    """

    def __init__(self, catalog: Catalog, config: CandidateConfig) -> None:
        self.config = config
        self.num_items = catalog.num_items
        self.category = catalog.category[:, config.category_level]  # (I,)
        self.num_categories = int(self.category.max()) + 1
        self.log_popularity = np.log(catalog.popularity.astype(np.float64))  # (I,)
        pool = np.argsort(-catalog.popularity.astype(np.float64), kind="stable")
        self.in_pool = np.zeros(catalog.num_items, dtype=bool)  # (I,)
        self.in_pool[pool[:config.popular_pool]] = True
        self.personal = round(config.personal_share * config.num_candidates)

    def __call__(self, observation: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        positive = np.asarray(observation["positive_items"], dtype=np.int64)  # (B, H)
        seen = np.concatenate(
            [positive, np.asarray(observation["short_term_items"], dtype=np.int64)], axis=1
        )
        users = positive.shape[0]
        rows = np.arange(users)[:, None]
        counts = np.zeros((users, self.num_categories + 1))  # (B, G + 1), last: padding
        np.add.at(counts, (rows, np.where(positive >= 0, self.category[positive], -1)), 1.0)
        eligible = np.ones((users, self.num_items + 1), dtype=bool)  # (B, I + 1), last: padding
        eligible[rows, seen] = False  # BLANK (-1) lands in the padding column

        with np.errstate(divide="ignore"):
            log_counts = np.log(counts[:, :-1])[:, self.category]  # (B, I), -inf: not engaged
        personal_keys = self.log_popularity + log_counts + rng.gumbel(size=(users, self.num_items))
        personal = _top(np.where(eligible[:, :-1], personal_keys, -np.inf), self.personal)
        eligible[rows, personal] = False  # (B, P) chosen once only; BLANK hits the padding
        popular_keys = self.log_popularity + rng.gumbel(size=(users, self.num_items))
        popular = _top(np.where(eligible[:, :-1] & self.in_pool, popular_keys, -np.inf),
                       self.config.num_candidates)  # (B, N)

        merged = np.concatenate([personal, popular], axis=1)  # (B, P + N)
        order = np.argsort(merged < 0, axis=1, kind="stable")  # real items first, in order
        return np.take_along_axis(merged, order, axis=1)[:, :self.config.num_candidates]


def _top(keys: np.ndarray, count: int) -> np.ndarray:
    """Columns of the `count` largest finite keys per row (B, I), highest first, BLANK for
    -inf: (B, count) int64."""
    count = min(count, keys.shape[1])
    if count == 0:
        return np.empty((keys.shape[0], 0), dtype=np.int64)
    top = np.argpartition(-keys, count - 1, axis=1)[:, :count]  # (B, count), unordered
    values = np.take_along_axis(keys, top, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    top, values = np.take_along_axis(top, order, axis=1), np.take_along_axis(values, order, axis=1)
    return np.where(np.isneginf(values), BLANK, top).astype(np.int64)


class CandidateSlateEnv(gym.Wrapper):
    """## Description

    `OneRecSession` seen through a candidate stage: at each request a candidate source
    proposes N items; the agent scores them and the S highest-scored are served, best
    first. Everything else (user, rewards, `info`, episode end) is the wrapped env's.

    ## Action Space

    `Box(-1, 1, (N,), float32)`: one score per candidate. The S real candidates with the
    highest scores form the slate in score order; BLANK candidates are served only when
    fewer than S real ones exist, as blanks. Ties (scores an agent's Gaussian pushed past a
    bound are clipped to it) are broken uniformly at random from the env's generator: broken
    by candidate order instead, PPO learnt to push every score past the bound and so serve
    the source's own order, where no gradient reaches it any more. Why scores
    rather than `MultiDiscrete([N] * S)`: every slate of S distinct candidates is
    reachable and no choice is ever a duplicate to repair, the policy stays one head of N
    outputs instead of S heads that would all learn the same favourite, and each
    candidate's score is credited for that candidate alone. Any other shape, or a NaN, is
    a ValueError naming the action. `info["candidate_positions"]` (S,) says which
    candidates were served.

    ## Observation Space

    The wrapped env's `Dict` (envs/README.md) plus:

    | key                  | shape  | dtype   | content                                       |
    |----------------------|--------|---------|-----------------------------------------------|
    | `candidate_items`    | (N,)   | int64   | the proposed item ids, BLANK (-1) if none     |
    | `candidate_features` | (N, C) | float32 | `item_feature_table` rows, zeros for BLANK    |

    C = content dimensions + 2 (log duration / 30 s, log popularity x I): what the app can
    observe; hidden topics, quality and click-bait never appear.

    ## Rewards, Episode End

    Those of the wrapped env (true engagement by default; the user leaving terminates).
    Wrap in `TimeLimit` for a maximum number of requests.

    ## Arguments

    `CandidateSlateEnv(env, config=CandidateConfig(), source=None)`: `env` a
    `OneRecSession`, possibly wrapped; `source` a `CandidateSource` returning
    `config.num_candidates` ids per user (default `PopularRecentCandidates(catalog,
    config)`). S (the env's slate size) must not exceed N. The source's generator is spawned
    from the env's `np_random` at every reset, so `reset(seed=s)` fixes the candidates too.

    ## Version History

    * v0: initial version.
    """

    def __init__(
        self,
        env: gym.Env,
        config: CandidateConfig | None = None,
        source: CandidateSource | None = None,
    ) -> None:
        if not isinstance(env.unwrapped, OneRecSession):
            raise TypeError(
                f"CandidateSlateEnv wraps a OneRecSession, got {type(env.unwrapped).__name__}"
            )
        super().__init__(env)
        session: OneRecSession = env.unwrapped
        self.config = CandidateConfig() if config is None else config
        self.slate_size = session.config.slate_size
        count = self.config.num_candidates
        if self.slate_size > count:
            raise ValueError(
                f"slate_size {self.slate_size} exceeds num_candidates {count}: a slate "
                "chooses S of N candidates, so raise CandidateConfig.num_candidates or lower "
                "SessionConfig.slate_size"
            )
        self.num_items = session.catalog.num_items
        self.source = PopularRecentCandidates(session.catalog, self.config) if source is None \
            else source
        self.item_features = item_feature_table(session.catalog)  # (I, C)
        blank_row = np.zeros((1, self.item_features.shape[1]), dtype=np.float32)
        with_blank = np.concatenate([self.item_features, blank_row])  # (I + 1, C)
        low, high = with_blank.min(axis=0), with_blank.max(axis=0)  # (C,) each
        self.observation_space = spaces.Dict({
            **session.observation_space.spaces,
            "candidate_items": spaces.Box(BLANK, self.num_items - 1, shape=(count,),
                                          dtype=np.int64),
            "candidate_features": spaces.Box(np.broadcast_to(low, (count, low.size)),
                                             np.broadcast_to(high, (count, high.size)),
                                             dtype=np.float32),
        })
        self.action_space = spaces.Box(-1.0, 1.0, shape=(count,), dtype=np.float32)
        self._rng: np.random.Generator | None = None  # the source's, spawned at each reset
        self._candidates: np.ndarray | None = None  # (N,) proposed for the next request

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        observation, info = self.env.reset(seed=seed, options=options)
        self._rng = self.env.np_random.spawn(1)[0]
        return self._with_candidates(observation), info

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._candidates is None:
            raise gym.error.ResetNeeded("call reset() before step() on CandidateSlateEnv")
        positions = self.serve(action)  # (S,)
        slate = self._candidates[positions]  # (S,) BLANK where the candidate is BLANK
        observation, reward, terminated, truncated, info = self.env.step(slate)
        info["candidate_positions"] = positions
        return self._with_candidates(observation), reward, terminated, truncated, info

    def serve(self, action: np.ndarray) -> np.ndarray:
        """Positions (S,) of the candidates an action (N,) of scores serves, best first."""
        scores = np.asarray(action)
        count = self.config.num_candidates
        if scores.shape != (count,) or not np.issubdtype(scores.dtype, np.number):
            raise ValueError(
                f"action {scores!r} must be {count} numeric scores, one per candidate "
                f"(shape ({count},)), got shape {scores.shape} and dtype {scores.dtype}"
            )
        if np.isnan(scores).any():
            raise ValueError(f"action {scores!r} holds NaN scores; score every candidate")
        return rank_candidates(scores[None], self._candidates[None], self.slate_size,
                               self._rng)[0]

    def _with_candidates(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batched = {key: value[None] for key, value in observation.items()}
        candidates = validate_candidates(self.source(batched, self._rng), 1,
                                         self.config.num_candidates, self.num_items)
        self._candidates = candidates[0]
        return {**observation, "candidate_items": self._candidates,
                "candidate_features": candidate_features(self.item_features, self._candidates)}


def rank_candidates(
    scores: np.ndarray,
    candidates: np.ndarray,
    count: int,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Positions (B, count) of the highest `scores` (B, N), real candidates (B, N) before
    BLANK ones; ties broken uniformly at random by `rng`, or to the earlier position."""
    keys = np.where(candidates >= 0, -np.asarray(scores, dtype=np.float64), np.inf)  # (B, N)
    if rng is None:
        return np.argsort(keys, axis=1, kind="stable")[:, :count].astype(np.int64)
    tie_breaks = rng.random(keys.shape)  # (B, N)
    order = np.lexsort((tie_breaks, keys), axis=1)  # by key, then by tie-break
    return order[:, :count].astype(np.int64)


def validate_candidates(
    candidates: object, batch: int, num_candidates: int, num_items: int
) -> np.ndarray:
    """A source's output as int64 (B, N), or a ValueError that names what is wrong."""
    array = np.asarray(candidates)
    if array.shape != (batch, num_candidates) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"the candidate source returned shape {array.shape} and dtype {array.dtype}; "
            f"expected ({batch}, {num_candidates}) integer item ids (B users x "
            "CandidateConfig.num_candidates), BLANK (-1) for none"
        )
    if ((array < BLANK) | (array >= num_items)).any():
        raise ValueError(
            f"the candidate source returned ids outside [{BLANK}, {num_items - 1}]: "
            f"{array[(array < BLANK) | (array >= num_items)][:5].tolist()}"
        )
    return array.astype(np.int64)
