"""The world the alignment studies share, and how a study trains and measures a policy.

A study world is the quickstart's world (`onerec-lab quickstart`), built once and cached:
the synthetic catalog, balanced RQ-Kmeans semantic IDs, logged sessions of the cascade (the
production-style logging policy, fitted on popularity-policy logs), a tiny OneRec pre-trained
on those logs, and the P-score fitted on them. Every run of a study starts from that one
pre-trained checkpoint, and every policy is evaluated in the simulator on the same users with
the TRUE outcome (`trainers.evaluate`), the proxy reward measured beside it.

    world = build_world(WorldConfig(), "runs/studies/world")
    study = Study(world, eval_users=100)
    policy, history = study.train("ecpo", "pscore + 0.5*format", seed=0, max_steps=30)
    figures = study.evaluate_policy(policy)

Names of methods and settings are the lab's (`onerec-lab align`): rsft, grpo, ecpo, dr_grpo,
dpo, with `trainers.grpo.GRPOConfig` / `RSFTConfig` / `DPOConfig` overrides by keyword.
"""

from __future__ import annotations

import copy
import json
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs.catalog import CatalogConfig, generate_synthetic_catalog
from envs.logs import LoggedSessions
from onerec_lab.args import add_dataclass_arguments, build_from_namespace
from onerec_lab.commands.pretrain import PretrainArgs
from onerec_lab.commands.pretrain import run as run_pretrain
from onerec_lab.commands.quickstart import QuickstartArgs, logged_sessions, semantic_ids
from onerec_lab.commands.reward import RewardFitArgs, run_fit
from policies.baselines import PopularRecommender, RandomRecommender
from policies.cascade import CascadeRecommender
from policies.interface import Recommender
from policies.onerec import OneRecPolicy
from rewards import PScoreModel, build, load_pscore
from trainers.dpo import DPOConfig, DPOTrainer
from trainers.evaluate import EvaluationConfig, OneRecRecommender, evaluate
from trainers.grpo import GRPOConfig, GRPOTrainer
from trainers.online import OnlineTrainer
from trainers.pretrain import CHECKPOINT_FILE, load_policy
from trainers.pretrain_data import LoggedExamples
from trainers.rsft import RSFTConfig, RSFTTrainer

WORLD_FILE = "world.json"  # the WorldConfig a cached world was built with
BASELINES = ("random", "popular", "cascade")
RL_METHODS = ("rsft", "grpo", "ecpo", "dr_grpo", "dpo")


@dataclass(frozen=True)
class WorldConfig:
    """Sizes of a study world; the defaults are the quickstart's (QuickstartArgs)."""

    items: int = QuickstartArgs.items  # synthetic catalog
    codebook: int = QuickstartArgs.codebook  # codes per level (3 levels)
    embedding_steps: int = QuickstartArgs.embedding_steps  # item-embedding steps
    log_users: int = QuickstartArgs.log_users  # users per logging round
    log_requests: int = QuickstartArgs.log_requests  # most requests per logged session
    pretrain_steps: int = QuickstartArgs.pretrain_steps  # next-token steps of the checkpoint
    pscore_epochs: int = QuickstartArgs.pscore_epochs  # P-score passes over the logs
    seed: int = 0  # seeds every stage

    def quickstart_args(self, out: Path) -> QuickstartArgs:
        return QuickstartArgs(out=str(out), items=self.items, codebook=self.codebook,
                              embedding_steps=self.embedding_steps, log_users=self.log_users,
                              log_requests=self.log_requests, pretrain_steps=self.pretrain_steps,
                              pscore_epochs=self.pscore_epochs, seed=self.seed)


def build_world(config: WorldConfig, folder: str | Path) -> Path:
    """Build the world into `folder` (or reuse it when it was built with the same config)."""
    folder = Path(folder)
    marker = folder / WORLD_FILE
    if marker.is_file():
        built = json.loads(marker.read_text())
        if built != asdict(config):
            raise ValueError(
                f"{folder} holds a world built with {built}, not {asdict(config)}; pass another "
                "work folder or delete that one"
            )
        return folder
    # Each stage is skipped when its output is there: an interrupted build resumes.
    args = config.quickstart_args(folder)
    logs_dir = folder / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    catalog = generate_synthetic_catalog(CatalogConfig(num_items=config.items), config.seed)
    if not (logs_dir / "codec.safetensors").is_file():
        semantic_ids(args, catalog, logs_dir)
    if not ((logs_dir / "sessions.npz").is_file() and (folder / "cascade.pt").is_file()):
        logged_sessions(args, catalog, logs_dir, folder)
    # Resumes an interrupted pre-training; returns at once when it is complete.
    run_pretrain(PretrainArgs(out=str(folder / "pretrained"), logs=str(logs_dir), preset="tiny",
                              steps=config.pretrain_steps, seed=config.seed, json=True))
    if not (logs_dir / "pscore").is_dir():
        run_fit(RewardFitArgs(logs=str(logs_dir), out=str(logs_dir / "pscore"),
                              seed=config.seed, epochs=config.pscore_epochs, json=True))
    marker.write_text(json.dumps(asdict(config), indent=2))  # last: a complete world only
    return folder


class Study:
    """The cached world loaded once; training and evaluation of policies in it."""

    def __init__(self, world: str | Path, eval_users: int = 100, eval_requests: int = 20,
                 eval_seed: int | None = None, proxy_spec: str = "pscore + 0.5*format") -> None:
        self.world = Path(world)
        self.logs = LoggedSessions.load(self.world / "logs")
        self.catalog = self.logs.catalog
        self.session_config = self.logs.session_config()
        self.start = load_policy(self.world / "pretrained" / CHECKPOINT_FILE)
        self.pscore = load_pscore(self.world / "logs" / "pscore")
        self.examples = LoggedExamples(self.logs)
        self.proxy_spec = proxy_spec
        defaults = EvaluationConfig()
        self.evaluation = EvaluationConfig(
            users=eval_users, max_requests=eval_requests,
            seed=defaults.seed if eval_seed is None else eval_seed)

    def reward_resources(self, pscore: PScoreModel | None = None) -> dict[str, Any]:
        """What `rewards.build` needs here: the world's P-score (or `pscore`), the catalog."""
        return {"pscore_model": self.pscore if pscore is None else pscore,
                "catalog": self.catalog}

    def evaluate(self, recommender: Recommender,
                 pscore: PScoreModel | None = None) -> dict[str, Any]:
        """True outcome of `recommender` on the study's users, and the proxy spec's reward
        of the served slates (with the world's P-score, or `pscore`)."""
        proxy = build(self.proxy_spec, codec=self.start.codec, **self.reward_resources(pscore))
        return evaluate(recommender, self.catalog, self.session_config, self.evaluation, proxy)

    def evaluate_policy(self, policy: OneRecPolicy, candidates: int = 20,
                        pscore: PScoreModel | None = None) -> dict[str, Any]:
        """A OneRec policy served by unconstrained beam search (top slate of `candidates`)."""
        return self.evaluate(OneRecRecommender(policy.cpu(), self.session_config.slate_size,
                                               candidates), pscore)

    def baseline(self, name: str) -> Recommender:
        """random, popular or the cascade that logged the world's sessions."""
        slate = self.session_config.slate_size
        if name == "random":
            return RandomRecommender(self.catalog.num_items, slate)
        if name == "popular":
            return PopularRecommender(self.catalog.popularity, slate)
        if name == "cascade":
            return CascadeRecommender.load(self.world / "cascade.pt")
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")

    def train(self, method: str, reward: str, seed: int, start: OneRecPolicy | None = None,
              pscore: PScoreModel | None = None,
              **settings: Any) -> tuple[OneRecPolicy, list[dict[str, float]]]:
        """`method` on `reward` from the pre-trained policy (or `start`), with the world's
        P-score (or `pscore`); returns the trained policy and every step's metrics.
        `settings` are the method's config fields."""
        if method not in RL_METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(RL_METHODS)}")
        settings = {"progress": False, "seed": seed, **settings}
        trainer_class: type[OnlineTrainer]
        if method == "rsft":
            config: Any = RSFTConfig(**settings)
            trainer_class = RSFTTrainer
        elif method == "dpo":
            config, trainer_class = DPOConfig(**settings), DPOTrainer
        else:
            config, trainer_class = GRPOConfig(loss_type=method, **settings), GRPOTrainer
        policy = copy.deepcopy(self.start if start is None else start)
        trainer = trainer_class(policy, reward, self.reward_resources(pscore), self.catalog,
                                self.session_config, config, self.examples)
        return policy, trainer.train().history


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample std (0 for one value), min, max and count of a study's per-seed figures."""
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()),
            "std": float(array.std(ddof=1)) if array.size > 1 else 0.0,
            "min": float(array.min()), "max": float(array.max()), "n": int(array.size)}


def study_machine(per_worker: bool = False) -> str:
    """The machine line of a study's result: architecture, Python, torch, torch threads."""
    return (f"{platform.machine()}, {platform.python_version()}, torch {torch.__version__}, "
            f"1 thread{' per worker' if per_worker else ''}")


def write_study(folder: str, name: str, preset: str, result: dict[str, Any],
                plot: Callable[[Path], None], markdown: Callable[[str], str]) -> Path:
    """Write a study's `<name><suffix>.json` (`result`), `.png` (`plot(path)`) and `.md`
    (`markdown(suffix)`) under `folder`; the suffix is empty for the full preset and
    `_<preset>` otherwise, so a smoke run keeps the measured files. Returns the .md path."""
    results = Path(folder)
    results.mkdir(parents=True, exist_ok=True)
    suffix = "" if preset == "full" else f"_{preset}"
    (results / f"{name}{suffix}.json").write_text(json.dumps(result, indent=2, default=float))
    plot(results / f"{name}{suffix}.png")
    (results / f"{name}{suffix}.md").write_text(markdown(suffix))
    return results / f"{name}{suffix}.md"


def study_main(module: str, description: str, args_class: type, run: Callable[[Any], dict],
               argv: list[str] | None) -> int:
    """`python -m benchmarks.<study>`: arguments from `args_class`, then `run`; prints the
    result as JSON with --json, else the markdown report at `result["results"]`."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    add_dataclass_arguments(parser, args_class)
    args = build_from_namespace(args_class, parser.parse_args(argv))
    result = run(args)
    print(json.dumps(result, indent=2, default=float) if args.json
          else Path(result["results"]).read_text())
    return 0
