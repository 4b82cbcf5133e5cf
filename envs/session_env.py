"""`OneRecSession`: one simulated user's session as a Gymnasium environment.

Letters used in shape comments: S slate size, F feedback fields, I items.
"""

from __future__ import annotations

from typing import Any

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
    (100 for `OneRec/Session-v0`) through `TimeLimit`.

    ## Arguments

    `gymnasium.make("OneRec/Session-v0", catalog=None, config=None, reward_fn=None,
    num_items=5000, catalog_seed=0)`: `catalog` an `envs.catalog.Catalog` (default: a
    synthetic one of `num_items` items from `catalog_seed`), `config` a `SessionConfig`,
    `reward_fn` a `SlateRewardFn`. `reset(seed=s)` gives the same user and the same answers
    as user i of `gymnasium.make_vec("OneRec/Session-v0", num_envs=n)` reset with seed s - i.

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
        self.catalog = default_catalog(num_items, catalog_seed) if catalog is None else catalog
        self.config = SessionConfig() if config is None else config
        self.reward_fn = true_engagement_reward if reward_fn is None else reward_fn
        self.simulator = SessionSimulator(self.catalog, self.config, num_users=1)
        self.observation_space = observation_space(self.catalog, self.config)
        self.action_space = action_space(self.catalog, self.config)
        self._context: dict[str, np.ndarray] | None = None  # batched observation answered next
        self._seeded = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            roots = seed_roots(np.array([seed]))
        elif not self._seeded:
            roots = self.np_random.integers(0, 2**63, size=1, dtype=np.uint64)
        else:
            roots = None  # the next user of the same stream
        self._seeded = True
        self.simulator.reset(_ONE_USER, roots)
        self._context = self.simulator.observation()
        return _single(self._context), {}

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._context is None:
            raise gym.error.ResetNeeded("call reset() before step() on OneRecSession")
        slate = validate_slate(action, self.catalog.num_items, self.config.slate_size, None)
        result = self.simulator.step(slate)
        reward = float(np.asarray(self.reward_fn(self._context, slate, result.feedback))[0])
        self._context = self.simulator.observation()
        info: dict[str, Any] = {name: value[0].item() for name, value in result.outcome.items()}
        info.update(
            feedback=result.feedback[0], shown=result.shown[0],
            duplicates=int(result.duplicates[0]), request=int(self.simulator.state.request[0]),
        )
        return _single(self._context), reward, bool(result.outcome["left"][0]), False, info


def _single(batched: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: value[0] for name, value in batched.items()}
