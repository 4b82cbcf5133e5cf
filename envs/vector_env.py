"""`OneRecVectorEnv`: N users' sessions stepped together, with no Python loop over users.

Letters used in shape comments: N users (envs), S slate size, F feedback fields.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.catalog import Catalog
from envs.simulator import (
    DEFAULT_NUM_ITEMS,
    PendingReset,
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


class OneRecVectorEnv(VectorEnv):
    """N independent `OneRecSession` users as one natively batched vector env.

    Spaces, rewards and `info` keys are those of `OneRecSession` with a leading N (info
    values are arrays of shape (N,) or (N, S, F)). Env i reset with `seed` is exactly
    `OneRecSession` reset with `seed + i` (a list of N seeds gives one seed per env).
    Autoreset is Gymnasium's NEXT_STEP mode: the step after an env terminates or truncates
    ignores its action, starts its next user and returns reward 0; with
    `autoreset_mode=AutoresetMode.DISABLED` a finished env keeps stepping (its answers mean
    nothing) until `reset(options={"reset_mask": ...})` restarts it. Truncation at
    `max_episode_steps` requests is done here (a vector env has no `TimeLimit`).
    `options={"reset_mask": mask}` resets only the envs where `mask` (N,) bool is true.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int = 100,
        catalog: Catalog | None = None,
        config: SessionConfig | None = None,
        reward_fn: SlateRewardFn | None = None,
        num_items: int = DEFAULT_NUM_ITEMS,
        catalog_seed: int = 0,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    ) -> None:
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        mode = AutoresetMode(autoreset_mode)
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED):
            raise ValueError(
                f"autoreset_mode {mode.value!r} is not supported; use "
                f"{AutoresetMode.NEXT_STEP.value!r} or {AutoresetMode.DISABLED.value!r}"
            )
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.catalog = default_catalog(num_items, catalog_seed) if catalog is None else catalog
        self.config = SessionConfig() if config is None else config
        self.reward_fn = true_engagement_reward if reward_fn is None else reward_fn
        self.simulator = SessionSimulator(self.catalog, self.config, num_users=num_envs)
        self.single_observation_space = observation_space(self.catalog, self.config)
        self._batched_observation_space: spaces.Dict | None = None  # see observation_space
        self.single_action_space = action_space(self.catalog, self.config)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._context: dict[str, np.ndarray] | None = None  # (N, ...) answered next
        self._done = np.zeros(num_envs, dtype=bool)  # (N,) finished at the last step
        self._restarts: PendingReset | None = None  # the next step's new users, being drawn
        self._seeded = False

    @property
    def observation_space(self) -> spaces.Dict:
        """The batched observation space, built on first use: Gymnasium's Box keeps full
        bounds arrays, ~45 KB per env here (450 MB for 10,000 envs) that stepping never needs."""
        if self._batched_observation_space is None:
            self._batched_observation_space = batch_space(self.single_observation_space,
                                                          self.num_envs)
        return self._batched_observation_space

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        rows = np.arange(self.num_envs)
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"])
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), "
                    f"got {mask.dtype} {mask.shape}"
                )
            rows = np.flatnonzero(mask)
        if isinstance(seed, int | np.integer):
            super().reset(seed=int(seed))
            roots = seed_roots(int(seed) + rows)
        elif seed is not None:
            seeds = np.asarray(seed, dtype=np.int64)
            if seeds.shape != (self.num_envs,):
                raise ValueError(
                    f"seed must be an int or a list of {self.num_envs} ints, got {seed!r}"
                )
            roots = seed_roots(seeds[rows])
        elif not self._seeded:
            roots = self.np_random.integers(0, 2**63, size=rows.size, dtype=np.uint64)
        else:
            roots = None  # each env's next user
        self._seeded = True
        self._cancel_restarts()
        self.simulator.reset(rows, roots)
        self._done[rows] = False
        self._begin_restarts()
        self._context = self.simulator.observation()
        return self._context, {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._context is None:
            raise RuntimeError("call reset() before step() on OneRecVectorEnv")
        slates = validate_slate(actions, self.catalog.num_items, self.config.slate_size,
                                self.num_envs)  # (N, S)
        # envs that finished at the last step ignore their action and start a new user,
        # drawn since then (_begin_restarts)
        restarting = self._done if self._restarts is not None else np.zeros_like(self._done)
        result = self.simulator.step(slates)
        rewards = np.asarray(self.reward_fn(self._context, slates, result.feedback),
                             dtype=np.float64)  # (N,)
        terminated = result.outcome["left"] & ~restarting
        truncated = (self.simulator.state.request >= self.max_episode_steps) & ~restarting
        rewards = np.where(restarting, 0.0, rewards)
        info: dict[str, Any] = {name: np.where(restarting, 0, value)
                                for name, value in result.outcome.items()}
        info["left"] = terminated.copy()
        info.update(
            feedback=np.where(restarting[:, None, None], 0.0, result.feedback).astype(np.float32),
            shown=result.shown & ~restarting[:, None],
            duplicates=np.where(restarting, 0, result.duplicates),
            request=np.where(restarting, 0, self.simulator.state.request),  # new users: 0
        )
        restarts, self._restarts = self._restarts, None
        self._done = terminated | truncated
        self._begin_restarts()  # before writing this step's new users: no thread waits
        if restarts is not None:  # after all that needs no new user: their draws may run late
            self.simulator.finish_reset(restarts)
        self._context = self.simulator.observation()
        return self._context, rewards, terminated, truncated, info

    def _begin_restarts(self) -> None:
        """Start drawing the users that the next step starts (NEXT_STEP autoreset): they
        are known now, so their draws run beside this observation, the caller's work
        between the two steps and the next request, not after them."""
        if self.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP and self._done.any():
            self._restarts = self.simulator.begin_reset(np.flatnonzero(self._done))

    def _cancel_restarts(self) -> None:
        """Drop the drawn restarts (a `reset` replaces them): no episode was spent on them."""
        if self._restarts is not None:
            self.simulator.cancel_reset(self._restarts)
            self._restarts = None

    def close_extras(self, **kwargs: Any) -> None:
        self._cancel_restarts()
        self.simulator.close()
