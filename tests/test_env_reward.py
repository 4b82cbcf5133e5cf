"""Rewards against the real simulator: the oracle is its truth, any reward can pay out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.simulator import default_catalog
from envs.vector_env import OneRecVectorEnv
from rewards import EnvReward, PScoreConfig, PScoreModel, RewardInput, build
from tests.test_reward_doubles import single_threaded_torch  # noqa: F401

CATALOG = default_catalog(num_items=800, seed=0)


def slates(env: OneRecVectorEnv, seed: int) -> np.ndarray:
    """Random slates with a repeated item and a blank, which the simulator does not show."""
    rng = np.random.default_rng(seed)
    slate = rng.integers(0, CATALOG.num_items, size=(env.num_envs, env.config.slate_size))
    slate[0, 1] = slate[0, 0]
    slate[1, 2] = -1
    return slate


@pytest.fixture(scope="module")
def model() -> PScoreModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return PScoreModel(PScoreConfig.from_catalog(CATALOG, embed_dim=8, hidden_dim=16)).eval()


def test_oracle_is_the_simulators_true_engagement_and_shown_slots_agree() -> None:
    env = OneRecVectorEnv(num_envs=6, max_episode_steps=3, catalog=CATALOG)
    observation, _ = env.reset(seed=0)
    slate = slates(env, 0)
    _, rewards, _, _, info = env.step(slate)
    batch = RewardInput(items=slate, context=observation, feedback=info["feedback"])
    oracle = build("oracle")(batch).total.double().numpy()
    np.testing.assert_allclose(oracle * env.config.slate_size, info["true_engagement"], rtol=1e-5)
    np.testing.assert_allclose(oracle * env.config.slate_size, rewards, rtol=1e-5)
    np.testing.assert_array_equal(batch.shown.numpy(), info["shown"])
    watch = build("oracle(field='watch_time')")(batch).total.double().numpy()
    np.testing.assert_allclose(watch * env.config.slate_size, info["true_watch_time"], rtol=1e-5)


def test_the_env_pays_out_any_built_reward(model: PScoreModel) -> None:
    reward = build(
        "business(pscore, alpha=0.5, f=0.1) + 0.5*format", pscore_model=model, catalog=CATALOG
    )
    env = OneRecVectorEnv(
        num_envs=4, max_episode_steps=3, catalog=CATALOG, reward_fn=EnvReward(reward)
    )
    observation, _ = env.reset(seed=1)
    slate = slates(env, 1)
    _, rewards, _, _, _ = env.step(slate)
    assert rewards.shape == (4,) and rewards.dtype == np.float64
    expected = reward(RewardInput(items=slate, context=observation)).total.double().numpy()
    np.testing.assert_allclose(rewards, expected, rtol=1e-6)
