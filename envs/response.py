"""How a simulated user answers a slate: every behaviour of every shown item, and leaving.

The response model is a chain of logistic draws around one latent per impression, the
satisfaction of watching the item:

    affinity      a = <user interest, item topic>                      (cosine, in [-1, 1])
    fatigue       phi = recent impressions of the item's topic (decayed) + earlier ones in
                  this slate
    click         P = sigmoid(c0 + c_a a + c_b bait + c_act[activity] - c_pos position
                              - c_phi phi)
    satisfaction  z = s_a a + s_q (quality - 1/2) - s_b bait - s_phi phi + noise
    watch ratio   clicked: exp(w0 + w_z z - w_d log(duration / 30 s) + noise), at most 3;
                  not clicked: a glance of up to `glance_seconds`
    long view     watch time >= 18 s or watch ratio >= 1 (KuaiRand's rule; it reproduces
                  98.5% of the long_view labels of the explicit-feedback subset)
    like, hate    sigmoid of z, click and long view; hate only when not liked
    follow, comment, forward   sigmoid of like/hate and z; forwards also follow click-bait

The leave model is a patience budget: each request costs one unit, and the slate's value
(long views, likes, follows, minus hates) refills it; the user leaves when it runs out.
The calibration of the coefficients against KuaiRand is in envs/README.md.

Letters used in shape comments: N users, S slate, F feedback fields, T topic dimensions,
I items, K fatigue topics, D uniform draws per impression, M impressions (N S).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import NamedTuple, TypeVar

import numpy as np
from numba import njit

from envs.catalog import ACTIVITY_LEVELS, Catalog
from envs.spec import BEHAVIOURS, BLANK, FEEDBACK_FIELDS

# Uniform draws per impression, in this order.
DRAWS = ("click", "satisfaction", "watch", "like", "hate", "follow", "comment", "forward")
NUM_DRAWS = len(DRAWS)

WATCH_RATIO_CAP = 3.0  # FEEDBACK_FIELDS' watch ratio is capped at 3 (spec.py)
REFERENCE_DURATION_S = 30.0  # duration at which the watch-ratio duration term is zero

# The default reward and the oracle's "true engagement" of a slate: watch minutes plus
# behaviour bonuses. A follow is worth most (a lasting relation), a hate costs as much.
TRUE_ENGAGEMENT_WEIGHTS: dict[str, float] = {
    "watch_minutes": 1.0, "like": 0.5, "follow": 1.0, "comment": 0.5, "forward": 0.5,
    "hate": -1.0,
}

_COLUMN = {name: index for index, name in enumerate(FEEDBACK_FIELDS)}
Column = TypeVar("Column")  # a feedback field as the caller holds it: numpy sums, torch items
_COMPILED = {"cache": True, "nogil": True}  # compiled once per machine; threads run it freely


@dataclass(frozen=True)
class ResponseConfig:
    """Coefficients of the response, fatigue, drift and leave models (see module docstring).

    Defaults are hand-calibrated so that, under the popularity logging policy and the same
    like-or-hate selection as KuaiRand's explicit-feedback subset, every behaviour moves
    with like versus hate in the direction the subset shows (envs/README.md has the table).
    """

    click_bias: float = -1.0  # with the other terms gives a click rate near 0.3 for popular slates
    click_affinity: float = 2.0  # interest is the main driver of a click
    click_clickbait: float = 1.8  # bait attracts clicks (then disappoints, see satisfaction)
    click_position: float = 0.06  # mild position bias: ~0.5 logit from first to tenth slot
    click_activity: tuple[float, ...] = (-0.5, -0.2, 0.0, 0.2)  # per ACTIVITY_LEVELS, low to full
    fatigue_weight: float = 0.12  # logit lost per recent same-topic impression (click and z)
    fatigue_decay: float = 0.5  # per request: the window is ~2 requests = the short-term 20 items
    satisfaction_affinity: float = 2.5  # liked topics satisfy
    satisfaction_quality: float = 3.0  # quality is what separates liked from hated items
    satisfaction_clickbait: float = 2.0  # bait disappoints: hated items are bait more often
    satisfaction_noise: float = 0.6  # logistic scale: two views of one item can differ
    watch_bias: float = -0.45  # median watch ratio of a clicked neutral item ~0.65
    watch_satisfaction: float = 0.35  # satisfied users watch to the end and replay
    watch_duration: float = 0.35  # longer videos are watched to a smaller ratio (KuaiRand)
    watch_noise: float = 0.3  # logistic scale of the watch ratio in log space
    glance_seconds: float = 6.0  # a scroll-past is watched for up to this long (KuaiRand ~3 s)
    long_view_seconds: float = 18.0  # KuaiRand's long-view rule: 18 s or the whole video
    like_bias: float = -5.4  # like rate of a few percent
    like_satisfaction: float = 1.1  # likes follow satisfaction
    like_long_view: float = 0.6  # a liked item is usually watched long
    like_click: float = 0.9  # ... and clicked (KuaiRand: 72% of liked vs 41% of hated)
    hate_bias: float = -6.0  # hate is rare (well under 1%)
    hate_satisfaction: float = 0.8  # dissatisfaction drives hate
    hate_click: float = 1.0  # a disappointing click is more hateful than a glance
    follow_bias: float = -7.5  # follows are rarer than likes
    follow_satisfaction: float = 0.5
    follow_like: float = 1.8  # KuaiRand: follows almost only on liked items
    comment_bias: float = -6.3
    comment_like: float = 1.6  # KuaiRand: comments 4.7x as often on liked as on hated items
    comment_hate: float = 0.9  # ... but hated items draw comments too
    comment_long_view: float = 1.8  # KuaiRand: comments 4.7x as often after a long view
    forward_bias: float = -6.9
    forward_clickbait: float = 1.5  # bait is shared
    forward_like: float = 0.2
    forward_long_view: float = 1.2  # KuaiRand: forwards 2x as often after a long view
    forward_hate: float = 1.8  # KuaiRand: forwards 2.3x as often on hated as on liked items
    drift_rate: float = 0.02  # interest moves 2% toward each engaged item (away from hated ones)
    initial_patience: tuple[float, ...] = (2.0, 3.0, 4.0, 5.0)  # requests, per activity level
    patience_cap: float = 8.0  # good slates cannot bank more than a few requests
    request_cost: float = 1.0  # every request spends one unit of patience
    refill_per_value: float = 0.32  # ~3 long views per slate keep a user roughly even

    def __post_init__(self) -> None:
        for name in ("click_activity", "initial_patience"):
            if len(getattr(self, name)) != len(ACTIVITY_LEVELS):
                raise ValueError(
                    f"{name} needs one value per activity level {ACTIVITY_LEVELS}, got "
                    f"{getattr(self, name)}; pass a tuple of {len(ACTIVITY_LEVELS)} numbers"
                )
        if not 0.0 <= self.fatigue_decay < 1.0:
            raise ValueError(
                f"fatigue_decay must be in [0, 1) (the share of fatigue kept per request), "
                f"got {self.fatigue_decay}"
            )
        if not 0.0 <= self.drift_rate < 1.0:
            raise ValueError(f"drift_rate must be in [0, 1), got {self.drift_rate}")
        for name in ("fatigue_weight", "satisfaction_noise", "watch_noise", "glance_seconds",
                     "long_view_seconds", "request_cost", "refill_per_value"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.patience_cap <= 0 or min(self.initial_patience) <= 0:
            raise ValueError(
                f"patience_cap ({self.patience_cap}) and initial_patience "
                f"({self.initial_patience}) must be > 0, or every session ends at once"
            )


class ItemTable(NamedTuple):
    """The catalog arrays the response model reads, in the dtypes it computes in."""

    topics: np.ndarray  # (I, T) float64, hidden
    quality: np.ndarray  # (I,) float64, hidden
    clickbait: np.ndarray  # (I,) float64, hidden
    duration_s: np.ndarray  # (I,) float64
    log_duration: np.ndarray  # (I,) float64: log(duration / REFERENCE_DURATION_S)
    fatigue_topic: np.ndarray  # (I,) int64: the middle category, the unit of boredom
    num_fatigue_topics: int

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> ItemTable:
        duration = catalog.duration_s.astype(np.float64)
        return cls(
            topics=catalog.topics.astype(np.float64),
            quality=catalog.quality.astype(np.float64),
            clickbait=catalog.clickbait.astype(np.float64),
            duration_s=duration,
            log_duration=np.log(duration / REFERENCE_DURATION_S),
            fatigue_topic=catalog.category[:, 1].astype(np.int64),
            num_fatigue_topics=int(catalog.category[:, 1].max()) + 1,
        )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logistic_noise(u: np.ndarray) -> np.ndarray:
    return np.log(u) - np.log1p(-u)


# A ResponseConfig's float fields as a named tuple: what compiled code can read (per-level
# tuples stay out; callers index them first).
ResponseCoefficients = NamedTuple("ResponseCoefficients", [
    (spec.name, float) for spec in fields(ResponseConfig) if isinstance(spec.default, float)
])


@lru_cache(maxsize=16)
def coefficients(config: ResponseConfig) -> ResponseCoefficients:
    """The float fields of `config`, for compiled code."""
    return ResponseCoefficients(*(getattr(config, name) for name in ResponseCoefficients._fields))


@njit(**_COMPILED)
def _click_logit(config, affinity, clickbait, activity_offset, fatigue, position):
    """Click logit from `ResponseCoefficients`: of scalars (the compiled response) or of
    arrays that broadcast (`click_logit`), the same arithmetic in the same order."""
    return (config.click_bias + config.click_affinity * affinity
            + config.click_clickbait * clickbait + activity_offset
            - config.click_position * position - config.fatigue_weight * fatigue)


@njit(**_COMPILED)
def _satisfaction_mean(config, affinity, quality, clickbait, fatigue):
    """Expected satisfaction from `ResponseCoefficients` (scalars or arrays)."""
    return (config.satisfaction_affinity * affinity
            + config.satisfaction_quality * (quality - 0.5)
            - config.satisfaction_clickbait * clickbait - config.fatigue_weight * fatigue)


def click_logit(
    config: ResponseConfig, affinity: np.ndarray, clickbait: np.ndarray, activity: np.ndarray,
    fatigue: np.ndarray, positions: np.ndarray,
) -> np.ndarray:
    """Click logit of each impression; every input broadcasts to (N, S)."""
    activity_offset = np.asarray(config.click_activity)[activity]
    return _click_logit(coefficients(config), affinity, clickbait, activity_offset, fatigue,
                        positions)


def satisfaction_mean(
    config: ResponseConfig, affinity: np.ndarray, quality: np.ndarray, clickbait: np.ndarray,
    fatigue: np.ndarray,
) -> np.ndarray:
    """Expected satisfaction of watching each item (the latent behind like, hate and watch)."""
    return _satisfaction_mean(coefficients(config), affinity, quality, clickbait, fatigue)


def respond(
    config: ResponseConfig,
    items: ItemTable,
    interest: np.ndarray,
    activity: np.ndarray,
    slate: np.ndarray,
    shown: np.ndarray,
    fatigue: np.ndarray,
    draws: np.ndarray,
    positions: np.ndarray | None = None,
) -> np.ndarray:
    """Feedback of every impression: (N, S, F) float32 in FEEDBACK_FIELDS order.

    interest (N, T) unit vectors; activity (N,) activity level; slate (N, S) item ids
    (anything where not shown); shown (N, S) bool; fatigue (N, S) same-topic exposure;
    draws (N, S, D) uniforms in (0, 1), D = NUM_DRAWS in `DRAWS` order; positions (S,) the
    slot of each column in its slate (default: the column index). Unshown slots get
    all-zero feedback.
    """
    safe = np.where(shown, slate, 0)
    affinity = np.einsum("nst,nt->ns", np.take(items.topics, safe, axis=0), interest)  # (N, S)
    columns = feedback_columns(config, items, affinity, activity, safe, shown, fatigue,
                               np.moveaxis(draws, -1, 0), positions)  # (F, N, S)
    return np.ascontiguousarray(np.moveaxis(columns, 0, -1))


def feedback_columns(
    config: ResponseConfig,
    items: ItemTable,
    affinity: np.ndarray,
    activity: np.ndarray,
    slate: np.ndarray,
    shown: np.ndarray,
    fatigue: np.ndarray,
    draws: np.ndarray,
    positions: np.ndarray | None = None,
) -> np.ndarray:
    """`respond` laid out field-major: (F, N, S) float32, each field one contiguous (N, S).

    affinity (N, S) = <interest, item topic> of each impression (a caller whose users see
    items repeatedly computes it once per item); slate (N, S) valid item ids, shown or not;
    draws (D, N, S), draw-major as `streams.uniform_columns` draws them; the rest as
    `respond`.

    The arithmetic of the module docstring runs compiled, in four stages over the M = N S
    impressions, with numpy's vectorised exp (and log for the noises) in between: each
    stage's sigmoids need the behaviours drawn before it. numpy's exp is both faster than
    a compiled scalar exp and the one every earlier rollout was drawn with, so the feedback
    is the same bits as the all-numpy response it replaces.
    """
    if positions is None:
        positions = np.arange(slate.shape[1])
    users, slots = slate.shape
    draws = np.ascontiguousarray(draws).reshape(NUM_DRAWS, users * slots)  # (D, M)
    satisfaction_noise = _logistic_noise(draws[_SATISFACTION])  # (M,)
    watch_noise = _logistic_noise(draws[_WATCH])  # (M,)
    satisfaction, duration, clickbait = np.empty((3, users * slots))  # (M,) each
    exponentials = np.empty((3, users * slots))  # (3, M): exp(-logit) of up to 3 behaviours
    columns = np.empty((len(FEEDBACK_FIELDS), users * slots), dtype=np.float32)  # (F, M)
    compiled = coefficients(config)
    _click_and_watch_exponents(
        compiled, items.quality, items.clickbait, items.duration_s, items.log_duration,
        affinity, slate, np.asarray(config.click_activity)[activity], positions, fatigue,
        satisfaction_noise, watch_noise, satisfaction, duration, clickbait, exponentials[0],
        exponentials[1])
    np.exp(exponentials[:2], out=exponentials[:2])
    _watch_and_mood_exponents(
        compiled, draws[_CLICK], draws[_WATCH], duration, satisfaction, exponentials[0],
        exponentials[1], columns[_WATCH_TIME], columns[_WATCH_RATIO], columns[_CLICKED],
        columns[_LONG_VIEW])
    np.exp(exponentials[:2], out=exponentials[:2])
    _mood_and_share_exponents(
        compiled, draws[_LIKE], draws[_HATE], satisfaction, clickbait, columns[_LONG_VIEW],
        exponentials[0], exponentials[1], exponentials[2], columns[_LIKED], columns[_HATED])
    np.exp(exponentials, out=exponentials)
    for draw, field, exponential in ((_FOLLOW, _FOLLOWED, 0), (_COMMENT, _COMMENTED, 1),
                                     (_FORWARD, _FORWARDED, 2)):
        _draw_below_sigmoid(draws[draw], exponentials[exponential], columns[field])
    columns = columns.reshape(len(FEEDBACK_FIELDS), users, slots)  # (F, N, S)
    if not shown.all():
        columns[:, ~shown] = 0.0
    return columns


_CLICK, _SATISFACTION, _WATCH, _LIKE, _HATE, _FOLLOW, _COMMENT, _FORWARD = (
    DRAWS.index(name) for name in ("click", "satisfaction", "watch", "like", "hate", "follow",
                                   "comment", "forward"))
_WATCH_TIME, _WATCH_RATIO, _CLICKED, _LONG_VIEW, _LIKED, _FOLLOWED, _COMMENTED, _FORWARDED, \
    _HATED = (_COLUMN[name] for name in ("watch_time", "watch_ratio", "click", "long_view",
                                         "like", "follow", "comment", "forward", "hate"))
# Stages 2 to 4 run over contiguous (M,) arrays without Python's check for a division by
# zero (numpy's semantics instead): the compiler then vectorises them, divisions included.
_ELEMENTWISE = {**_COMPILED, "error_model": "numpy"}


@njit(**_COMPILED)
def _click_and_watch_exponents(config, quality, clickbait, duration_s, log_duration, affinity,
                               slate, activity_offset, positions, fatigue, satisfaction_noise,
                               watch_noise, satisfaction, duration, impression_clickbait,
                               click_exponent, watch_exponent):
    """Stage 1, over the impressions m = (user, slot) of slate (N, S): the item's duration
    and click-bait, the satisfaction, minus the click logit and the exponent of the watched
    ratio, each into its (M,) array. The per-item lookups keep this stage scalar."""
    slots = slate.shape[1]
    for user in range(slate.shape[0]):
        for slot in range(slots):
            m, item = user * slots + slot, slate[user, slot]
            duration[m], impression_clickbait[m] = duration_s[item], clickbait[item]
            click_exponent[m] = -_click_logit(config, affinity[user, slot], clickbait[item],
                                              activity_offset[user], fatigue[user, slot],
                                              positions[slot])
            value = _satisfaction_mean(config, affinity[user, slot], quality[item],
                                       clickbait[item], fatigue[user, slot])
            value = value + config.satisfaction_noise * satisfaction_noise[m]
            satisfaction[m] = value
            watch_exponent[m] = (config.watch_bias + config.watch_satisfaction * value
                                 - config.watch_duration * log_duration[item]
                                 + config.watch_noise * watch_noise[m])


@njit(**_ELEMENTWISE)
def _watch_and_mood_exponents(config, click_draw, watch_draw, duration, satisfaction, first,
                              second, watch_time, watch_ratio, click, long_view):
    """Stage 2, given exp of stage 1's exponents in first and second (M,): click, watch
    ratio and time, long view; then minus the like and hate logits into first and second."""
    for m in range(click_draw.size):
        clicked = click_draw[m] < 1.0 / (1.0 + first[m])
        glance = config.glance_seconds * watch_draw[m] / duration[m]
        ratio = min(second[m] if clicked else glance, WATCH_RATIO_CAP)
        seconds = ratio * duration[m]
        long = (seconds >= config.long_view_seconds) | (ratio >= 1.0)
        watch_time[m], watch_ratio[m], click[m], long_view[m] = seconds, ratio, clicked, long
        first[m] = -(config.like_bias + config.like_satisfaction * satisfaction[m]
                     + config.like_long_view * long + config.like_click * clicked)
        second[m] = -(config.hate_bias - config.hate_satisfaction * satisfaction[m]
                      + config.hate_click * clicked)


@njit(**_ELEMENTWISE)
def _mood_and_share_exponents(config, like_draw, hate_draw, satisfaction, clickbait,
                              long_view, first, second, third, like, hate):
    """Stage 3, given exp of stage 2's exponents in first and second (M,): like and hate
    (exclusive); then minus the follow, comment and forward logits into first, second and
    third."""
    for m in range(like_draw.size):
        liked = like_draw[m] < 1.0 / (1.0 + first[m])
        hated = (not liked) & (hate_draw[m] < 1.0 / (1.0 + second[m]))
        long = long_view[m] == 1.0
        like[m], hate[m] = liked, hated
        first[m] = -(config.follow_bias + config.follow_satisfaction * satisfaction[m]
                     + config.follow_like * liked)
        second[m] = -(config.comment_bias + config.comment_like * liked
                      + config.comment_hate * hated + config.comment_long_view * long)
        third[m] = -(config.forward_bias + config.forward_clickbait * clickbait[m]
                     + config.forward_like * liked + config.forward_hate * hated
                     + config.forward_long_view * long)


@njit(**_ELEMENTWISE)
def _draw_below_sigmoid(draw, exponential, outcome):
    """Stage 4, one behaviour: outcome (M,) = draw < sigmoid(logit), given exp(-logit)."""
    for m in range(draw.size):
        outcome[m] = draw[m] < 1.0 / (1.0 + exponential[m])


EXPECTATION_POINTS = 32  # quadrature nodes per noise; see tests/test_grpo_true_outcome.py


def _quadrature(points: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes u (Q,) in (0, 1) and weights (Q,) summing to 1 for E[f(u)], u uniform: the
    midpoint rule after u = (1 - cos(pi s)) / 2, which packs nodes into both tails, where
    the logistic noise of rare behaviours (likes, follows) lives."""
    s = (np.arange(points) + 0.5) / points
    weights = np.sin(np.pi * s)
    return (1.0 - np.cos(np.pi * s)) / 2.0, weights / weights.sum()


def _over_moods(
    like: np.ndarray, hate: np.ndarray, logit: np.ndarray, on_like: float, on_hate: float
) -> np.ndarray:
    """P(a behaviour whose logit moves by `on_like` / `on_hate` when the item is liked /
    hated), summed over the exclusive moods liked, hated and neither."""
    return (like * _sigmoid(logit + on_like) + hate * _sigmoid(logit + on_hate)
            + (1.0 - like - hate) * _sigmoid(logit))


def expected_feedback(
    config: ResponseConfig,
    items: ItemTable,
    interest: np.ndarray,
    activity: np.ndarray,
    candidates: np.ndarray,
    fatigue: np.ndarray,
    points: int = EXPECTATION_POINTS,
) -> np.ndarray:
    """Expected feedback of each candidate shown alone in the first slot: (N, G, F) float64.

    The expectation of `respond` over its random draws, without drawing: the click is a
    Bernoulli weight, the satisfaction and watch noises are integrated on a `points` x
    `points` quadrature grid (`_quadrature`), and every later behaviour is its exact
    probability given those (like and hate exclusive). interest (N, T); activity (N,);
    candidates (N, G) item ids, BLANK gives zeros; fatigue (N, G) the topic exposure each
    candidate would meet. Candidates are taken in chunks that bound the grid's memory.
    """
    expected = np.zeros((*candidates.shape, len(FEEDBACK_FIELDS)))
    chunk = max(1, _GRID_ELEMENTS // (max(candidates.shape[0], 1) * points * points))
    for start in range(0, candidates.shape[1], chunk):
        part = slice(start, start + chunk)
        expected[:, part] = _expected_chunk(config, items, interest, activity,
                                            candidates[:, part], fatigue[:, part], points)
    return expected


_GRID_ELEMENTS = 2**21  # (users x candidates x points^2) per chunk: ~16 MB per grid array


def _expected_chunk(
    config: ResponseConfig, items: ItemTable, interest: np.ndarray, activity: np.ndarray,
    candidates: np.ndarray, fatigue: np.ndarray, points: int,
) -> np.ndarray:
    """`expected_feedback` of one chunk of candidates (N, G') -> (N, G', F)."""
    shown = candidates != BLANK
    safe = np.where(shown, candidates, 0)
    affinity = np.einsum("ngt,nt->ng", items.topics[safe], interest)[..., None, None]
    clickbait = items.clickbait[safe][..., None, None]  # (N, G, 1, 1) against the noise grid
    duration = items.duration_s[safe][..., None, None]
    fatigue = fatigue[..., None, None]
    quantiles, weights = _quadrature(points)  # (Q,) each
    noise = _logistic_noise(quantiles)
    grid_weights = weights[:, None] * weights[None, :]  # (Q, Q) over (satisfaction, watch)
    satisfaction = satisfaction_mean(
        config, affinity, items.quality[safe][..., None, None], clickbait, fatigue
    ) + config.satisfaction_noise * noise[:, None]  # (N, G, Q, 1): rows follow its noise
    watched_ratio = np.exp(
        config.watch_bias + config.watch_satisfaction * satisfaction
        - config.watch_duration * items.log_duration[safe][..., None, None]
        + config.watch_noise * noise[None, :]
    )  # (N, G, Q, Q)
    p_click = _sigmoid(click_logit(config, affinity, clickbait, activity[:, None, None, None],
                                   fatigue, np.zeros(1)))[..., 0, 0]  # (N, G)
    expected = np.zeros((*candidates.shape, len(FEEDBACK_FIELDS)))
    for click, weight in ((1.0, p_click), (0.0, 1.0 - p_click)):
        ratio = watched_ratio if click else config.glance_seconds * quantiles[None, :] / duration
        ratio = np.minimum(ratio, WATCH_RATIO_CAP)
        watch_time = ratio * duration
        long_view = ((watch_time >= config.long_view_seconds) | (ratio >= 1.0)).astype(float)
        like = _sigmoid(config.like_bias + config.like_satisfaction * satisfaction
                        + config.like_long_view * long_view + config.like_click * click)
        hate = (1.0 - like) * _sigmoid(config.hate_bias - config.hate_satisfaction * satisfaction
                                       + config.hate_click * click)
        columns = {
            "watch_time": watch_time, "watch_ratio": ratio, "click": click,
            "long_view": long_view, "like": like, "hate": hate,
            "follow": _over_moods(like, hate, config.follow_bias
                                  + config.follow_satisfaction * satisfaction,
                                  config.follow_like, 0.0),
            "comment": _over_moods(like, hate, config.comment_bias
                                   + config.comment_long_view * long_view,
                                   config.comment_like, config.comment_hate),
            "forward": _over_moods(like, hate, config.forward_bias
                                   + config.forward_clickbait * clickbait
                                   + config.forward_long_view * long_view,
                                   config.forward_like, config.forward_hate),
        }
        for index, name in enumerate(FEEDBACK_FIELDS):
            grid = np.broadcast_to(columns[name], watched_ratio.shape)  # (N, G, Q, Q)
            expected[..., index] += weight * np.einsum("ngqr,qr->ng", grid, grid_weights)
    return np.where(shown[..., None], expected, 0.0)  # (N, G, F)


def engaged(feedback: np.ndarray) -> np.ndarray:
    """Whether each impression counts as positive feedback: (..., F) -> (...) bool.

    Positive = a long view, like, follow, comment or forward, and no hate. A click alone is
    not enough: in a feed a click is often a glance.
    """
    positive = feedback[..., [_COLUMN[name] for name in
                              ("long_view", "like", "follow", "comment", "forward")]].any(-1)
    return positive & (feedback[..., _COLUMN["hate"]] == 0)


def slate_value(feedback: np.ndarray) -> np.ndarray:
    """What a slate gives the user, the patience refill: (N, S, F) -> (N,)."""
    column = {name: feedback[..., _COLUMN[name]] for name in ("long_view", "like", "follow",
                                                               "hate")}
    per_item = column["long_view"] + column["like"] + 2.0 * column["follow"] - 2.0 * column["hate"]
    return per_item.sum(axis=-1, dtype=np.float64)


def engagement_formula(column: Callable[[str], Column]) -> Column:
    """True engagement from a getter of feedback fields: watch minutes plus
    `TRUE_ENGAGEMENT_WEIGHTS` per behaviour.

    The one definition of the formula, shared by the simulator (`true_engagement`, on numpy
    sums over a slate) and the oracle reward (`rewards.oracle.item_engagement`, on torch
    per-item tensors): `column(name)` returns the field `name` of `FEEDBACK_FIELDS` in
    whatever form the caller sums, so both compute with their own dtype and operation order
    (watch seconds / 60 * weight, then each weighted behaviour, in dict order).
    """
    total = column("watch_time") / 60.0 * TRUE_ENGAGEMENT_WEIGHTS["watch_minutes"]
    for name, weight in TRUE_ENGAGEMENT_WEIGHTS.items():
        if name != "watch_minutes":
            total = total + weight * column(name)
    return total


def true_engagement(feedback: np.ndarray) -> np.ndarray:
    """The oracle's engagement of each slate: (N, S, F) -> (N,) float64.

    `engagement_formula` on each field summed over the slate in float64.
    """
    return engagement_formula(lambda name: feedback[..., _COLUMN[name]].sum(-1, dtype=np.float64))


def oracle_outcome(feedback: np.ndarray, left: np.ndarray) -> dict[str, np.ndarray]:
    """The true outcome of each slate, keyed as in `info`: each value (N,).

    `true_watch_time` (seconds), `true_engagement`, `true_<behaviour>` counts, `left`.
    """
    outcome = {
        "true_watch_time": feedback[..., _COLUMN["watch_time"]].sum(-1, dtype=np.float64),
        "true_engagement": true_engagement(feedback),
    }
    for name in BEHAVIOURS:
        outcome[f"true_{name}"] = feedback[..., _COLUMN[name]].sum(-1).astype(np.int64)
    outcome["left"] = np.asarray(left, dtype=bool)
    return outcome


ORACLE_FIELDS: tuple[str, ...] = (
    "true_watch_time", "true_engagement", *(f"true_{name}" for name in BEHAVIOURS), "left",
)


def update_patience(
    config: ResponseConfig, patience: np.ndarray, feedback: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Spend one request and refill by the slate's value: -> (new patience (N,), left (N,))."""
    refilled = patience - config.request_cost + config.refill_per_value * slate_value(feedback)
    patience = np.minimum(refilled, config.patience_cap)
    return patience, patience <= 0.0


def slate_fatigue(
    fatigue_state: np.ndarray, topics: np.ndarray, shown: np.ndarray
) -> np.ndarray:
    """Exposure to each item's topic: state (N, K), topics and shown (N, S) -> (N, S).

    The decayed count of recent requests' impressions of the topic plus the impressions of
    the same topic earlier in this slate.
    """
    recent = np.take_along_axis(fatigue_state, topics, axis=1)  # (N, S)
    slots = topics.shape[1]
    earlier = np.tri(slots, slots, -1, dtype=bool)  # earlier[s, r]: r comes before s
    same = (topics[:, :, None] == topics[:, None, :]) & earlier & shown[:, None, :]
    return recent + same.sum(-1)


def decay_fatigue(
    config: ResponseConfig, fatigue_state: np.ndarray, topics: np.ndarray, shown: np.ndarray
) -> np.ndarray:
    """Fatigue after a request: decay, then count this slate's impressions per topic."""
    users, num_topics = fatigue_state.shape
    flat = (np.arange(users)[:, None] * num_topics + topics)[shown]
    counts = np.bincount(flat, minlength=users * num_topics).reshape(users, num_topics)
    return fatigue_state * config.fatigue_decay + counts


def drift_interest(
    config: ResponseConfig, items: ItemTable, interest: np.ndarray, slate: np.ndarray,
    feedback: np.ndarray,
) -> np.ndarray:
    """Interest after a request: toward engaged items' topics, away from hated ones (N, T)."""
    pull = engaged(feedback).astype(np.float64) - feedback[..., _COLUMN["hate"]]  # (N, S)
    safe = np.maximum(slate, 0)
    moved = interest + config.drift_rate * np.einsum("ns,nst->nt", pull, items.topics[safe])
    return moved / np.maximum(np.linalg.norm(moved, axis=1, keepdims=True), 1e-12)
