"""Users who come back: what happens between two sessions of one user.

A session ends when the user's patience runs out (envs/response.py) or at the session's
request cap. The user then returns after a delay, or not at all, depending on how the session
went, and the next session starts from where the last one left the user:

    log rate  = log base_rate[activity]                     returns per day
              + watch_effect * (log1p(watch min) - log1p(reference min))
              + mood_effect * (likes - hate_weight * hates) / impressions
              + variety_effect * (variety - 1/2)             distinct topics / shown, capped
              - staleness_effect * staleness                 this session's topic mix against
                                                             the user's earlier sessions'
    delay     ~ Exponential(rate) days, at least `min_gap_hours`
    churn     the user leaves the app for good with probability sigmoid(churn_bias
              + churn_mood * mood): the delay is then infinite

Between sessions, for a gap of g days: the request-level fatigue of the last session decays
with `fatigue_half_life_days`; the cross-session exposure to each topic (the middle category,
the unit of boredom) and to each creator (hashed into `creator_buckets`) decays with
`exposure_half_life_days` and then adds the session's shares; the next session starts with
fatigue `carried_fatigue` x that topic exposure (a user served one topic all week is tired of
it on Monday morning); interest takes a random walk of `drift_per_day` x sqrt(g) (tastes
move slowly) and is renormalised.

Calibrated in direction, not fitted (../shared/data is selection-biased for this):
- base rates: KuaiRand's explicit-feedback users were active on 11.8 (full_active), 10.1
  (high_active) and 7.2 (middle_active) of its 14 days; a daily-active share p is the rate
  -ln(1 - p) of a Poisson return process: 1.86, 1.27, 0.73 returns per day; low_active (4
  users there) is assumed at p = 0.3 (0.36 per day);
- consecutive active days are 1 day apart 88% of the time in that subset and 2 days 8.6%:
  the full_active rate gives 84% next-day returns, the same shape;
- users with a larger like share (likes against hates) were active on more days (Spearman
  0.21): mood_effect > 0; its size, watch_effect, variety_effect, staleness_effect and the
  churn terms are assumptions, stated here and in envs/README.md.

Letters used in shape comments: R users (rows), K topics, C creator buckets, T topic dims.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from envs.catalog import ACTIVITY_LEVELS

HOURS_PER_DAY = 24.0


@dataclass(frozen=True)
class ReturnConfig:
    """How users come back (module docstring): rates per day, effects on the log rate."""

    base_rate: tuple[float, ...] = (0.36, 0.73, 1.27, 1.86)  # per ACTIVITY_LEVELS, per day
    reference_watch_minutes: float = 20.0  # a session of this much keeps the base rate
    watch_effect: float = 0.4  # log rate per unit of log1p(watch minutes)
    mood_effect: float = 6.0  # log rate per (likes - hate_weight x hates) per impression
    hate_weight: float = 3.0  # a hate weighs as three likes in the mood
    variety_effect: float = 0.6  # log rate per unit of variety (distinct topics / shown)
    staleness_effect: float = 1.0  # log rate lost at a session all of earlier sessions' mix
    churn_bias: float = -5.0  # logit of never coming back after a neutral session
    churn_mood: float = -20.0  # a pleasant session makes leaving for good rarer
    min_gap_hours: float = 0.5  # sessions of one user are at least this far apart
    fatigue_half_life_days: float = 0.25  # request-level fatigue decays between sessions
    exposure_half_life_days: float = 3.0  # cross-session topic / creator exposure decays
    carried_fatigue: float = 2.0  # fatigue a session starts with per unit of topic exposure
    creator_buckets: int = 64  # creators hashed into this many buckets (memory per user)
    drift_per_day: float = 0.05  # std of the interest random walk per sqrt(day)

    def __post_init__(self) -> None:
        if len(self.base_rate) != len(ACTIVITY_LEVELS) or min(self.base_rate) <= 0:
            raise ValueError(f"base_rate needs one positive rate per activity level "
                             f"{ACTIVITY_LEVELS}, got {self.base_rate}")
        for name in ("reference_watch_minutes", "hate_weight", "min_gap_hours",
                     "carried_fatigue", "drift_per_day"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {getattr(self, name)}")
        for name in ("fatigue_half_life_days", "exposure_half_life_days"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.creator_buckets < 1:
            raise ValueError(f"creator_buckets must be >= 1, got {self.creator_buckets}")


class SessionRecord(NamedTuple):
    """What the return model reads of each finished session, per user: all (R,)."""

    activity: np.ndarray  # int64 activity level (index into ACTIVITY_LEVELS)
    watch_s: np.ndarray  # float64 seconds watched in the session (the truth)
    impressions: np.ndarray  # int64 items shown
    likes: np.ndarray  # float64
    hates: np.ndarray  # float64
    variety: np.ndarray  # float64 in [0, 1]: distinct topics / min(impressions, topics)
    staleness: np.ndarray  # float64 in [0, 1]: overlap of this session's topic mix with the
    # user's exposure from earlier sessions


def mood(config: ReturnConfig, record: SessionRecord) -> np.ndarray:
    """(likes - hate_weight x hates) per impression (R,); 0 for a session that showed nothing."""
    shown = np.maximum(record.impressions, 1)
    return (record.likes - config.hate_weight * record.hates) / shown


def return_log_rate(config: ReturnConfig, record: SessionRecord) -> np.ndarray:
    """log of the return rate per day (R,) (module docstring)."""
    base = np.log(np.asarray(config.base_rate))[record.activity]
    minutes = np.log1p(record.watch_s / 60.0) - math.log1p(config.reference_watch_minutes)
    return (base + config.watch_effect * minutes + config.mood_effect * mood(config, record)
            + config.variety_effect * (record.variety - 0.5)
            - config.staleness_effect * record.staleness)


def churn_probability(config: ReturnConfig, record: SessionRecord) -> np.ndarray:
    """Probability (R,) that the user never comes back after this session."""
    logit = config.churn_bias + config.churn_mood * mood(config, record)
    return 1.0 / (1.0 + np.exp(-logit))


def draw_return(config: ReturnConfig, record: SessionRecord, draws: np.ndarray) -> np.ndarray:
    """Days until each user's next session (R,) float64, inf for a user who churned;
    draws (R, 2) uniforms in (0, 1): the churn draw, then the delay's."""
    rate = np.exp(return_log_rate(config, record))
    delay = np.maximum(-np.log(draws[:, 1]) / rate, config.min_gap_hours / HOURS_PER_DAY)
    return np.where(draws[:, 0] < churn_probability(config, record), np.inf, delay)


def topic_shares(counts: np.ndarray) -> np.ndarray:
    """Rows of counts (R, K) as shares (rows of zeros stay zeros)."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts, dtype=np.float64),
                     where=totals > 0)


def variety(counts: np.ndarray) -> np.ndarray:
    """Distinct topics shown / min(impressions, topics) (R,) from a session's counts (R, K);
    1 for a session with nothing shown (no evidence of monotony)."""
    shown = counts.sum(axis=1)
    distinct = (counts > 0).sum(axis=1)
    possible = np.minimum(shown, counts.shape[1])
    return np.where(possible > 0, distinct / np.maximum(possible, 1), 1.0)


def staleness(counts: np.ndarray, exposure: np.ndarray) -> np.ndarray:
    """How much of this session's topic mix (counts (R, K)) the user had already seen in
    earlier sessions (exposure (R, K), decayed shares): sum_k share_k x min(1, exposure_k),
    in [0, 1] (R,)."""
    return (topic_shares(counts) * np.minimum(exposure, 1.0)).sum(axis=1)


def decay(values: np.ndarray, gap_days: np.ndarray, half_life_days: float) -> np.ndarray:
    """values (R, ...) after gap_days (R,) of halving every half_life_days (inf: 0)."""
    factor = np.exp2(-np.asarray(gap_days, dtype=np.float64) / half_life_days)
    return values * factor.reshape(-1, *([1] * (values.ndim - 1)))


def drift_interest_across_days(config: ReturnConfig, interest: np.ndarray, gap_days: np.ndarray,
                               normals: np.ndarray) -> np.ndarray:
    """Interest (R, T) after a random walk of drift_per_day x sqrt(gap) per dimension,
    renormalised; normals (R, T) standard normal draws."""
    step = config.drift_per_day * np.sqrt(np.asarray(gap_days, dtype=np.float64))[:, None]
    moved = interest + step * normals
    return moved / np.maximum(np.linalg.norm(moved, axis=1, keepdims=True), 1e-12)
