"""`OneRecVectorEnv`: N users' sessions stepped together, with no Python loop over users.

Letters used in shape comments: N users (envs), S slate size, F feedback fields.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import error, spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.catalog import Catalog
from envs.session_env import (
    check_int,
    check_options,
    checked_rewards,
    checked_seed,
    checked_seed_list,
    env_world,
)
from envs.simulator import (
    DEFAULT_NUM_ITEMS,
    PendingReset,
    SessionConfig,
    SessionSimulator,
    SlateRewardFn,
    action_space,
    observation_space,
    validate_slate,
)
from envs.streams import seed_roots


class UsersVectorEnv(VectorEnv):
    """What the natively batched envs of N users share: Gymnasium's autoreset modes they
    support, the lazily batched observation space, and which users a reset restarts with
    which root keys. A subclass sets `num_envs`, `single_observation_space` and calls
    `set_autoreset_mode` in its constructor."""

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}
    _batched_observation_space: spaces.Dict | None = None
    _seeded = False

    def set_autoreset_mode(self, autoreset_mode: AutoresetMode | str) -> None:
        """NEXT_STEP or DISABLED (a ValueError naming any other)."""
        supported = (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED)
        if autoreset_mode not in supported + tuple(choice.value for choice in supported):
            raise ValueError(
                f"autoreset_mode {autoreset_mode!r} is not supported; use "
                f"{' or '.join(repr(choice.value) for choice in supported)} (AutoresetMode)"
            )
        self.metadata = {**self.metadata, "autoreset_mode": AutoresetMode(autoreset_mode)}

    @property
    def observation_space(self) -> spaces.Dict:
        """The batched observation space, built on first use: Gymnasium's Box keeps full
        bounds arrays, ~45 KB per env here (450 MB for 10,000 envs) that stepping never needs."""
        if self._batched_observation_space is None:
            self._batched_observation_space = batch_space(self.single_observation_space,
                                                          self.num_envs)
        return self._batched_observation_space

    def reset_rows(self, seed: int | list[int] | None, options: dict[str, Any] | None
                   ) -> tuple[np.ndarray, np.ndarray | None]:
        """The users a `reset(seed=..., options=...)` restarts (R,) and their root keys (R,)
        (None: each env's next user), with Gymnasium's seeding of the env. Env i of a seed s
        gets seed s + i; a list gives one seed per env; `options={"reset_mask": mask}`
        restarts only the envs where mask (N,) bool is true."""
        check_options(options, ("reset_mask",), f"{type(self).__name__}.reset")
        rows = np.arange(self.num_envs)
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"])
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), "
                    f"got {mask.dtype} {mask.shape}"
                )
            rows = np.flatnonzero(mask)
        if isinstance(seed, int | np.integer) and not isinstance(seed, bool):
            first = checked_seed(seed, self.num_envs)
            VectorEnv.reset(self, seed=first)
            roots = seed_roots(first + rows)
        elif seed is not None:
            roots = seed_roots(checked_seed_list(seed, self.num_envs)[rows])
        elif not self._seeded:
            roots = self.np_random.integers(0, 2**63, size=rows.size, dtype=np.uint64)
        else:
            roots = None  # each env's next user
        self._seeded = True
        return rows, roots


class OneRecVectorEnv(UsersVectorEnv):
    """N independent `OneRecSession` users as one natively batched vector env.

    Spaces, rewards and `info` keys are those of `OneRecSession` with a leading N (info
    values are arrays of shape (N,) or (N, S, F)), each key `k` with Gymnasium's mask
    `info["_k"]` (N,) bool: true where env i's entry is this step's answer, false where the
    env restarted (its entries are 0). Env i reset with `seed` (an int in [0, 2**63 - N])
    is exactly `OneRecSession` reset with `seed + i` (a list of N seeds gives one per env).
    Autoreset is Gymnasium's NEXT_STEP mode: the step after an env terminates or truncates
    ignores its action, starts its next user and returns reward 0; with
    `autoreset_mode=AutoresetMode.DISABLED` a finished env keeps stepping (its answers mean
    nothing) until `reset(options={"reset_mask": ...})` restarts it. Truncation at
    `max_episode_steps` requests is done here (a vector env has no `TimeLimit`).
    `options={"reset_mask": mask}` resets only the envs where `mask` (N,) bool is true; it
    is the only option. Bad arguments, seeds, options, actions or `reward_fn` outputs raise
    as in `OneRecSession` (a ValueError naming a wrong or out-of-range argument).
    """


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
        self.catalog, self.config, self.reward_fn = env_world(
            type(self).__name__, catalog, config, reward_fn, num_items, catalog_seed)
        check_int(type(self).__name__, "num_envs", num_envs, 1)
        check_int(type(self).__name__, "max_episode_steps", max_episode_steps, 1)
        self.set_autoreset_mode(autoreset_mode)
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.simulator = SessionSimulator(self.catalog, self.config, num_users=num_envs)
        self.single_observation_space = observation_space(self.catalog, self.config)
        self.single_action_space = action_space(self.catalog, self.config)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._context: dict[str, np.ndarray] | None = None  # (N, ...) answered next
        self._done = np.zeros(num_envs, dtype=bool)  # (N,) finished at the last step
        self._restarts: PendingReset | None = None  # the next step's new users, being drawn

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        rows, roots = self.reset_rows(seed, options)
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
            raise error.ResetNeeded("call reset() before step() on OneRecVectorEnv")
        slates = validate_slate(actions, self.catalog.num_items, self.config.slate_size,
                                self.num_envs)  # (N, S)
        # envs that finished at the last step ignore their action and start a new user,
        # drawn since then (_begin_restarts)
        restarting = self._done if self._restarts is not None else np.zeros_like(self._done)
        result = self.simulator.step(slates)
        output = self.reward_fn(self._context, slates, result.feedback)  # checked below
        terminated = result.outcome["left"] & ~restarting
        truncated = (self.simulator.state.request >= self.max_episode_steps) & ~restarting
        info: dict[str, Any] = {name: np.where(restarting, 0, value)
                                for name, value in result.outcome.items()}
        info["left"] = terminated.copy()
        info.update(
            feedback=np.where(restarting[:, None, None], 0.0, result.feedback).astype(np.float32),
            shown=result.shown & ~restarting[:, None],
            duplicates=np.where(restarting, 0, result.duplicates),
            request=np.where(restarting, 0, self.simulator.state.request),  # new users: 0
        )
        answered = ~restarting  # (N,) Gymnasium's `_key` masks: a restart has no step info
        info.update({f"_{name}": answered.copy() for name in list(info)})
        restarts, self._restarts = self._restarts, None
        self._done = terminated | truncated
        self._begin_restarts()  # before writing this step's new users: no thread waits
        if restarts is not None:  # after all that needs no new user: their draws may run late
            self.simulator.finish_reset(restarts)
        self._context = self.simulator.observation()
        # checked once the env is consistent, so an error leaves it steppable after a fix
        rewards = checked_rewards(output, self.reward_fn, self.num_envs, ignored=restarting)
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
