"""`OneRecSession`: one simulated user's session as a Gymnasium environment.

Letters used in shape comments: N users, S slate size, F feedback fields, I items.

The checks of what callers pass (constructor arguments, seeds, options, a `reward_fn`'s
output) live here too; `OneRecVectorEnv` shares them (envs/README.md, "Conventions").
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

import gymnasium as gym
import numpy as np

from envs.catalog import Catalog
from envs.simulator import (
    DEFAULT_NUM_ITEMS,
    SessionConfig,
    SessionSimulator,
    SlateRewardFn,
    action_space,
    default_catalog,
    observation_space,
    true_engagement_reward,
    validate_slate,
)
from envs.streams import seed_roots

_ONE_USER = np.zeros(1, dtype=np.int64)
SEED_LIMIT = 2**63  # seeds are hashed as int64 (streams.seed_roots): valid seeds are [0, 2**63)


class OneRecSession(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """## Description

    One user of a short-video app in one session. At each request the recommender shows a
    slate of items; the simulated user answers every shown item with a watch time and
    seven behaviours (click, long view, like, follow, comment, forward, hate), and may
    leave. The user has a static profile, latent interests that drift toward what they
    engage with, per-topic fatigue, and a patience budget that good slates refill and poor
    ones drain. Users start with a simulated warm history, so every pathway of the
    observation is populated from the first request. Calibration: envs/README.md.

    ## Action Space

    `MultiDiscrete([I + 1] * S, start=-1)`, int64 (S,): the item ids of the slate, S =
    `config.slate_size` (default 10). -1 is a blank: nothing is shown in that slot (for
    example an illegal semantic-ID code). A repeat of an item earlier in the same slate is
    not shown again (counted in `info["duplicates"]`). Anything else (another shape, a
    non-integer dtype, an id outside [-1, I)) raises a ValueError naming the action.

    ## Observation Space

    A `Dict` of OneRec's four pathways (most recent last; padding item id -1, zero values):

    | key                   | shape        | dtype   | content                                |
    |-----------------------|--------------|---------|----------------------------------------|
    | `static`              | (5,)         | int64   | STATIC_FIELDS: bucket, age, gender, ...|
    | `short_term_items`    | (20,)        | int64   | the last 20 impressions                |
    | `short_term_feedback` | (20, F)      | float32 | their feedback, FEEDBACK_FIELDS order  |
    | `positive_items`      | (256,)       | int64   | the last 256 engaged impressions       |
    | `positive_feedback`   | (256, F)     | float32 | their feedback                         |
    | `lifelong_items`      | (128,)       | int64   | nearest item of each lifelong cluster  |
    | `lifelong_features`   | (128, F + 1) | float32 | cluster-mean feedback, cluster size    |

    The lifelong clusters come from hierarchical k-means over the content vectors of the
    last 2,000 past impressions. F = 9: watch_time (s), watch_ratio (capped at 3), click,
    long_view, like, follow, comment, forward, hate. Lengths come from `SessionConfig`. The
    lifelong pathway is computed at reset and fixed within the session. Hidden item fields
    (topics, quality, click-bait) and the user's interests, fatigue and patience never
    appear.

    ## Rewards

    `reward_fn(observation, slate, feedback)` on the batched (leading 1) context the slate
    answered; by default the true engagement: watch minutes + 0.5 like + 1 follow +
    0.5 comment + 0.5 forward - 1 hate, summed over the slate. Any `SlateRewardFn` plugs in.
    The true outcome is always in `info` (the oracle): `true_watch_time` (s),
    `true_engagement`, `true_<behaviour>` counts, `left`, and `feedback` (S, F), `shown`
    (S,), `duplicates`, `request` (requests answered so far).

    ## Starting State

    A new user (profile, interests, warm history of `population.warm_history` impressions)
    drawn from the episode's random stream; patience by activity level.

    ## Episode End

    Termination: the user leaves (patience runs out). Truncation: `max_episode_steps`
    (100 for `OneRec/Session-v0`) through `TimeLimit`. A step after termination raises
    `gymnasium.error.ResetNeeded`, as a step before the first reset does (a truncation is
    `TimeLimit`'s, which the env does not see).

    ## Arguments

    `gymnasium.make("OneRec/Session-v0", catalog=None, config=None, reward_fn=None,
    num_items=5000, catalog_seed=0)`: `catalog` an `envs.catalog.Catalog` (default: a
    synthetic one of `num_items` items from `catalog_seed`), `config` a `SessionConfig`,
    `reward_fn` a `SlateRewardFn`, which must return one finite real reward per user: shape
    (1,) or a scalar (anything else is a ValueError naming it). An argument of the wrong
    type is a ValueError naming it. `reset(seed=s)`, s an int in [0, 2**63), gives the same
    user and the same answers as user i of `gymnasium.make_vec("OneRec/Session-v0",
    num_envs=n)` reset with seed s - i; `reset` takes no options (`{}` or None).

    ## Version History

    * v0: initial version.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        catalog: Catalog | None = None,
        config: SessionConfig | None = None,
        reward_fn: SlateRewardFn | None = None,
        num_items: int = DEFAULT_NUM_ITEMS,
        catalog_seed: int = 0,
    ) -> None:
        self.catalog, self.config, self.reward_fn = env_world(
            type(self).__name__, catalog, config, reward_fn, num_items, catalog_seed)
        self.simulator = SessionSimulator(self.catalog, self.config, num_users=1)
        self.observation_space = observation_space(self.catalog, self.config)
        self.action_space = action_space(self.catalog, self.config)
        self._context: dict[str, np.ndarray] | None = None  # batched observation answered next
        self._terminated = False  # the user left: the next step needs a reset first
        self._seeded = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        check_options(options, (), "OneRecSession.reset")
        roots = single_user_roots(self, seed, self._seeded)
        self._seeded = True
        self.simulator.reset(_ONE_USER, roots)
        self._context = self.simulator.observation()
        self._terminated = False
        return _single(self._context), {}

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._context is None:
            raise gym.error.ResetNeeded("call reset() before step() on OneRecSession")
        if self._terminated:
            raise gym.error.ResetNeeded(
                "episode ended (terminated: the user left); call reset() before step()"
            )
        slate = validate_slate(action, self.catalog.num_items, self.config.slate_size, None)
        result = self.simulator.step(slate)
        output = self.reward_fn(self._context, slate, result.feedback)  # checked below
        self._context = self.simulator.observation()
        self._terminated = bool(result.outcome["left"][0])
        info: dict[str, Any] = {name: value[0].item() for name, value in result.outcome.items()}
        info.update(
            feedback=result.feedback[0], shown=result.shown[0],
            duplicates=int(result.duplicates[0]), request=int(self.simulator.state.request[0]),
        )
        reward = float(checked_rewards(output, self.reward_fn, 1)[0])
        return _single(self._context), reward, self._terminated, False, info


def single_user_roots(env: gym.Env, seed: object, seeded: bool) -> np.ndarray | None:
    """Gymnasium's reset seeding of a one-user env, and the root key (1,) of its next user:
    the seed's, a draw of the env's `np_random` at the first unseeded reset, or None (the
    next user of the same stream) once `seeded`. A bad seed is a ValueError naming it."""
    if seed is not None:
        seed = checked_seed(seed)
    gym.Env.reset(env, seed=seed)
    if seed is not None:
        return seed_roots(np.array([seed]))
    if not seeded:
        return env.np_random.integers(0, 2**63, size=1, dtype=np.uint64)
    return None


def _single(batched: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: value[0] for name, value in batched.items()}


def check_env_arguments(owner: str, catalog: object, config: object, reward_fn: object,
                        num_items: object, catalog_seed: object) -> None:
    """Check the constructor arguments the two envs share (`gymnasium.make` kwargs, say):
    a ValueError naming the one of the wrong type or out of range (gymnasium.make would
    append every keyword, a catalog included, to a TypeError)."""
    expected = {"catalog": (catalog, Catalog, "an envs.catalog.Catalog"),
                "config": (config, SessionConfig, "an envs.simulator.SessionConfig")}
    for name, (value, kind, description) in expected.items():
        if value is not None and not isinstance(value, kind):
            raise ValueError(f"{owner} {name} must be {description} or None, got "
                             f"{type(value).__name__} {reprlib.repr(value)}")
    if reward_fn is not None and not callable(reward_fn):
        raise ValueError(f"{owner} reward_fn must be a callable "
                         "fn(observation, slate, feedback) -> (N,) rewards "
                        f"(envs.simulator.SlateRewardFn) or None, got "
                         f"{type(reward_fn).__name__} {reprlib.repr(reward_fn)}")
    check_int(owner, "num_items", num_items, 2)
    check_int(owner, "catalog_seed", catalog_seed, 0)


def env_world(owner: str, catalog: Catalog | None, config: SessionConfig | None,
              reward_fn: SlateRewardFn | None, num_items: int,
              catalog_seed: int) -> tuple[Catalog, SessionConfig, SlateRewardFn]:
    """An env's checked arguments with their defaults: the catalog (a synthetic one of
    `num_items` from `catalog_seed` when None), the session config and the reward."""
    check_env_arguments(owner, catalog, config, reward_fn, num_items, catalog_seed)
    return (default_catalog(num_items, catalog_seed) if catalog is None else catalog,
            SessionConfig() if config is None else config,
            true_engagement_reward if reward_fn is None else reward_fn)


def check_int(owner: str, name: str, value: object, minimum: int) -> None:
    """ValueError naming `owner`'s argument `name` unless it is an int (a numpy integer
    will do, a bool will not), ValueError unless it is >= `minimum`."""
    if not _is_int(value):
        raise ValueError(f"{owner} {name} must be an int, got "
                         f"{type(value).__name__} {reprlib.repr(value)}")
    if value < minimum:
        raise ValueError(f"{owner} {name} must be >= {minimum}, got {value}")


def checked_seed(seed: object, num_envs: int = 1) -> int:
    """`reset(seed=...)` as an int: env i of `num_envs` is seeded with seed + i, each below
    SEED_LIMIT. ValueError naming the seed and the valid range otherwise."""
    highest = f"2**63 - {num_envs}"
    if not _is_int(seed):
        raise ValueError(f"seed {reprlib.repr(seed)} ({type(seed).__name__}) must be an int "
                         f"in [0, {highest}] or None")
    if not 0 <= seed <= SEED_LIMIT - num_envs:
        raise ValueError(f"seed {seed} is outside [0, {highest}]: pass an int in that range "
                         "(seeds are hashed as int64)")
    return int(seed)


def checked_seed_list(seeds: object, num_envs: int) -> np.ndarray:
    """`reset(seed=[...])` of a vector env: (N,) int64, one seed per env, each in
    [0, 2**63). ValueError naming the seeds and the expected form otherwise."""
    array = np.asarray(seeds)
    expected = f"a list of {num_envs} ints in [0, 2**63 - 1]"
    if array.shape != (num_envs,) or array.dtype.kind not in "iu":
        raise ValueError(f"seed {reprlib.repr(seeds)} must be an int or {expected}, got "
                         f"shape {array.shape} and dtype {array.dtype}")
    outside = array < 0 if array.dtype.kind == "i" else array >= SEED_LIMIT  # (N,)
    if outside.any():
        raise ValueError(f"seed {reprlib.repr(seeds)} holds {array[outside][:5].tolist()}, "
                         f"outside [0, 2**63 - 1]: pass an int or {expected}")
    return array.astype(np.int64)


def check_options(options: object, allowed: tuple[str, ...], owner: str) -> None:
    """ValueError naming `options` unless it is None or a dict of `allowed` keys only."""
    takes = ", ".join(repr(key) for key in allowed) or "no options"
    if options is not None and not isinstance(options, Mapping):
        raise ValueError(f"{owner} options must be a dict or None, got "
                         f"{type(options).__name__} {reprlib.repr(options)}")
    unknown = sorted(str(key) for key in options or {} if key not in allowed)
    if unknown:
        raise ValueError(f"{owner} options has unknown keys {unknown}; it takes {takes}")


def checked_rewards(output: object, reward_fn: Callable[..., object], num_users: int,
                    ignored: np.ndarray | None = None) -> np.ndarray:
    """A `reward_fn`'s output as (N,) float64, zero where `ignored` (N,) is true.

    The output must be N integer or floating rewards (shape (N,), or a scalar when N is 1)
    and finite where not ignored; otherwise a ValueError naming `reward_fn` and what it
    returned. Vectorised: a step of N users adds a few O(N) array operations.
    """
    rewards = np.asarray(output)
    scalar_allowed = num_users == 1 and rewards.ndim == 0
    if (rewards.dtype.kind not in "iuf"
            or not (rewards.shape == (num_users,) or scalar_allowed)):
        expected = "(1,) or a scalar" if num_users == 1 else f"({num_users},)"
        raise ValueError(
            f"reward_fn {_name(reward_fn)} returned {type(output).__name__} of shape "
            f"{rewards.shape} and dtype {rewards.dtype}; it must return one real reward per "
            f"user, shape {expected} (envs.simulator.SlateRewardFn)"
        )
    rewards = rewards.astype(np.float64, copy=False).reshape(num_users)
    if ignored is not None:
        rewards = np.where(ignored, 0.0, rewards)
    finite = np.isfinite(rewards)  # (N,)
    if not finite.all():
        users = np.flatnonzero(~finite)
        raise ValueError(
            f"reward_fn {_name(reward_fn)} returned non-finite rewards "
            f"{rewards[users][:5].tolist()} for users {users[:5].tolist()}; rewards must be "
            "finite reals"
        )
    return rewards


def _is_int(value: object) -> TypeGuard[int | np.integer]:
    """An int or a numpy integer, not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _name(function: Callable[..., object]) -> str:
    return getattr(function, "__qualname__", type(function).__qualname__)
