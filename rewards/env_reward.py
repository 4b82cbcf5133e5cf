"""Any reward as the simulator's `reward_fn`, so an env can pay out a P-score or a spec.

`envs.simulator.SlateRewardFn` is `fn(observation, slate, feedback) -> (N,)`: the observation
the slate answered, the slate of item ids and the true per-item feedback. `EnvReward` wraps a
`RewardModel` into that convention (the feedback is attached, so `oracle` works too):

    env = OneRecVectorEnv(num_envs=64, reward_fn=EnvReward(build("pscore", pscore_model=m)))

Letters used in shape comments: N users (envs), S slate, F feedback fields.
"""

from __future__ import annotations

import numpy as np

from rewards.protocol import RewardInput, RewardModel


class EnvReward:
    """`fn(observation, slate (N, S), feedback (N, S, F)) -> rewards (N,) float64`."""

    def __init__(self, reward: RewardModel) -> None:
        self.reward = reward

    def __call__(
        self, observation: dict[str, np.ndarray], slate: np.ndarray, feedback: np.ndarray
    ) -> np.ndarray:
        batch = RewardInput(items=slate, context=observation, feedback=feedback)
        return self.reward(batch).total.double().cpu().numpy()  # (N,)
