"""The batched world behind both environments: N independent users answering slates.

`SessionSimulator` owns the user state arrays, the pathways and the random streams; every
operation is vectorised over users. `OneRecSession` is this simulator with N = 1 and
`OneRecVectorEnv` is it with N users, so both follow exactly the same dynamics: user i of a
vector env seeded with `seed` is, draw for draw, a single env reset with `seed + i`.

Seeding: a seed becomes a root key (envs.streams.seed_roots); episode e of a root has its
own key, from which the profile, the warm history and every request's draws are taken. An
unseeded first reset takes its root from the env's `np_random`.

Letters used in shape comments: N users, S slate size, F feedback fields, R rows (a subset
of users), T topic dimensions.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple, Protocol

import numpy as np
from gymnasium import spaces

from envs.catalog import Catalog, CatalogConfig, generate_synthetic_catalog
from envs.lifelong import quantize_content
from envs.pathways import Pathways
from envs.response import (
    NUM_DRAWS,
    WATCH_RATIO_CAP,
    ItemTable,
    ResponseConfig,
    click_logit,
    decay_fatigue,
    drift_interest,
    expected_feedback,
    oracle_outcome,
    respond,
    slate_fatigue,
    true_engagement,
    update_patience,
)
from envs.spec import (
    BLANK,
    FEEDBACK_FIELDS,
    LIFELONG_HISTORY,
    LIFELONG_LENGTH,
    NUM_FEEDBACK,
    POSITIVE_LENGTH,
    SHORT_TERM_LENGTH,
    STATIC_CARDINALITIES,
)
from envs.streams import (
    PURPOSE_STEP,
    episode_keys,
    purpose_keys,
    uniforms,
    words_for,
)
from envs.users import Population, PopulationConfig, Profiles, UserState, initial_patience


@dataclass(frozen=True)
class SessionConfig:
    """Shape of a session and the user model. The episode length is not here: it belongs to
    `max_episode_steps` (TimeLimit for the single env, an argument of the vector env)."""

    slate_size: int = 10  # items per request; Kuaishou serves slates of about this size
    short_term_length: int = SHORT_TERM_LENGTH  # the report's 20 latest impressions
    positive_length: int = POSITIVE_LENGTH  # the report's 256 latest engaged items
    lifelong_history: int = LIFELONG_HISTORY  # past impressions the lifelong pathway covers
    lifelong_length: int = LIFELONG_LENGTH  # entries after compression (the report's 128)
    kmeans_iterations: int = 2  # Lloyd steps per level: within-cluster spread 1.4% above 3 steps
    reset_chunk: int = 64  # users drawn at once per thread: ~0.43 MB a user in flight
    reset_threads: int = 2  # draw new users beside the request: 2 cores (numba frees the GIL)
    response: ResponseConfig = field(default_factory=ResponseConfig)  # behaviours and leaving
    population: PopulationConfig = field(default_factory=PopulationConfig)  # who the users are

    def __post_init__(self) -> None:
        for name in ("slate_size", "short_term_length", "positive_length", "lifelong_history",
                     "lifelong_length", "reset_chunk", "reset_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"SessionConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.kmeans_iterations < 0:
            raise ValueError(
                f"SessionConfig.kmeans_iterations must be >= 0, got {self.kmeans_iterations}"
            )
        if self.lifelong_length > self.lifelong_history:
            raise ValueError(
                f"SessionConfig.lifelong_length ({self.lifelong_length}) exceeds "
                f"lifelong_history ({self.lifelong_history}); compression needs at least as "
                "many past items as entries: raise lifelong_history or lower lifelong_length"
            )


class SlateRewardFn(Protocol):
    """What the env calls for a reward: batched context, slate and true feedback -> (N,).

    observation: the observation the slate answered (each array with a leading N);
    slate (N, S) int64 item ids (-1 = blank); feedback (N, S, F) float32 in
    FEEDBACK_FIELDS order. rewards/ implements this without envs importing it.
    """

    def __call__(
        self, observation: dict[str, np.ndarray], slate: np.ndarray, feedback: np.ndarray
    ) -> np.ndarray: ...


def true_engagement_reward(
    observation: dict[str, np.ndarray], slate: np.ndarray, feedback: np.ndarray
) -> np.ndarray:
    """The default reward: the slate's true engagement (envs.response.true_engagement):
    watch minutes + 0.5 like + 1 follow + 0.5 comment + 0.5 forward - 1 hate."""
    return true_engagement(feedback)


def observation_space(catalog: Catalog, config: SessionConfig) -> spaces.Dict:
    """The single-user observation space (a vector env batches it)."""
    feedback_high = np.ones(NUM_FEEDBACK, dtype=np.float32)
    feedback_high[FEEDBACK_FIELDS.index("watch_time")] = WATCH_RATIO_CAP * float(
        catalog.duration_s.max()
    )
    feedback_high[FEEDBACK_FIELDS.index("watch_ratio")] = WATCH_RATIO_CAP
    lifelong_high = np.append(feedback_high, np.float32(config.lifelong_history))

    def item_ids(length: int) -> spaces.Box:
        return spaces.Box(BLANK, catalog.num_items - 1, shape=(length,), dtype=np.int64)

    def values(length: int, high: np.ndarray) -> spaces.Box:
        return spaces.Box(0.0, np.broadcast_to(high, (length, high.size)), dtype=np.float32)

    return spaces.Dict({
        "static": spaces.Box(0, np.asarray(STATIC_CARDINALITIES) - 1, dtype=np.int64),
        "short_term_items": item_ids(config.short_term_length),
        "short_term_feedback": values(config.short_term_length, feedback_high),
        "positive_items": item_ids(config.positive_length),
        "positive_feedback": values(config.positive_length, feedback_high),
        "lifelong_items": item_ids(config.lifelong_length),
        "lifelong_features": values(config.lifelong_length, lifelong_high),
    })


def action_space(catalog: Catalog, config: SessionConfig) -> spaces.MultiDiscrete:
    """A slate of `slate_size` item ids in [-1, num_items), -1 = blank."""
    return spaces.MultiDiscrete(
        np.full(config.slate_size, catalog.num_items + 1), dtype=np.int64,
        start=np.full(config.slate_size, BLANK),
    )


class SessionStart(NamedTuple):
    """Everything drawn for new users before it is written into the state arrays."""

    keys: np.ndarray  # (R,) uint64 episode keys
    profiles: Profiles
    history_items: np.ndarray  # (R, H) int64 warm history, oldest first
    history_feedback: np.ndarray  # (R, H, F) float32
    lifelong_items: np.ndarray  # (R, K) int64
    lifelong_features: np.ndarray  # (R, K, F + 1) float32


class PendingReset(NamedTuple):
    """New users being drawn (`SessionSimulator.begin_reset`): who they are, the pieces they
    are drawn in, in order, and the draws of those pieces handed to the reset threads."""

    rows: np.ndarray  # (R,) int64 users restarting
    roots: np.ndarray  # (R,) uint64 their root keys
    episodes: np.ndarray  # (R,) int64 the episode of its root each starts
    pieces: list[tuple[np.ndarray, np.ndarray]]  # rows (R_i,) and episode keys (R_i,) each
    drawing: list[Future[SessionStart] | None]  # each piece's draw; None: not handed over
    pid: int  # the process that began it: only its threads draw its pieces


class StepResult(NamedTuple):
    """What one request produced for every user."""

    feedback: np.ndarray  # (N, S, F) float32, zeros where not shown
    shown: np.ndarray  # (N, S) bool: the slot held a new, valid item
    duplicates: np.ndarray  # (N,) int64 slots dropped as repeats of an earlier slot
    outcome: dict[str, np.ndarray]  # oracle fields (envs.response.ORACLE_FIELDS), each (N,)


def validate_slate(
    action: object, num_items: int, slate_size: int, batch: int | None
) -> np.ndarray:
    """Check an action and return it as int64 (batch, S) (or (1, S) for a single env).

    Raises ValueError naming the action for a wrong shape, a non-integer dtype or an id
    outside [-1, num_items). Duplicates are not an error: later copies are not shown.
    """
    array = np.asarray(action)
    expected = (slate_size,) if batch is None else (batch, slate_size)
    if array.shape != expected:
        raise ValueError(
            f"action {_describe(array)} has shape {array.shape}, expected {expected}: a slate "
            f"of {slate_size} item ids per user, {BLANK} for an empty slot"
        )
    if not (np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_):
        raise ValueError(
            f"action {_describe(array)} has dtype {array.dtype}; item ids must be integers "
            "(cast with .astype(np.int64))"
        )
    out_of_range = (array < BLANK) | (array >= num_items)
    if out_of_range.any():
        bad = array[out_of_range]
        raise ValueError(
            f"action {_describe(array)} holds item ids {bad[:5].tolist()} outside "
            f"[{BLANK}, {num_items - 1}]: use ids of the catalog, or {BLANK} for a blank"
        )
    return array.astype(np.int64).reshape(-1, slate_size)


def _describe(array: np.ndarray) -> str:
    text = np.array2string(array, threshold=20, edgeitems=3, separator=",")
    return " ".join(text.split())  # one line: errors are one line


def first_occurrences(slate: np.ndarray) -> np.ndarray:
    """(N, S) bool: the slot holds an item that no earlier slot of its slate holds."""
    slots = slate.shape[1]
    earlier = np.tri(slots, slots, -1, dtype=bool)
    repeated = ((slate[:, :, None] == slate[:, None, :]) & earlier).any(axis=2)
    return ~repeated


@lru_cache(maxsize=8)
def _world_tables(
    catalog: Catalog, population: PopulationConfig, lifelong_history: int
) -> tuple[ItemTable, np.ndarray, Population]:
    """Per-catalog lookups, shared by every simulator of the same catalog (e.g. the 1024
    single envs of a SyncVectorEnv): items, quantised content (I, C), the population."""
    items = ItemTable.from_catalog(catalog)
    return (items, quantize_content(catalog.content, lifelong_history),
            Population(catalog, items, population))


class SessionSimulator:
    """N users in sessions: reset some, answer slates for all, observe any.

    New users are drawn in pieces of at most `reset_chunk` users, at most `reset_threads`
    pieces at a time in threads of their own (`begin_reset`), and written into the state in
    order (`finish_reset`), which draws itself the pieces no thread has started yet: a
    user is the same bits whatever its piece or thread. A user's draws depend only on its
    episode key, so they may start as soon as the user is known.
    """

    def __init__(self, catalog: Catalog, config: SessionConfig, num_users: int) -> None:
        if num_users < 1:
            raise ValueError(f"num_users must be >= 1, got {num_users}")
        self.catalog = catalog
        self.config = config
        self.num_users = num_users
        self.items, self.content, self.population = _world_tables(
            catalog, config.population, config.lifelong_history
        )
        self.roots = np.zeros(num_users, dtype=np.uint64)  # (N,) one root key per seeding
        self.episodes = np.zeros(num_users, dtype=np.int64)  # (N,) episodes since seeding
        dims = self.items.topics.shape[1]
        self.state = UserState(
            static=np.zeros((num_users, 5), dtype=np.int64),
            interest=np.zeros((num_users, dims)),
            fatigue=np.zeros((num_users, self.items.num_fatigue_topics)),
            patience=np.zeros(num_users),
            step_stream=np.zeros(num_users, dtype=np.uint64),
            request=np.zeros(num_users, dtype=np.int64),
        )
        self.pathways = Pathways(num_users, config.short_term_length, config.positive_length,
                                 config.lifelong_length, config.lifelong_history)
        self._pool: ThreadPoolExecutor | None = None  # reset threads, started on first use
        self._pool_pid = os.getpid()  # the process whose threads those are

    def reset(self, rows: np.ndarray, roots: np.ndarray | None = None) -> None:
        """Start new sessions for users `rows` (R,): with new roots (R,) uint64 the first
        episode of those roots, otherwise each user's next episode."""
        self.finish_reset(self.begin_reset(rows, roots))

    def begin_reset(self, rows: np.ndarray, roots: np.ndarray | None = None) -> PendingReset:
        """`reset`, split in two: start drawing the new users (in the reset threads, when
        there are several), to be written into the state by `finish_reset` or dropped by
        `cancel_reset`. Steps and observations may run in between (the vector env draws a
        request's restarts while it answers the request before): the draws read nothing of
        the state, and nothing of it changes before `finish_reset`."""
        rows = np.asarray(rows, dtype=np.int64)
        if roots is None:
            roots, episodes = self.roots[rows], self.episodes[rows] + 1
        else:
            roots, episodes = np.asarray(roots, dtype=np.uint64), np.zeros(rows.size, np.int64)
        keys = episode_keys(roots, episodes)  # (R,)
        # a user's start does not depend on its piece: pieces of at most reset_chunk users,
        # at least one per thread
        count = min(rows.size, max(-(-rows.size // self.config.reset_chunk),
                                   self.config.reset_threads))
        pieces = (list(zip(np.array_split(rows, count), np.array_split(keys, count),
                           strict=True)) if count else [])
        pending = PendingReset(rows, roots, episodes, pieces, [None] * count, os.getpid())
        self._hand_over(pending, written=0)
        return pending

    def finish_reset(self, pending: PendingReset) -> None:
        """Write the users of a `begin_reset` into the state, in order, drawing here the
        pieces no thread has started."""
        self.roots[pending.rows] = pending.roots
        self.episodes[pending.rows] = pending.episodes
        if pending.pid != os.getpid():  # forked since: the draws in flight stayed behind
            pending.drawing[:] = [None] * len(pending.drawing)
        for index, (rows, _) in enumerate(pending.pieces):
            start = self._drawn(pending, index)
            pending.drawing[index] = None  # written: its memory can go
            self._hand_over(pending, written=index + 1)
            self._begin(rows, start)

    def cancel_reset(self, pending: PendingReset) -> None:
        """Drop a `begin_reset` that will not be finished: its users keep their sessions and
        episodes. Returns once none of its draws runs any more."""
        handed_over = [draw for draw in pending.drawing if draw is not None]
        if pending.pid == os.getpid():
            for draw in handed_over:
                draw.cancel()
            wait(handed_over)
        pending.drawing[:] = [None] * len(pending.drawing)

    def _hand_over(self, pending: PendingReset, written: int) -> None:
        """Give the reset threads the next pieces after the first `written`: at most one
        piece per thread drawn and not yet written, which bounds the memory. A single piece
        is drawn where it is written: no thread is needed (a single env)."""
        threads = self.config.reset_threads
        if threads < 2 or len(pending.pieces) < 2 or pending.pid != os.getpid():
            return
        for index in range(written, min(written + threads, len(pending.pieces))):
            if pending.drawing[index] is None:
                pending.drawing[index] = self._reset_pool().submit(self._draw_sessions,
                                                                   pending.pieces[index][1])

    def _drawn(self, pending: PendingReset, index: int) -> SessionStart:
        """The new users of piece `index`: drawn here if no thread has started it; while a
        thread draws it, this thread draws the next pieces no thread has started yet."""
        draw = pending.drawing[index]
        if draw is None or draw.cancel():
            return self._draw_sessions(pending.pieces[index][1])
        while not draw.done():
            later = next((later for later in range(index + 1, len(pending.pieces))
                          if pending.drawing[later] is not None
                          and pending.drawing[later].cancel()), None)
            if later is None:
                break
            pending.drawing[later] = Future()
            pending.drawing[later].set_result(self._draw_sessions(pending.pieces[later][1]))
        return draw.result()

    def close(self) -> None:
        """Stop the reset threads, if any were started."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _reset_pool(self) -> ThreadPoolExecutor:
        """The reset threads of this process (a forked process inherits the pool without
        its threads: it needs its own)."""
        if self._pool is None or self._pool_pid != os.getpid():
            self._pool = ThreadPoolExecutor(self.config.reset_threads,
                                            thread_name_prefix="reset")
            self._pool_pid = os.getpid()
        return self._pool

    def _draw_sessions(self, keys: np.ndarray) -> SessionStart:
        """New users of episode keys (R,): profile, warm history and lifelong summary (reads
        no state, writes nothing)."""
        config = self.config
        profiles = self.population.draw_profiles(keys)
        history_items, history_feedback = self.population.warm_history(
            keys, profiles, config.response, config.slate_size
        )
        lifelong_items, lifelong_features = self.pathways.summarise(
            history_items, history_feedback, self.content, config.kmeans_iterations
        )
        return SessionStart(keys, profiles, history_items, history_feedback, lifelong_items,
                            lifelong_features)

    def _begin(self, rows: np.ndarray, start: SessionStart) -> None:
        state, profiles = self.state, start.profiles
        state.static[rows] = profiles.static
        state.interest[rows] = profiles.interest
        state.fatigue[rows] = 0.0
        state.patience[rows] = initial_patience(self.config.response, profiles.static)
        state.step_stream[rows] = purpose_keys(start.keys, PURPOSE_STEP)
        state.request[rows] = 0
        self.pathways.start(rows, profiles.static, start.history_items, start.history_feedback,
                            start.lifelong_items, start.lifelong_features)

    def step(self, slate: np.ndarray) -> StepResult:
        """Every user answers its slate (N, S) of valid ids (see `validate_slate`)."""
        config, state, items = self.config, self.state, self.items
        shown = (slate != BLANK) & first_occurrences(slate)
        safe = np.where(shown, slate, 0)
        topics = items.fatigue_topic[safe]  # (N, S)
        fatigue = slate_fatigue(state.fatigue, topics, shown)
        per_step = words_for(config.slate_size * NUM_DRAWS)
        draws = uniforms(state.step_stream, state.request * per_step,
                         config.slate_size * NUM_DRAWS)
        draws = draws.reshape(self.num_users, config.slate_size, NUM_DRAWS)  # (N, S, D)
        feedback = respond(config.response, items, state.interest, state.activity, slate,
                           shown, fatigue, draws)  # (N, S, F)

        state.fatigue = decay_fatigue(config.response, state.fatigue, topics, shown)
        state.interest = drift_interest(config.response, items, state.interest, safe, feedback)
        state.patience, left = update_patience(config.response, state.patience, feedback)
        state.request += 1
        self.pathways.record(safe, feedback, shown)
        duplicates = ((slate != BLANK) & ~shown).sum(axis=1)
        return StepResult(feedback, shown, duplicates, oracle_outcome(feedback, left))

    def observation(self, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The current observation of users `rows` (default all): arrays with a leading R."""
        return self.pathways.observation(rows)

    def click_probability(self, slate: np.ndarray) -> np.ndarray:
        """Expected click probability of each slot of `slate` (N, S) now, without drawing:
        (N, S) float64, 0 where not shown. For tests and diagnostics of the user model."""
        shown = (slate != BLANK) & first_occurrences(slate)
        safe = np.where(shown, slate, 0)
        items = self.items
        fatigue = slate_fatigue(self.state.fatigue, items.fatigue_topic[safe], shown)
        affinity = np.einsum("nst,nt->ns", items.topics[safe], self.state.interest)
        logit = click_logit(self.config.response, affinity, items.clickbait[safe],
                            self.state.activity[:, None], fatigue, np.arange(slate.shape[1]))
        return np.where(shown, 1.0 / (1.0 + np.exp(-logit)), 0.0)

    def expected_feedback(self, rows: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """The oracle's expected feedback of each candidate for users `rows` (R,) now, each
        shown alone in the first slot, without drawing or changing any state:
        candidates (R, G) item ids (BLANK gives zeros) -> (R, G, F) float64
        (`envs.response.expected_feedback`)."""
        rows = np.asarray(rows, dtype=np.int64)
        safe = np.maximum(candidates, 0)
        fatigue = np.take_along_axis(self.state.fatigue[rows], self.items.fatigue_topic[safe], 1)
        return expected_feedback(self.config.response, self.items, self.state.interest[rows],
                                 self.state.activity[rows], candidates, fatigue)

    def observed_feedback(self, rows: np.ndarray, candidates: np.ndarray,
                          draws: np.ndarray) -> np.ndarray:
        """One drawn reaction of users `rows` (R,) to each candidate, each shown alone in the
        first slot, as production would log an exposure (not the expectation), without
        changing any state: candidates (R, G) item ids (BLANK gives zeros), draws (R, G, D)
        uniforms in (0, 1), D = `envs.response.NUM_DRAWS` -> (R, G, F) float32."""
        rows = np.asarray(rows, dtype=np.int64)
        if draws.shape != (*candidates.shape, NUM_DRAWS):
            raise ValueError(f"draws must be {(*candidates.shape, NUM_DRAWS)}, got {draws.shape}")
        shown = candidates != BLANK
        safe = np.maximum(candidates, 0)
        fatigue = np.take_along_axis(self.state.fatigue[rows], self.items.fatigue_topic[safe], 1)
        return respond(self.config.response, self.items, self.state.interest[rows],
                       self.state.activity[rows], safe, shown, np.where(shown, fatigue, 0.0),
                       draws, positions=np.zeros(candidates.shape[1], dtype=np.int64))


DEFAULT_NUM_ITEMS = 5_000  # the envs' default synthetic world: big enough to personalise, CPU-fast


def default_catalog(num_items: int = DEFAULT_NUM_ITEMS, seed: int = 0) -> Catalog:
    """The synthetic catalog an env builds when it is given none."""
    return generate_synthetic_catalog(CatalogConfig(num_items=num_items), seed)
