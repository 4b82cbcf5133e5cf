"""Alignment study: ECPO and GRPO from one pre-trained tiny checkpoint, proxy against truth.

    python -m benchmarks.alignment [--preset full|smoke] [--work DIR] [--results DIR]
    onerec-lab bench alignment --preset smoke --json

Stages (the world, the checkpoint and the P-score are cached in `--work`):

1. world: `onerec-lab simulate` (popularity logging policy) on the synthetic catalog;
2. pre-training: `onerec-lab pretrain --preset tiny` on those logs;
3. P-score: `onerec-lab reward fit` on the same logs;
4. runs, each from the pre-trained checkpoint, evaluated in the simulator on the same
   users (unconstrained decoding, the top slate of the beams served):
   - ECPO on "pscore + format" (the report's format rule) over `seeds`, at the headline
     setting (lr 3e-3, 4 updates per rollout) and at a gentle one (lr 3e-4, 1 update);
   - ECPO on "pscore" alone: legality without the format reward;
   - ECPO on "oracle + format": the same pipeline optimising the truth itself;
   - GRPO against ECPO at the headline setting without gradient clipping: with several
     updates per rollout the ratios leave 1, and only the losses' own bounds differ.

Writes `alignment.md`, `alignment.json`, `alignment_curves.png` (proxy and true outcome of
the rollouts, per step) and `alignment_stability.png` under `--results`.
"""

from __future__ import annotations

import copy
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from envs.logs import LoggedSessions
from onerec_lab.args import add_dataclass_arguments, build_from_namespace
from onerec_lab.commands.pretrain import PretrainArgs
from onerec_lab.commands.pretrain import run as pretrain_command
from onerec_lab.commands.reward import RewardFitArgs, run_fit
from onerec_lab.commands.simulate import SimulateArgs
from onerec_lab.commands.simulate import run as simulate
from policies.onerec import OneRecPolicy
from rewards import build, load_pscore
from trainers.evaluate import EvaluationConfig, OneRecRecommender, evaluate
from trainers.grpo import GRPOConfig, GRPOTrainer
from trainers.pretrain import CHECKPOINT_FILE, load_policy
from trainers.pretrain_data import LoggedExamples

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class StudyPreset:
    """Sizes of one study."""

    items: int  # synthetic catalog
    log_users: int  # logged sessions (popularity policy)
    log_requests: int  # requests per logged session
    codebook: int  # codes per level of the semantic IDs
    embedding_steps: int  # item-embedding steps of the tokenizer
    pretrain_steps: int  # next-token steps of the tiny checkpoint
    pscore_epochs: int  # P-score epochs
    steps: int  # RL steps of a headline run (each: one rollout, ITERATIONS updates)
    gentle_steps: int  # RL steps of a run at the gentle setting (one update per rollout)
    users: int  # users per RL step
    generations: int  # items per user (G)
    format_selection_k: int  # the report's format rule: K random samples per group
    eval_users: int  # users of every evaluation
    eval_requests: int  # most requests per evaluated session
    seeds: tuple[int, ...]  # seeds of the headline runs


PRESETS = {
    "full": StudyPreset(items=5000, log_users=1000, log_requests=10, codebook=64,
                        embedding_steps=300, pretrain_steps=600, pscore_epochs=4, steps=24,
                        gentle_steps=40, users=16, generations=32, format_selection_k=16,
                        eval_users=200, eval_requests=20, seeds=(0, 1, 2)),
    "smoke": StudyPreset(items=1000, log_users=200, log_requests=5, codebook=16,
                         embedding_steps=40, pretrain_steps=30, pscore_epochs=1, steps=3,
                         gentle_steps=3, users=4, generations=8, format_selection_k=4,
                         eval_users=12, eval_requests=4, seeds=(0, 1, 2)),
}
LEARNING_RATE = 3e-3  # headline RL step size (Adam), with ITERATIONS updates per rollout
ITERATIONS = 4  # updates per rollout (TRL's num_iterations): the ratio leaves 1, the clips act
GENTLE_LEARNING_RATE = 3e-4  # the gentle setting: 10x smaller, one update per rollout
NTP_WEIGHT = 0.1  # next-token co-training: 1.0 pins the policy to the logging policy's items


@dataclass
class AlignmentBenchArgs:
    """Arguments of `python -m benchmarks.alignment` (and `onerec-lab bench alignment`)."""

    preset: Literal["full", "smoke"] = "full"  # full: the measured study; smoke: minutes, CPU
    work: str = "runs/alignment"  # cache of the world, the checkpoint and the P-score
    results: str = str(RESULTS)  # where alignment.md / .json / *.png are written
    json: bool = False  # print the results as one JSON object


def _world(args: AlignmentBenchArgs, preset: StudyPreset) -> tuple[Path, Path]:
    """Logs (with their P-score) and the pre-trained checkpoint, made once per work folder."""
    work = Path(args.work) / args.preset
    logs_dir, checkpoint = work / "logs", work / "pretrained" / CHECKPOINT_FILE
    if not (logs_dir / "sessions.npz").is_file():
        simulate(SimulateArgs(policy="popular", users=preset.log_users,
                              requests=preset.log_requests, seed=0, out=str(logs_dir),
                              items=preset.items))
    if not (logs_dir / "pscore").is_dir():
        run_fit(RewardFitArgs(logs=str(logs_dir), out=str(logs_dir / "pscore"), seed=0,
                              epochs=preset.pscore_epochs,
                              pareto_steps=300 if args.preset == "full" else 20))
    # Resumes an interrupted pre-training; returns at once when it is complete.
    pretrain_command(PretrainArgs(out=str(checkpoint.parent), preset="tiny", logs=str(logs_dir),
                                  codebook=preset.codebook, embedding_steps=preset.embedding_steps,
                                  steps=preset.pretrain_steps, seed=0, json=True))
    return logs_dir, checkpoint


class Study:
    """The shared world of every run, and how a run is trained and measured."""

    def __init__(self, logs_dir: Path, checkpoint: Path, preset: StudyPreset) -> None:
        self.logs = LoggedSessions.load(logs_dir)
        self.start = load_policy(checkpoint)
        self.pscore = load_pscore(logs_dir / "pscore")
        self.preset = preset
        self.session_config = self.logs.session_config()
        self.examples = LoggedExamples(self.logs)

    def evaluate(self, policy: OneRecPolicy, reward: str) -> dict[str, Any]:
        """The policy on the study's evaluation users, with `reward` as the proxy."""
        proxy = build(reward, pscore_model=self.pscore, codec=policy.codec,
                      catalog=self.logs.catalog)
        config = EvaluationConfig(users=self.preset.eval_users,
                                  max_requests=self.preset.eval_requests)
        recommender = OneRecRecommender(policy, self.session_config.slate_size)
        return evaluate(recommender, self.logs.catalog, self.session_config, config, proxy)

    def train(self, reward: str, config: GRPOConfig) -> tuple[OneRecPolicy, list[dict]]:
        """ECPO / GRPO from the pre-trained policy; the policy and its per-step metrics."""
        policy = copy.deepcopy(self.start)
        trainer = GRPOTrainer(policy, reward, {"pscore_model": self.pscore,
                                               "catalog": self.logs.catalog},
                              self.logs.catalog, self.session_config, config, self.examples)
        return policy, trainer.train().history

    def headline_config(self, seed: int, **overrides: Any) -> GRPOConfig:
        preset = self.preset
        return replace(GRPOConfig(
            loss_type="ecpo", learning_rate=LEARNING_RATE, num_iterations=ITERATIONS,
            max_steps=preset.steps, users_per_step=preset.users, num_generations=preset.generations,
            ntp_weight=NTP_WEIGHT, format_selection_k=preset.format_selection_k, seed=seed,
            progress=False), **overrides)


def _spread(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if array.size > 1
            else 0.0, "min": float(array.min()), "max": float(array.max())}


def run(args: AlignmentBenchArgs) -> dict[str, Any]:
    """Run the study, write the results, return them."""
    started = time.perf_counter()
    torch.set_num_threads(1)
    preset = PRESETS[args.preset]
    study = Study(*_world(args, preset), preset)
    headline_reward = "pscore + format"
    evaluations: dict[str, dict[str, Any]] = {"pretrained": study.evaluate(study.start,
                                                                          headline_reward)}
    curves: dict[str, list[dict]] = {}
    gentle = {"learning_rate": GENTLE_LEARNING_RATE, "num_iterations": 1,
              "max_steps": preset.gentle_steps}
    for seed in preset.seeds:
        for name, overrides in ((f"ecpo pscore+format seed {seed}", {}),
                                (f"ecpo pscore+format gentle seed {seed}", gentle)):
            policy, curves[name] = study.train(headline_reward,
                                               study.headline_config(seed, **overrides))
            evaluations[name] = study.evaluate(policy, headline_reward)
    for name, reward, overrides in (
        ("ecpo pscore (no format) seed 0", "pscore", {"format_selection_k": 0}),
        ("ecpo oracle+format seed 0", "oracle + format", {}),
    ):
        policy, curves[name] = study.train(reward, study.headline_config(0, **overrides))
        evaluations[name] = study.evaluate(policy, headline_reward)
    stability = {}
    for loss_type in ("grpo", "ecpo"):  # the headline setting without gradient clipping
        config = study.headline_config(0, loss_type=loss_type, max_grad_norm=0.0)
        policy, stability[loss_type] = study.train(headline_reward, config)
        evaluations[f"{loss_type} unclipped seed 0"] = study.evaluate(policy, headline_reward)

    def spreads(prefix: str, key: str) -> dict[str, dict[str, float]]:
        """Mean, std, min and max over the seeds of the runs named `prefix seed N`."""
        runs = [evaluations[f"{prefix} seed {seed}"] for seed in preset.seeds]
        return {f"{key}_{figure}": _spread([run[figure] for run in runs])
                for figure in ("true_watch_time", "proxy_reward", "legality")}

    summary = {
        "pretrained_true_watch_time": evaluations["pretrained"]["true_watch_time"],
        "pretrained_proxy_reward": evaluations["pretrained"]["proxy_reward"],
        **spreads("ecpo pscore+format", "ecpo"),
        **spreads("ecpo pscore+format gentle", "ecpo_gentle"),
        "no_format_legality": evaluations["ecpo pscore (no format) seed 0"]["legality"],
        "no_format_rollout_legality": curves["ecpo pscore (no format) seed 0"][-1][
            "charts/legality"],
        "oracle_true_watch_time": evaluations["ecpo oracle+format seed 0"]["true_watch_time"],
    }
    result = {
        "command": f"python -m benchmarks.alignment --preset {args.preset}",
        "preset": asdict(preset),
        "settings": {"learning_rate": LEARNING_RATE, "num_iterations": ITERATIONS,
                     "gentle_learning_rate": GENTLE_LEARNING_RATE, "ntp_weight": NTP_WEIGHT,
                     "rollout": "beam",
                     "reference": "current", "headline_reward": headline_reward},
        "summary": summary,
        "evaluations": evaluations,
        "curves": curves,
        "stability": stability,
        "machine": f"{platform.machine()}, torch {torch.__version__}, 1 thread",
        "seconds": round(time.perf_counter() - started, 1),
    }
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.preset == "full" else f"_{args.preset}"
    (results / f"alignment{suffix}.json").write_text(json.dumps(result, indent=2))
    _plot(curves, stability, results, suffix)
    (results / f"alignment{suffix}.md").write_text(_markdown(result, suffix))
    return {key: value for key, value in result.items() if key not in ("curves", "stability")}


def _plot(curves: dict[str, list[dict]], stability: dict[str, list[dict]], results: Path,
          suffix: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, history in curves.items():
        steps = np.arange(1, len(history) + 1)
        axes[0].plot(steps, [h.get("rewards/pscore", np.nan) for h in history], label=name)
        axes[1].plot(steps, [h["charts/true_watch_time"] for h in history], label=name)
        axes[2].plot(steps, [h["charts/legality"] for h in history], label=name)
    for axis, title in zip(axes, ("P-score of the rollouts (proxy)",
                                  "true watch time per rolled-out item (s)",
                                  "legality of the rollouts"), strict=True):
        axis.set_title(title)
        axis.set_xlabel("step")
    axes[2].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(results / f"alignment_curves{suffix}.png", dpi=110)
    plt.close(figure)

    charts = (("charts/ratio_max", "largest ratio in a step"),
              ("charts/grad_norm", "gradient norm (no clipping)"),
              ("charts/legality", "legality of the rollouts"),
              ("charts/true_watch_time", "true watch time per item (s)"))
    figure, axes = plt.subplots(1, len(charts), figsize=(18, 4))
    for loss_type, history in stability.items():
        steps = np.arange(1, len(history) + 1)
        for axis, (key, title) in zip(axes, charts, strict=True):
            axis.plot(steps, [h[key] for h in history], label=loss_type)
            axis.set_title(title)
            axis.set_xlabel("step")
    axes[0].set_yscale("log")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(results / f"alignment_stability{suffix}.png", dpi=110)
    plt.close(figure)


def _markdown(result: dict[str, Any], suffix: str) -> str:
    preset, summary, settings = result["preset"], result["summary"], result["settings"]
    rows = []
    for name, figures in result["evaluations"].items():
        rows.append(
            f"| {name} | {figures['true_watch_time']:.0f} ± {figures['true_watch_time_sem']:.0f}"
            f" | {figures['proxy_reward']:.4f} | {figures['legality']:.3f} | "
            f"{figures['session_length']:.2f} | {figures['shown_duration_s']:.1f} | "
            f"{figures['diversity']:.2f} | {figures['coverage']:.4f} |")

    def spread(key: str, digits: int = 0) -> str:
        value = summary[key]
        return (f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f} (min "
                f"{value['min']:.{digits}f}, max {value['max']:.{digits}f})")

    def stability_row(loss_type: str) -> str:
        history = result["stability"][loss_type]
        return (f"| {loss_type} | {max(h['charts/ratio_max'] for h in history):.2f} | "
                f"{max(h['charts/grad_norm'] for h in history):.2f} | "
                f"{min(h['charts/legality'] for h in history):.3f} | "
                f"{history[-1]['charts/true_watch_time']:.2f} | "
                f"{result['evaluations'][f'{loss_type} unclipped seed 0']['true_watch_time']:.0f}"
                " |")

    return "\n".join([
        "# Alignment: ECPO and GRPO on the synthetic world",
        "",
        f"Command: `{result['command']}` ({result['seconds']:.0f} s; {result['machine']}).",
        "",
        f"World: {preset['items']} items, {preset['log_users']} logged sessions of the "
        f"popularity policy ({preset['log_requests']} requests). One tiny OneRec pre-trained "
        f"{preset['pretrain_steps']} steps on them; every run starts from it, with "
        f"{preset['users']} new simulated users per step, G = {preset['generations']} beams "
        f"each (unconstrained), the on-policy reference, next-token co-training weight "
        f"{settings['ntp_weight']} and the report's format rule (K = "
        f"{preset['format_selection_k']} random samples per group). Headline setting: lr "
        f"{settings['learning_rate']}, {settings['num_iterations']} updates per rollout, "
        f"{preset['steps']} steps, gradient norm clipped at 1; gentle setting: lr "
        f"{settings['gentle_learning_rate']}, 1 update per rollout, {preset['gentle_steps']} "
        f"steps. Evaluation: the same {preset['eval_users']} simulated users, at most "
        f"{preset['eval_requests']} requests per session, unconstrained beam search, the top 10 "
        "of 20 beams served (an illegal code is a blank). Proxy = \"pscore + format\" of the "
        "served slates.",
        "",
        "| policy | true watch time / session (s) ± s.e. | proxy / slate | legality | "
        "session length | shown duration (s) | categories / slate | coverage |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"- Pre-trained: {summary['pretrained_true_watch_time']:.0f} s of true watch time per "
        f"session, proxy {summary['pretrained_proxy_reward']:.4f}.",
        f"- ECPO on \"pscore + format\", headline setting, seeds {list(preset['seeds'])}: true "
        f"watch time {spread('ecpo_true_watch_time')} s; proxy "
        f"{spread('ecpo_proxy_reward', 4)}; legality {spread('ecpo_legality', 3)}.",
        f"- The gentle setting: true watch time {spread('ecpo_gentle_true_watch_time')} s; "
        f"proxy {spread('ecpo_gentle_proxy_reward', 4)}.",
        f"- Without the format reward: legality {summary['no_format_legality']:.3f} of the "
        f"served slots, {summary['no_format_rollout_legality']:.3f} of the last rollouts.",
        f"- The same pipeline on the oracle (\"oracle + format\"): "
        f"{summary['oracle_true_watch_time']:.0f} s.",
        "",
        f"![curves](alignment_curves{suffix}.png)",
        "",
        "## ECPO against GRPO without gradient clipping",
        "",
        "The headline setting (lr "
        f"{settings['learning_rate']}, {settings['num_iterations']} updates per rollout, so "
        "ratios leave 1) with the gradient-norm clip off, so that only the losses' own bounds "
        "differ (seed 0).",
        "",
        "| loss | largest ratio | largest gradient norm | lowest rollout legality | "
        "true watch / rolled-out item at the end (s) | evaluated true watch / session (s) |",
        "|---|---|---|---|---|---|",
        stability_row("grpo"),
        stability_row("ecpo"),
        "",
        f"![stability](alignment_stability{suffix}.png)",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.alignment",
                                     description=__doc__.splitlines()[0])
    add_dataclass_arguments(parser, AlignmentBenchArgs)
    args = build_from_namespace(AlignmentBenchArgs, parser.parse_args(argv))
    result = run(args)
    print(json.dumps(result["summary"], indent=2) if args.json else
          (Path(args.results) / ("alignment.md" if args.preset == "full"
                                 else f"alignment_{args.preset}.md")).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
