"""How a study trains and measures policies in its world (the experiment layer's).

A study world is the quickstart's world (`onerec_lab.experiment.build_world`), built once
per preset under `--work` and cached stage by stage: the synthetic catalog, balanced
RQ-Kmeans semantic IDs, logged sessions of the cascade, a tiny OneRec pre-trained on them and
the P-score fitted on them. Every run of a study starts from that one pre-trained checkpoint,
and every policy is evaluated in the simulator on the same users with the TRUE outcome, the
proxy reward measured beside it.

    world = build_world(WorldConfig(), "runs/studies/world")
    study = Study(world, eval_users=100)
    policy, history = study.train("ecpo", "pscore + 0.5*format", seed=0, max_steps=30)
    figures = study.evaluate_policy(policy)

Methods are the registry's (`onerec_lab.experiment.methods`: rsft, rwsft, grpo, ecpo, gbpo,
dr_grpo, dapo, bnpo, cispo, sapo, feedback_rl, dpo and any plugin's), with their config fields
as keywords. A study keeps its figures as the JSON dicts of `trainers.evaluate.Evaluation`
(what its result files hold).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from envs.files import atomic_write_text
from onerec_lab.args import add_dataclass_arguments, build_from_namespace
from onerec_lab.cli import DEBUG_VARIABLE, error_line
from onerec_lab.experiment import EvaluationConfig, World, align, evaluate, open_world, recommender
from onerec_lab.experiment.evaluation import PROXY, Policy
from onerec_lab.experiment.machine import cpu_model
from onerec_lab.experiment.plugins import load_command_plugins
from policies.interface import Recommender
from policies.onerec import OneRecPolicy
from rewards import PScoreModel

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class WorldStudyArgs:
    """Options of every study that runs in the alignment study's cached world."""

    preset: Literal["full", "smoke"] = "full"  # full: the measured study; smoke: seconds to minutes
    work: str = "runs/studies"  # cache of the study world (built once per preset, shared)
    results: str = str(RESULTS)  # where the study's .md, .json and .png files are written
    json: bool = False  # print the summary as one JSON object


class Study:
    """A world loaded once; training and evaluation of policies in it."""

    def __init__(self, world: World | str | Path, eval_users: int = 100, eval_requests: int = 20,
                 eval_seed: int | None = None, proxy_spec: str = PROXY) -> None:
        self.world = world if isinstance(world, World) else open_world(world)
        self.catalog = self.world.catalog
        self.session_config = self.world.session_config
        self.start = self.world.pretrained
        self.proxy_spec = proxy_spec
        defaults = EvaluationConfig()
        self.evaluation = EvaluationConfig(
            users=eval_users, max_requests=eval_requests,
            seed=defaults.seed if eval_seed is None else eval_seed)

    def reward_resources(self, pscore: PScoreModel | None = None) -> dict[str, Any]:
        """What `rewards.build` needs here: the world's P-score (or `pscore`), the catalog."""
        return self.world.reward_resources(pscore)

    def evaluate(self, policy: Policy, pscore: PScoreModel | None = None) -> dict[str, Any]:
        """True outcome of `policy` (a recommender, a OneRec policy served by unconstrained
        beam search, a baseline name) on the study's users, and the proxy spec's reward of the
        served slates (with the world's P-score, or `pscore`)."""
        return evaluate(self.world, policy, self.evaluation, self.proxy_spec, pscore).to_dict()

    def evaluate_policy(self, policy: OneRecPolicy, candidates: int = 20,
                        pscore: PScoreModel | None = None) -> dict[str, Any]:
        """A OneRec policy served by unconstrained beam search (top slate of `candidates`)."""
        return self.evaluate(recommender(self.world, policy, candidates), pscore)

    def baseline(self, name: str) -> Recommender:
        """random, popular or the cascade that logged the world's sessions."""
        return recommender(self.world, name)

    def train(self, method: str, reward: str, seed: int, start: OneRecPolicy | None = None,
              pscore: PScoreModel | None = None, oracle: bool = False,
              **settings: Any) -> tuple[OneRecPolicy, list[dict[str, float]]]:
        """`method` on `reward` from the pre-trained policy (or `start`), with the world's
        P-score (or `pscore`); returns the trained policy and every step's metrics.
        `settings` are the method's config fields; `oracle` declares an oracle run."""
        result = align(self.world, method, reward, start=self.start if start is None else start,
                       pscore=pscore, oracle=oracle, **{"progress": False, "seed": seed,
                                                         **settings})
        return result.policy, result.history


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample std (0 for one value), min, max and count of a study's per-seed figures."""
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()),
            "std": float(array.std(ddof=1)) if array.size > 1 else 0.0,
            "min": float(array.min()), "max": float(array.max()), "n": int(array.size)}


def study_machine(per_worker: bool = False) -> str:
    """The machine line of a study's result: architecture and CPU model (a world built on
    another CPU model rounds differently, so its figures differ), Python, torch, threads."""
    return (f"{platform.machine()} ({cpu_model()}), {platform.python_version()}, "
            f"torch {torch.__version__}, "
            f"1 thread{' per worker' if per_worker else ''}")


def mean_std(value: dict[str, float], digits: int) -> str:
    """A `spread` as "mean ± std" with `digits` decimals (a study table's cell)."""
    return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"


def pooled_gap(first: dict[str, float], second: dict[str, float]) -> tuple[float, float]:
    """first - second of two `spread`s, and their pooled standard deviation over seeds."""
    return (first["mean"] - second["mean"],
            float(np.sqrt((first["std"] ** 2 + second["std"] ** 2) / 2)))


def gap_text(first: dict[str, float], second: dict[str, float], digits: int,
             unit: str = "") -> str:
    """first - second of two `spread`s, with the gap in pooled standard deviations over
    seeds (none when both are exact), e.g. "+120 s/session (+2.3 pooled std)"."""
    gap, pooled = pooled_gap(first, second)
    return (f"{gap:+.{digits}f}{unit}"
            + (f" ({gap / pooled:+.1f} pooled std)" if pooled > 0 else ""))


def write_study(folder: str, name: str, preset: str, result: dict[str, Any],
                plot: Callable[[Path], None], markdown: Callable[[str], str]) -> Path:
    """Write a study's `<name><suffix>.json` (`result`), `.png` (`plot(path)`) and `.md`
    (`markdown(suffix)`) under `folder`; the suffix is empty for the full preset and
    `_<preset>` otherwise, so a smoke run keeps the measured files. Returns the .md path."""
    results = Path(folder)
    results.mkdir(parents=True, exist_ok=True)
    suffix = "" if preset == "full" else f"_{preset}"
    atomic_write_text(results / f"{name}{suffix}.json",
                      json.dumps(result, indent=2, default=float))
    plot(results / f"{name}{suffix}.png")
    atomic_write_text(results / f"{name}{suffix}.md", markdown(suffix))
    return results / f"{name}{suffix}.md"


def save_study(name: str, args: WorldStudyArgs, started: float, result: dict[str, Any],
               plot: Callable[[dict[str, Any], Path], None],
               markdown: Callable[[dict[str, Any], str], str], per_worker: bool = False) -> Path:
    """Complete a study's `result` with the command that ran it, the machine line and the
    wall time since `started`, then write its files (`write_study`); the .md path."""
    result.update(command=command_line(f"benchmarks.{name}", args),
                  machine=study_machine(per_worker),
                  seconds=round(time.perf_counter() - started, 1))
    return write_study(args.results, name, args.preset, result, lambda path: plot(result, path),
                       lambda suffix: markdown(result, suffix))


def study_main(module: str, description: str, args_class: type, run: Callable[[Any], dict],
               argv: list[str] | None) -> int:
    """`python -m benchmarks.<study>`: arguments from `args_class`, then `run`; prints the
    result as JSON with --json, else the markdown report at `result["results"]`."""

    options = sys.argv[1:] if argv is None else argv
    try:
        load_command_plugins(args_class, options)
        parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
        add_dataclass_arguments(parser, args_class)
        args = build_from_namespace(args_class, parser.parse_args(options))
        result = run(args)
    except (Exception, KeyboardInterrupt) as error:  # one line, as `onerec-lab` prints it
        reported = error_line(error)
        if reported is None or os.environ.get(DEBUG_VARIABLE):
            raise
        print(f"python -m {module}: error: {reported[0]}", file=sys.stderr)
        return reported[1]
    print(json.dumps(result, indent=2, default=float) if args.json
          else Path(result["results"]).read_text())
    return 0


def write_report(folder: str, name: str, preset: str, result: dict[str, Any],
                 markdown: str) -> Path:
    """`write_study` for a study without a plot: `<name><suffix>.json` and `.md` only."""
    return write_study(folder, name, preset, result, lambda path: None, lambda suffix: markdown)


def with_preset(args: Any, presets: dict[str, Any]) -> Any:
    """`args` with every option left at None taken from `presets[args.preset]` (a dataclass of
    sizes named as options of `args`): a size is declared once, in the preset, and an option
    given on the command line overrides it under either preset."""
    preset = presets[args.preset]
    return dataclasses.replace(args, **{field.name: getattr(preset, field.name)
                                        for field in dataclasses.fields(preset)
                                        if getattr(args, field.name) is None})


def command_line(module: str, args: Any) -> str:
    """`python -m <module>` with the options of `args` (a dataclass of `study_main`) that
    differ from their defaults: the command a results file records (--json, which only
    changes what is printed, left out)."""
    words = ["python", "-m", module]
    for field in dataclasses.fields(args):
        value = getattr(args, field.name)
        default = (field.default_factory() if field.default_factory is not dataclasses.MISSING
                   else field.default)
        if field.name == "json" or value == default:
            continue
        flag = "--" + field.name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, tuple) and field.metadata.get("repeatable"):
            words += [word for item in value for word in (flag, str(item))]
        elif isinstance(value, tuple):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def progress(message: str) -> None:
    """A timestamped line on stderr: where a long study is."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
