"""Simulator throughput, native vector env against SyncVectorEnv (`onerec-lab bench env`).

Both runs serve the same users (same seed) the same popularity-policy slates, with all four
pathways in every observation and autoresets included (a new user costs a warm history of
2,000 impressions and its lifelong k-means). The reference is Gymnasium's
`SyncVectorEnv` over single `OneRecSession` envs (each behind `TimeLimit`), the way any
non-native env would be vectorised.
"""

from __future__ import annotations

import resource
import time
import tracemalloc
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from envs.catalog import Catalog
from envs.logging_policies import PopularPolicy
from envs.session_env import OneRecSession
from envs.simulator import SessionConfig
from envs.users import PopulationConfig
from envs.vector_env import OneRecVectorEnv
from onerec_lab.experiment.world import make_catalog

MAX_REQUESTS = 100  # episode limit of both envs (OneRec/Session-v0's max_episode_steps)


@dataclass
class BenchEnvArgs:
    """Arguments of `onerec-lab bench env`."""

    users: int = 1024  # concurrent users (envs)
    slate: int = 10  # items per request
    steps: int = 50  # timed requests of the native vector env
    reference_steps: int | None = None  # timed requests of the SyncVectorEnv (default: --steps)
    items: int = 5000  # items of the synthetic catalog
    kuairand: str | None = None  # folder with KuaiRand-Pure's CSVs: a calibrated catalog instead
    seed: int = 0  # users and slates
    warm_history: int = 2000  # past impressions per new user: resets cost ~linear in it
    memory_users: int = 0  # also measure peak memory with this many concurrent users (0: skip)
    json: bool = False  # print the result as JSON

    def __post_init__(self) -> None:
        if self.reference_steps is None:
            self.reference_steps = self.steps
        for name in ("users", "slate", "steps", "reference_steps", "items", "warm_history"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be >= 1, got {getattr(self, name)}")
        if self.memory_users < 0:
            raise ValueError(f"--memory-users must be >= 0, got {self.memory_users}")


def _slates(catalog: Catalog, users: int, slate: int, steps: int, seed: int) -> list[np.ndarray]:
    policy = PopularPolicy(catalog, slate_size=slate)
    rng = np.random.default_rng(seed)
    stub = {"static": np.zeros((users, 1), dtype=np.int64)}
    return [policy.act(stub, rng) for _ in range(steps)]


def _timed_steps(env: gym.vector.VectorEnv, slates: list[np.ndarray]) -> dict[str, float]:
    impressions = finished = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for slate in slates:
        _, _, terminated, truncated, info = env.step(slate)
        impressions += int(np.sum(info["shown"]))
        finished += int(np.sum(terminated | truncated))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"impressions": impressions, "seconds": wall, "cpu_seconds": cpu,
            "impressions_per_s": impressions / wall, "sessions_ended": finished}


def measure_memory(catalog: Catalog, config: SessionConfig, users: int, seed: int) -> dict:
    """Peak traced memory (numpy buffers included) of `users` concurrent users: build,
    reset and two requests."""
    tracemalloc.start()
    env = OneRecVectorEnv(num_envs=users, max_episode_steps=MAX_REQUESTS, catalog=catalog,
                          config=config)
    env.reset(seed=seed)
    for slate in _slates(catalog, users, config.slate_size, 2, seed):
        env.step(slate)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    env.close()
    return {"users": users, "peak_traced_mib": peak / 2**20, "held_mib": current / 2**20,
            "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10}


def run(args: BenchEnvArgs) -> dict:
    """Time the native vector env and the SyncVectorEnv reference on the same users."""
    catalog = make_catalog(args.items, args.seed, args.kuairand)
    config = SessionConfig(slate_size=args.slate,
                           population=PopulationConfig(warm_history=args.warm_history))
    slates = _slates(catalog, args.users, args.slate, max(args.steps, args.reference_steps),
                     args.seed)

    native = OneRecVectorEnv(num_envs=args.users, max_episode_steps=MAX_REQUESTS,
                             catalog=catalog, config=config)
    reset_started = time.perf_counter()
    native.reset(seed=args.seed)
    native_reset = time.perf_counter() - reset_started
    native_run = _timed_steps(native, slates[:args.steps])
    native.close()

    reference = gym.vector.SyncVectorEnv([
        lambda: gym.wrappers.TimeLimit(OneRecSession(catalog=catalog, config=config),
                                       MAX_REQUESTS)
        for _ in range(args.users)
    ])
    reset_started = time.perf_counter()
    reference.reset(seed=args.seed)
    reference_reset = time.perf_counter() - reset_started
    reference_run = _timed_steps(reference, slates[:args.reference_steps])
    reference.close()
    same_window = native_run
    if args.reference_steps != args.steps:  # compare like with like: the same first requests
        again = OneRecVectorEnv(num_envs=args.users, max_episode_steps=MAX_REQUESTS,
                                catalog=catalog, config=config)
        again.reset(seed=args.seed)
        same_window = _timed_steps(again, slates[:args.reference_steps])
        again.close()

    result = {
        "users": args.users, "slate": args.slate, "steps": args.steps,
        "warm_history": args.warm_history,
        "reference_steps": args.reference_steps,
        "impressions_per_s": native_run["impressions_per_s"],
        "native_cpu_impressions_per_s": native_run["impressions"] / native_run["cpu_seconds"],
        "native_sessions_ended_per_step": native_run["sessions_ended"] / args.steps,
        "native_reset_seconds": native_reset,
        "reference_impressions_per_s": reference_run["impressions_per_s"],
        "reference_reset_seconds": reference_reset,
        "native_impressions_per_s_same_steps": same_window["impressions_per_s"],
        "speedup": same_window["impressions_per_s"] / reference_run["impressions_per_s"],
        # CPU time is what a shared machine cannot steal: the steadier comparison
        "reference_cpu_impressions_per_s": (reference_run["impressions"]
                                            / reference_run["cpu_seconds"]),
        "speedup_cpu": ((same_window["impressions"] / same_window["cpu_seconds"])
                        / (reference_run["impressions"] / reference_run["cpu_seconds"])),
    }
    if args.memory_users:
        result["memory"] = measure_memory(catalog, config, args.memory_users, args.seed)
    return result
