"""`OneRecDays` and `OneRecDaysVectorEnv`: one user's (or N users') days as Gymnasium envs.

Letters used in shape comments: N users (envs), S slate size, F feedback fields.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import error
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from envs.catalog import Catalog
from envs.days import DaysConfig, DaysSimulator, DaysStep
from envs.session_env import (
    check_int,
    check_options,
    checked_rewards,
    env_world,
    single_user_roots,
)
from envs.simulator import (
    DEFAULT_NUM_ITEMS,
    SessionConfig,
    SlateRewardFn,
    action_space,
    observation_space,
    validate_slate,
)
from envs.vector_env import UsersVectorEnv

_ONE_USER = np.zeros(1, dtype=np.int64)


def _check_days_config(owner: str, days_config: object) -> DaysConfig:
    if days_config is None:
        return DaysConfig()
    if not isinstance(days_config, DaysConfig):
        raise ValueError(f"{owner} days_config must be an envs.days.DaysConfig or None, got "
                         f"{type(days_config).__name__}")
    return days_config


def step_info(step: DaysStep, simulator: DaysSimulator) -> dict[str, np.ndarray]:
    """The info of a days step for every user (N,) or (N, S, F): the request's oracle and
    feedback as the session env gives them, then what followed the session and the
    long-term truth so far (module docstring of `OneRecDays`)."""
    result = step.session
    info: dict[str, Any] = dict(result.outcome)
    info.update(
        feedback=result.feedback, shown=result.shown, duplicates=result.duplicates,
        request=simulator.session_request.copy(),
        session_end=step.session_end, gap_days=step.gap_days, churned=step.churned,
        new_session=step.new_session, day=simulator.clock.copy(),
        session=simulator.session_index.copy(),
    )
    long_term = simulator.long_term()
    info.update({f"horizon_{name}": value for name, value in long_term.items()
                 if name not in ("day",)})
    return info


class OneRecDays(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """## Description

    One user of a short-video app over `days_config.days` days (default 7): the requests of
    every session, the gaps between sessions, and whether the user comes back. Each step is
    one request, answered exactly as in `OneRec/Session-v0`; the first session of a user is
    request for request the session env's user of the same seed. A session ends when the
    user leaves (patience) or after `days_config.session_requests` requests; the return model
    (`envs.retention`: faster returns after sessions with more watch time, likes rather than
    hates, variety, and a topic mix not already seen in earlier sessions; churn rarer after
    pleasant ones) draws the gap, and the next step opens the user's next session: the same
    pathways (histories carry over), interests after a slow drift, fresh patience, fatigue
    carried from earlier sessions' topics.

    ## Action and Observation Spaces

    Those of `OneRec/Session-v0` (its docstring): a slate of item ids, OneRec's pathways.

    ## Rewards

    `reward_fn(observation, slate, feedback)` per request, as in the session env (default:
    the slate's true engagement). `info` holds the request's oracle (`true_watch_time`, ...,
    `left`: the session ended by leaving), `feedback`, `shown`, `duplicates`, `request`
    (requests of this session), `session_end`, `gap_days` (days until the next session; inf
    after churn; 0 where the session goes on), `churned`, `new_session`, `day` (days since
    the episode began, at the current session's start or after the last gap), `session` (index
    of the current session), and the long-term truth so far: `horizon_watch_s`,
    `horizon_sessions`, `horizon_returns`, `horizon_active_days`, `horizon_next_day`.

    ## Episode End

    Terminated: the user churned (never comes back). Truncated: the next session would
    start after the horizon. A step after either raises `gymnasium.error.ResetNeeded`.

    ## Arguments

    `gymnasium.make("OneRec/Days-v0", catalog=None, config=None, days_config=None,
    reward_fn=None, num_items=5000, catalog_seed=0)`; seeds as the session env's: user i of
    `gymnasium.make_vec("OneRec/Days-v0", num_envs=n)` reset with seed s is this env reset
    with seed s + i.

    ## Version History

    * v0: initial version.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        catalog: Catalog | None = None,
        config: SessionConfig | None = None,
        days_config: DaysConfig | None = None,
        reward_fn: SlateRewardFn | None = None,
        num_items: int = DEFAULT_NUM_ITEMS,
        catalog_seed: int = 0,
    ) -> None:
        self.catalog, self.config, self.reward_fn = env_world(
            type(self).__name__, catalog, config, reward_fn, num_items, catalog_seed)
        self.days_config = _check_days_config(type(self).__name__, days_config)
        self.simulator = DaysSimulator(self.catalog, self.config, self.days_config, 1)
        self.observation_space = observation_space(self.catalog, self.config)
        self.action_space = action_space(self.catalog, self.config)
        self._context: dict[str, np.ndarray] | None = None
        self._over = False
        self._seeded = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        check_options(options, (), "OneRecDays.reset")
        roots = single_user_roots(self, seed, self._seeded)
        self._seeded = True
        self.simulator.reset(_ONE_USER, roots)
        self._context = self.simulator.observation()
        self._over = False
        return {name: value[0] for name, value in self._context.items()}, {}

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._context is None:
            raise gym.error.ResetNeeded("call reset() before step() on OneRecDays")
        if self._over:
            raise gym.error.ResetNeeded("episode ended (the user churned or the horizon was "
                                        "reached); call reset() before step()")
        slate = validate_slate(action, self.catalog.num_items, self.config.slate_size, None)
        step = self.simulator.step(slate)
        output = self.reward_fn(self._context, slate, step.session.feedback)
        self._context = self.simulator.observation()
        terminated, truncated = bool(step.churned[0]), bool(step.horizon_end[0])
        self._over = terminated or truncated
        info = {name: value[0].item() if value.ndim == 1 else value[0]
                for name, value in step_info(step, self.simulator).items()}
        reward = float(checked_rewards(output, self.reward_fn, 1)[0])
        return ({name: value[0] for name, value in self._context.items()}, reward, terminated,
                truncated, info)

    def close(self) -> None:
        self.simulator.close()


class OneRecDaysVectorEnv(UsersVectorEnv):
    """N independent `OneRecDays` users as one natively batched vector env.

    Spaces, rewards and `info` keys are those of `OneRecDays` with a leading N, each key `k`
    with Gymnasium's mask `info["_k"]`: false where env i restarted at this step. Env i reset
    with `seed` is `OneRecDays` reset with `seed + i`. Autoreset is Gymnasium's NEXT_STEP
    mode (the step after an episode ends ignores that env's action, starts its next user and
    returns reward 0), or DISABLED (a finished env keeps stepping, its answers meaningless,
    until `reset(options={"reset_mask": mask})`).
    """

    def __init__(
        self,
        num_envs: int = 1,
        catalog: Catalog | None = None,
        config: SessionConfig | None = None,
        days_config: DaysConfig | None = None,
        reward_fn: SlateRewardFn | None = None,
        num_items: int = DEFAULT_NUM_ITEMS,
        catalog_seed: int = 0,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    ) -> None:
        owner = type(self).__name__
        self.catalog, self.config, self.reward_fn = env_world(
            owner, catalog, config, reward_fn, num_items, catalog_seed)
        check_int(owner, "num_envs", num_envs, 1)
        self.set_autoreset_mode(autoreset_mode)
        self.num_envs = num_envs
        self.days_config = _check_days_config(owner, days_config)
        self.simulator = DaysSimulator(self.catalog, self.config, self.days_config, num_envs)
        self.single_observation_space = observation_space(self.catalog, self.config)
        self.single_action_space = action_space(self.catalog, self.config)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._context: dict[str, np.ndarray] | None = None
        self._done = np.zeros(num_envs, dtype=bool)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        rows, roots = self.reset_rows(seed, options)
        self.simulator.reset(rows, roots)
        self._done[rows] = False
        self._context = self.simulator.observation()
        return self._context, {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._context is None:
            raise error.ResetNeeded("call reset() before step() on OneRecDaysVectorEnv")
        slates = validate_slate(actions, self.catalog.num_items, self.config.slate_size,
                                self.num_envs)  # (N, S)
        restarting = (self._done.copy() if self.metadata["autoreset_mode"]
                      == AutoresetMode.NEXT_STEP else np.zeros_like(self._done))
        step = self.simulator.step(slates)
        output = self.reward_fn(self._context, slates, step.session.feedback)
        terminated = step.churned & ~restarting
        truncated = step.horizon_end & ~restarting
        info = {name: np.where(restarting.reshape(-1, *([1] * (value.ndim - 1))),
                               np.zeros((), dtype=value.dtype), value)  # dtype kept
                for name, value in step_info(step, self.simulator).items()}
        answered = ~restarting
        info.update({f"_{name}": answered.copy() for name in list(info)})
        self._done = terminated | truncated
        if restarting.any():  # after this step's answers: a new user for each finished env
            self.simulator.reset(np.flatnonzero(restarting))
        self._context = self.simulator.observation()
        rewards = checked_rewards(output, self.reward_fn, self.num_envs, ignored=restarting)
        return self._context, rewards, terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        self.simulator.close()
