"""`OneRecVectorEnv`: registration, autoreset, and the same dynamics as the single env."""

from __future__ import annotations

import multiprocessing
import os
import threading
from multiprocessing.connection import Connection

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.catalog import CatalogConfig, generate_synthetic_catalog
from envs.session_env import OneRecSession
from envs.simulator import SessionConfig, SessionSimulator, SessionStart
from envs.streams import seed_roots
from envs.users import PopulationConfig
from envs.vector_env import OneRecVectorEnv

CATALOG = generate_synthetic_catalog(CatalogConfig(num_items=800, num_creators=100), seed=1)
SMALL = SessionConfig(population=PopulationConfig(warm_history=400))


def _slates(seed: int, steps: int, users: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1, CATALOG.num_items, size=(steps, users, 10))


def test_make_vec_returns_the_native_vector_env() -> None:
    vector = gym.make_vec(envs.ENV_ID, num_envs=3, catalog=CATALOG, config=SMALL)
    assert isinstance(vector.unwrapped, OneRecVectorEnv)
    assert vector.unwrapped.max_episode_steps == 100
    observation, _ = vector.reset(seed=0)
    assert observation["positive_feedback"].shape == (3, 256, 9)
    assert observation in vector.observation_space


def test_env_i_follows_the_single_env_reset_with_seed_plus_i() -> None:
    users, steps, seed = 3, 30, 40
    vector = OneRecVectorEnv(num_envs=users, max_episode_steps=6, catalog=CATALOG, config=SMALL)
    singles = [gym.wrappers.TimeLimit(OneRecSession(catalog=CATALOG, config=SMALL), 6)
               for _ in range(users)]
    vector_observation, _ = vector.reset(seed=seed)
    single_observations = [env.reset(seed=seed + i)[0] for i, env in enumerate(singles)]
    done = [False] * users
    restarts = 0
    for slate in _slates(seed, steps, users):
        vector_observation, rewards, terminated, truncated, info = vector.step(slate)
        for i, env in enumerate(singles):
            if done[i]:  # NEXT_STEP autoreset: this step starts the env's next user
                single_observations[i], _ = env.reset()
                assert rewards[i] == 0 and not terminated[i] and not truncated[i]
                done[i] = False
                restarts += 1
            else:
                single_observations[i], reward, single_terminated, single_truncated, single_info = (
                    env.step(slate[i]))
                assert rewards[i] == reward
                assert (terminated[i], truncated[i]) == (single_terminated, single_truncated)
                assert np.array_equal(info["feedback"][i], single_info["feedback"])
                assert info["true_watch_time"][i] == single_info["true_watch_time"]
                done[i] = single_terminated or single_truncated
            for key, value in single_observations[i].items():
                assert np.array_equal(vector_observation[key][i], value), key
    assert restarts >= users  # every env went through at least one autoreset


def test_same_seed_same_vector_rollout_and_list_seeds() -> None:
    traces = []
    for seed in (7, [7, 8]):
        vector = OneRecVectorEnv(num_envs=2, catalog=CATALOG, config=SMALL)
        observation, _ = vector.reset(seed=seed)
        trace = [observation["lifelong_items"]]
        for slate in _slates(1, 4, 2):
            observation, rewards, _, _, _ = vector.step(slate)
            trace += [observation["positive_items"], rewards]
        traces.append(trace)
    for a, b in zip(*traces, strict=True):
        assert np.array_equal(a, b)


def test_reset_mask_restarts_only_the_chosen_envs() -> None:
    vector = OneRecVectorEnv(num_envs=3, catalog=CATALOG, config=SMALL)
    vector.reset(seed=0)
    before, *_ = vector.step(np.arange(30).reshape(3, 10))
    after, _ = vector.reset(options={"reset_mask": np.array([False, True, False])})
    assert np.array_equal(after["positive_items"][0], before["positive_items"][0])
    assert not np.array_equal(after["lifelong_items"][1], before["lifelong_items"][1])
    assert vector.simulator.state.request.tolist() == [1, 0, 1]


def test_a_bad_batch_of_actions_is_a_value_error_naming_the_action() -> None:
    vector = OneRecVectorEnv(num_envs=2, catalog=CATALOG, config=SMALL)
    vector.reset(seed=0)
    with pytest.raises(ValueError, match="action .* shape"):
        vector.step(np.arange(10))
    with pytest.raises(ValueError, match="outside"):
        vector.step(np.full((2, 10), CATALOG.num_items))


def test_a_new_user_is_the_same_bits_whoever_starts_with_it() -> None:
    config = SessionConfig()  # the full 2,000-impression warm history: every k-means level runs
    together = SessionSimulator(CATALOG, config, num_users=5)
    together.reset(np.arange(5), seed_roots(np.arange(5)))
    batch = together.observation()
    for user in range(5):
        alone = SessionSimulator(CATALOG, config, num_users=1)
        alone.reset(np.array([0]), seed_roots(np.array([user])))
        for key, value in alone.observation().items():
            assert np.array_equal(batch[key][user], value[0]), key


def test_threads_and_pieces_of_a_reset_change_no_bit() -> None:
    rollouts = []
    for threads, chunk in ((1, 128), (3, 2)):  # no thread; three threads, pieces of 2 users
        config = SessionConfig(population=PopulationConfig(warm_history=400),
                               reset_threads=threads, reset_chunk=chunk)
        vector = OneRecVectorEnv(num_envs=7, max_episode_steps=3, catalog=CATALOG,
                                 config=config)
        observation, _ = vector.reset(seed=5)
        rollout = [observation]
        for slate in _slates(2, 8, 7):  # autoresets every few requests, drawn during a step
            observation, rewards, terminated, truncated, _ = vector.step(slate)
            rollout.append({**observation, "rewards": rewards, "done": terminated | truncated})
        vector.close()
        rollouts.append(rollout)
    for alone, threaded in zip(*rollouts, strict=True):
        for key, value in alone.items():
            assert np.array_equal(value, threaded[key]), key
    assert sum(step["done"].sum() for step in rollouts[0][1:]) >= 7  # users did restart


def test_a_reset_drops_the_restarts_drawn_ahead_and_starts_each_next_user() -> None:
    users = 3
    vector = OneRecVectorEnv(num_envs=users, max_episode_steps=2, catalog=CATALOG, config=SMALL)
    singles = [OneRecSession(catalog=CATALOG, config=SMALL) for _ in range(users)]
    vector.reset(seed=9)
    for i, env in enumerate(singles):
        env.reset(seed=9 + i)
    for slate in _slates(3, 2, users):
        _, _, _, truncated, _ = vector.step(slate)
        for i, env in enumerate(singles):
            env.step(slate[i])
    assert truncated.all()  # the three restarts are being drawn for the next step
    observation, _ = vector.reset()  # replaces them: one new episode per env, not two
    for i, env in enumerate(singles):
        for key, value in env.reset()[0].items():
            assert np.array_equal(observation[key][i], value), key
    _, rewards, _, _, info = vector.step(_slates(4, 1, users)[0])
    assert info["request"].tolist() == [1] * users  # answered, not restarted
    assert (rewards != 0).any()
    vector.close()


def _step_in_child(vector: OneRecVectorEnv, slate: np.ndarray, pipe: Connection) -> None:
    pipe.send(vector.step(slate)[0]["lifelong_items"])


def test_a_forked_process_draws_the_restarts_its_parent_began() -> None:
    vector = OneRecVectorEnv(num_envs=4, max_episode_steps=1, catalog=CATALOG, config=SMALL)
    vector.reset(seed=2)
    parent, released = os.getpid(), threading.Event()
    draw = vector.simulator._draw_sessions

    def held_in_parent(keys: np.ndarray) -> SessionStart:  # in flight until the fork is done
        if os.getpid() == parent:
            released.wait()
        return draw(keys)

    vector.simulator._draw_sessions = held_in_parent
    first, second = _slates(5, 2, 4)
    vector.step(first)  # every env truncated: its next user is being drawn in threads
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_step_in_child, args=(vector, second, send))
    child.start()
    answered = receive.poll(30)
    released.set()
    if not answered:
        child.kill()
    child.join()
    assert answered, "the forked process waited for threads it does not have"
    assert np.array_equal(receive.recv(), vector.step(second)[0]["lifelong_items"])
    vector.close()
