"""Many days of the same users: sessions, the gaps between them, and who stops coming back.

`DaysSimulator` drives a `SessionSimulator` of N users across an episode of `days` days.
Each step is one request of the user's current session, answered exactly as in the session
env. A session ends when the user leaves (patience) or after `session_requests` requests;
the return model (`envs.retention`) then draws when the user comes back, from how the
session went, or that they never do (churn). A returning user keeps their pathways (short-term
and positive histories carry across sessions), profile and interests (after a slow drift),
starts with fresh patience and with fatigue carried over from the topics of earlier sessions;
the clock advances by the session's watch time and the gap. The episode ends when the user
churns (terminated) or the next session would start after the horizon (truncated).

The long-term truth of each user is kept here, beside the per-request oracle: watch time over
the horizon, sessions, active days (as a bit mask of the days with a session start), returns.

Letters used in shape comments: N users, R rows (a subset), S slate size, K topics, C
creator buckets, T topic dimensions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from envs.catalog import Catalog
from envs.retention import (
    HOURS_PER_DAY,
    ReturnConfig,
    SessionRecord,
    decay,
    draw_return,
    drift_interest_across_days,
    staleness,
    topic_shares,
    variety,
)
from envs.simulator import SessionConfig, SessionSimulator, StepResult
from envs.spec import STATIC_FIELDS
from envs.streams import PURPOSE_RETURN, episode_keys, purpose_keys, uniforms, words_for
from envs.users import box_muller, initial_patience

SECONDS_PER_DAY = HOURS_PER_DAY * 3600.0
MAX_DAYS = 62  # active days are bits of an int64 mask
ACTIVITY = STATIC_FIELDS.index("activity_level")


@dataclass(frozen=True)
class DaysConfig:
    """Shape of a days episode; the return model."""

    days: float = 7.0  # horizon: sessions starting later are not simulated
    session_requests: int = 20  # a session is cut after this many requests (the evaluation's)
    returns: ReturnConfig = field(default_factory=ReturnConfig)  # envs.retention

    def __post_init__(self) -> None:
        if not (math.isfinite(self.days) and 0 < self.days <= MAX_DAYS):
            raise ValueError(f"DaysConfig.days must be in (0, {MAX_DAYS}], got {self.days}")
        if self.session_requests < 1:
            raise ValueError(f"DaysConfig.session_requests must be >= 1, got "
                             f"{self.session_requests}")


class DaysStep(NamedTuple):
    """What one request produced for every user, and what followed its session's end."""

    session: StepResult  # the request, as the session env answers it
    session_end: np.ndarray  # (N,) bool: this request ended the user's session
    gap_days: np.ndarray  # (N,) float64: days until the next session (inf: churned; 0: no end)
    churned: np.ndarray  # (N,) bool: the user will never come back
    horizon_end: np.ndarray  # (N,) bool: the next session would start after the horizon
    new_session: np.ndarray  # (N,) bool: the user is back; the next request opens a session


class DaysSimulator:
    """N users over many days (module docstring)."""

    def __init__(self, catalog: Catalog, session_config: SessionConfig, config: DaysConfig,
                 num_users: int) -> None:
        self.catalog, self.config = catalog, config
        self.sessions = SessionSimulator(catalog, session_config, num_users)
        self.num_users = num_users
        topics = self.sessions.items.num_fatigue_topics
        buckets = config.returns.creator_buckets
        self.creator_bucket = catalog.creator.astype(np.int64) % buckets  # (I,)
        self.clock = np.zeros(num_users)  # (N,) days since the episode began
        self.session_index = np.zeros(num_users, dtype=np.int64)  # (N,) sessions begun - 1
        self.session_request = np.zeros(num_users, dtype=np.int64)  # (N,) in this session
        self.topic_counts = np.zeros((num_users, topics))  # (N, K) this session's impressions
        self.creator_counts = np.zeros((num_users, buckets))  # (N, C)
        self.topic_exposure = np.zeros((num_users, topics))  # (N, K) earlier sessions' shares
        self.creator_exposure = np.zeros((num_users, buckets))  # (N, C)
        self.session_totals = np.zeros((num_users, 4))  # (N, 4) watch s, impressions, likes, hates
        self.return_stream = np.zeros(num_users, dtype=np.uint64)  # (N,)
        # the long-term truth of the episode
        self.watch_s = np.zeros(num_users)  # (N,) seconds watched over the horizon
        self.sessions_begun = np.zeros(num_users, dtype=np.int64)  # (N,)
        self.returns = np.zeros(num_users, dtype=np.int64)  # (N,) sessions after the first
        self.active_days = np.zeros(num_users, dtype=np.int64)  # (N,) bit d: a session on day d

    def reset(self, rows: np.ndarray, roots: np.ndarray | None = None) -> None:
        """New users `rows` (R,) at day 0 (`SessionSimulator.reset`'s seeding)."""
        rows = np.asarray(rows, dtype=np.int64)
        self.sessions.reset(rows, roots)
        keys = episode_keys(self.sessions.roots[rows], self.sessions.episodes[rows])
        self.return_stream[rows] = purpose_keys(keys, PURPOSE_RETURN)
        for array in (self.clock, self.session_index, self.session_request, self.topic_counts,
                      self.creator_counts, self.topic_exposure, self.creator_exposure,
                      self.session_totals, self.watch_s, self.returns):
            array[rows] = 0
        self.sessions_begun[rows] = 1
        self.active_days[rows] = 1  # day 0

    def step(self, slate: np.ndarray) -> DaysStep:
        """Every user answers its slate (N, S) of valid ids; sessions that end are followed
        by the return model (users who come back are ready for their next session)."""
        result = self.sessions.step(slate)
        self._count(slate, result)
        self.session_request += 1
        end = result.outcome["left"] | (self.session_request >= self.config.session_requests)
        gap = np.zeros(self.num_users)
        churned = np.zeros(self.num_users, dtype=bool)
        horizon = np.zeros(self.num_users, dtype=bool)
        rows = np.flatnonzero(end)
        if rows.size:
            gap[rows], churned[rows], horizon[rows] = self._end_sessions(rows)
        back = end & ~churned & ~horizon
        self._begin_sessions(np.flatnonzero(back), gap[back])
        return DaysStep(result, end, gap, churned, horizon, back)

    def _count(self, slate: np.ndarray, result: StepResult) -> None:
        shown = result.shown
        safe = np.where(shown, slate, 0)
        users = np.arange(self.num_users)[:, None]
        np.add.at(self.topic_counts, (users, self.sessions.items.fatigue_topic[safe]),
                  shown.astype(np.float64))
        np.add.at(self.creator_counts, (users, self.creator_bucket[safe]),
                  shown.astype(np.float64))
        watch = result.outcome["true_watch_time"]
        self.session_totals += np.stack([watch, shown.sum(1), result.outcome["true_like"],
                                         result.outcome["true_hate"]], axis=1)
        self.watch_s += watch

    def _end_sessions(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gap (R,), churned (R,), past the horizon (R,) of the sessions of `rows`; the
        cross-session exposure takes in these sessions' topic and creator mix."""
        returns = self.config.returns
        totals, topics, creators = (self.session_totals[rows], self.topic_counts[rows],
                                    self.creator_counts[rows])
        stale = 0.5 * (staleness(topics, self.topic_exposure[rows])
                       + staleness(creators, self.creator_exposure[rows]))
        record = SessionRecord(activity=self.sessions.state.static[rows, ACTIVITY],
                               watch_s=totals[:, 0],
                               impressions=totals[:, 1].astype(np.int64), likes=totals[:, 2],
                               hates=totals[:, 3], variety=variety(topics), staleness=stale)
        draws = uniforms(self.return_stream[rows], self._draw_offset(rows), 2)
        gap = draw_return(returns, record, draws)  # (R,) days, inf: churned
        elapsed = totals[:, 0] / SECONDS_PER_DAY + gap  # the session's own time, then the gap
        self.topic_exposure[rows] = decay(self.topic_exposure[rows], elapsed,
                                          returns.exposure_half_life_days) + topic_shares(topics)
        self.creator_exposure[rows] = decay(self.creator_exposure[rows], elapsed,
                                            returns.exposure_half_life_days) + topic_shares(
                                                creators)
        self.clock[rows] += np.where(np.isfinite(elapsed), elapsed, 0.0)
        churned = ~np.isfinite(gap)
        return gap, churned, ~churned & (self.clock[rows] >= self.config.days)

    def _begin_sessions(self, rows: np.ndarray, gap_days: np.ndarray) -> None:
        """The next session of users `rows` (R,) back after gap_days (R,)."""
        if not rows.size:
            return
        returns, state = self.config.returns, self.sessions.state
        dims = state.interest.shape[1]
        normals = box_muller(uniforms(self.return_stream[rows], self._draw_offset(rows) + 1,
                                      dims + dims % 2))[:, :dims]  # (R, T)
        state.interest[rows] = drift_interest_across_days(returns, state.interest[rows],
                                                          gap_days, normals)
        state.fatigue[rows] = (decay(state.fatigue[rows], gap_days,
                                     returns.fatigue_half_life_days)
                               + returns.carried_fatigue * self.topic_exposure[rows])
        state.patience[rows] = initial_patience(self.sessions.config.response,
                                                state.static[rows])
        for array in (self.topic_counts, self.creator_counts, self.session_totals,
                      self.session_request):
            array[rows] = 0
        self.session_index[rows] += 1
        self.sessions_begun[rows] += 1
        self.returns[rows] += 1
        day = np.floor(self.clock[rows]).astype(np.int64)
        self.active_days[rows] |= np.left_shift(np.int64(1), day)

    def _draw_offset(self, rows: np.ndarray) -> np.ndarray:
        """Where the draws after session k of users `rows` begin in their return streams
        (in 64-bit words): one word for the churn and delay draws, then T normals' uniforms."""
        dims = self.sessions.items.topics.shape[1]
        return self.session_index[rows] * (1 + words_for(dims + dims % 2))

    def observation(self, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The pathways of users `rows` (default all), as the session env observes them."""
        return self.sessions.observation(rows)

    def long_term(self, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The long-term truth of users `rows` (R,) so far: watch time (s), sessions, returns,
        active days, whether day 1 had a session (next-day retention), all (R,)."""
        rows = np.arange(self.num_users) if rows is None else np.asarray(rows)
        mask = self.active_days[rows]
        counts = np.bitwise_count(mask).astype(np.int64)
        return {"watch_s": self.watch_s[rows].copy(), "sessions": self.sessions_begun[rows].copy(),
                "returns": self.returns[rows].copy(), "active_days": counts,
                "next_day": (mask >> 1) & 1 == 1, "day": self.clock[rows].copy()}

    def close(self) -> None:
        self.sessions.close()

