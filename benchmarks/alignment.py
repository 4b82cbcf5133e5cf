"""Alignment study: strategies x reward designs on the synthetic world, proxy against truth.

    python -m benchmarks.alignment [--preset full|smoke] [--work DIR] [--results DIR]
    onerec-lab bench alignment --preset smoke --json

Every run starts from the one pre-trained tiny OneRec of the study world (`benchmarks.study`:
the quickstart's world, cascade-logged) and every policy is evaluated on the same simulated
users with the TRUE outcome, the proxy "pscore + 0.5*format" beside it. Parts:

1. matrix: {pre-trained, RSFT, GRPO, ECPO, DPO, SB3 PPO over a candidate slate, cascade,
   popular, random} x {pscore, pscore+format, pscore+format+business, oracle}, over seeds;
   the baselines do not train on a reward, so they have one row each; the strategies of
   2025-26 (GBPO, TRL's DAPO, BNPO, CISPO and SAPO, reward-weighted SFT) on pscore+format and
   oracle, and OneRec-V2's feedback RL once (it learns from the users' reactions, whatever
   the spec: the row "feedback_rl on user feedback", its proxy charted);
2. the headline (issue #6): ECPO on "pscore + format" against the pre-trained policy, with
   legality under unconstrained decoding, and ECPO on "pscore" alone (no format reward);
3. stability: GRPO against ECPO at a large learning rate with several updates per rollout
   and no gradient clipping, so that only the losses' own bounds differ.

Writes `alignment<suffix>.md`, `.json`, `alignment_matrix<suffix>.png` (true watch time per
strategy and reward), `alignment_curves<suffix>.png` (proxy and truth of the rollouts over
RL steps) and `alignment_stability<suffix>.png` under `--results`; suffix "" for full.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from benchmarks.study import Study, WorldStudyArgs, command_line, spread, study_machine, study_main
from onerec_lab.experiment import BASELINES, WorldConfig, build_world
from onerec_lab.experiment.evaluation import PROXY
from onerec_lab.experiment.plugins import load_plugins, loaded_plugins
from policies.sb3_agent import PPOAgentConfig, PPOSlateRecommender, train_ppo
from rewards import EnvReward, build, parse_spec, truth_terms
from trainers.rsft import RWSFTConfig

# Reward designs of the matrix: name -> spec (rewards/README.md).
REWARDS = {
    "pscore": "pscore",
    "pscore+format": "pscore + 0.5*format",
    "pscore+format+business": "business(pscore, alpha=0.5, f=0.3) + 0.5*format",
    "oracle": "oracle",
}
METHODS = ("rsft", "grpo", "ecpo", "dpo")  # the lab's online methods in the matrix
NEW_METHODS = ("gbpo", "dapo", "bnpo", "cispo", "sapo", "rwsft")  # 2025-26, on NEW_REWARDS
NEW_REWARDS = ("pscore+format", "oracle")
FEEDBACK = ("feedback_rl", "user feedback")  # (method, the row's reward name)
FORMAT_SELECTION_K = 4  # the report's format rule (K random samples per group), one variant


@dataclass(frozen=True)
class StudyPreset:
    """Sizes of one run of the study."""

    world: WorldConfig  # the cached world (catalog, logs, checkpoint, P-score)
    steps: int  # RL steps per run (one rollout of users x G each)
    users: int  # users per RL step
    generations: int  # G items per user
    learning_rate: float  # AdamW step of the runs
    eval_users: int  # users of every evaluation (the same users for every policy)
    eval_requests: int  # most requests per evaluated session
    seeds: tuple[int, ...]  # training seeds of every (method, reward) cell
    ppo_timesteps: int  # SB3 PPO requests per run
    stability_steps: int  # steps of the GRPO / ECPO stability runs
    stability_learning_rate: float  # their (large) learning rate
    stability_iterations: int  # their updates per rollout


PRESETS = {
    "full": StudyPreset(world=WorldConfig(), steps=40, users=16, generations=16,
                        learning_rate=3e-4, eval_users=100, eval_requests=20, seeds=(0, 1, 2),
                        ppo_timesteps=6_000, stability_steps=20,
                        stability_learning_rate=3e-3, stability_iterations=4),
    "smoke": StudyPreset(world=WorldConfig(items=400, codebook=8, embedding_steps=30,
                                           log_users=60, log_requests=4, cascade_steps=30,
                                           pretrain_steps=20, pscore_epochs=1),
                         steps=2, users=4, generations=8, learning_rate=3e-4, eval_users=8,
                         eval_requests=4, seeds=(0,), ppo_timesteps=64, stability_steps=2,
                         stability_learning_rate=3e-3, stability_iterations=2),
}
NTP_WEIGHT = 1.0  # next-token co-training weight (OneRec co-trains instead of a KL term); at
# 0.1 ECPO drifted off the logged items and lost legality and true watch time
CURVE_CHARTS = ("charts/true_watch_time", "charts/legality")  # kept per step of every run


def curve(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """What the results file keeps of a run's steps: the rewards (each term, the proxy) and
    the truth and legality of the rollouts (every other metric is in the run's TensorBoard)."""
    return [{key: value for key, value in step.items()
             if key.startswith("rewards/") or key in CURVE_CHARTS} for step in history]

HEADLINE = ("ecpo", "pscore+format")
ORACLE = "oracle"  # the design that optimises the truth itself: the study's only oracle run


@dataclass
class AlignmentBenchArgs(WorldStudyArgs):
    """Arguments of `python -m benchmarks.alignment` (and `onerec-lab bench alignment`)."""

    skip_ppo: bool = False  # leave SB3 PPO out of the matrix (it trains the longest)
    workers: int = 1  # processes training the runs side by side (one torch thread each)
    reward: tuple[str, ...] = ()  # extra reward designs NAME=SPEC for the matrix (any spec
    # that does not read the simulator's truth: only the built-in oracle column may)
    plugin: tuple[str, ...] = field(  # a Python file or module registering rewards/methods,
        default=(), metadata={"repeatable": True})  # loaded in every worker process too


def rl_settings(preset: StudyPreset, **overrides: Any) -> dict[str, Any]:
    return {"learning_rate": preset.learning_rate, "max_steps": preset.steps,
            "users_per_step": preset.users, "num_generations": preset.generations,
            "ntp_weight": NTP_WEIGHT, **overrides}


FIGURES = ("true_watch_time", "proxy_reward", "legality", "session_length", "diversity",
           "coverage", "shown_duration_s")


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {figure: spread([run[figure] for run in runs]) for figure in FIGURES}


class Task(NamedTuple):
    """One trained policy of the study: which cell and run it fills, and how to train it."""

    cell: str  # row of the table
    run: str  # name of its curve, e.g. "ecpo on pscore, seed 0"
    kind: str  # "online" (the lab's trainers) or "ppo" (SB3)
    method: str  # online method, or "ppo"
    spec: str  # reward spec
    seed: int
    settings: dict[str, Any]  # the method's config fields (online) or PPO's
    oracle: bool = False  # an oracle run: the reward may read the simulator's truth


def parse_rewards(extra: tuple[str, ...]) -> dict[str, str]:
    """The matrix's reward designs: REWARDS plus `--reward NAME=SPEC` ones (checked here)."""
    designs = dict(REWARDS)
    for text in extra:
        name, separator, spec = text.partition("=")
        if not separator or not name.strip() or not spec.strip():
            raise ValueError(f"--reward takes NAME=SPEC (e.g. 'mine=pscore + 0.2*format'), "
                             f"got {text!r}")
        parse_spec(spec)  # a malformed spec fails before anything is trained
        if name.strip() in REWARDS:
            raise ValueError(f"--reward {name.strip()!r} is a built-in design of the matrix; "
                             "give yours another name")
        designs[name.strip()] = spec.strip()
    return designs


def _tasks(preset: StudyPreset, skip_ppo: bool, rewards: dict[str, str]) -> list[Task]:
    tasks = [Task(f"{method} on {reward}", f"{method} on {reward}, seed {seed}", "online", method,
                  spec, seed, rl_settings(preset), oracle=reward == ORACLE)
             for method in METHODS for reward, spec in rewards.items() for seed in preset.seeds]
    tasks += [Task(f"{method} on {reward}", f"{method} on {reward}, seed {seed}", "online",
                   method, REWARDS[reward], seed, rl_settings(preset), oracle=reward == ORACLE)
              for method in NEW_METHODS for reward in NEW_REWARDS for seed in preset.seeds]
    tasks += [Task(" on ".join(FEEDBACK), f"{' on '.join(FEEDBACK)}, seed {seed}", "online",
                   FEEDBACK[0], REWARDS["pscore+format"], seed, rl_settings(preset))
              for seed in preset.seeds]
    if not skip_ppo:
        tasks += [Task(f"sb3_ppo on {reward}", f"sb3_ppo on {reward}, seed {seed}", "ppo", "ppo",
                       spec, seed, {"total_timesteps": preset.ppo_timesteps},
                       oracle=reward == ORACLE)
                  for reward, spec in rewards.items() for seed in preset.seeds]
    for seed in preset.seeds:
        tasks.append(Task(  # the report's format rule in place of the plain format term
            "ecpo on pscore+format, format rule", f"ecpo on pscore+format, format rule (K = "
            f"{FORMAT_SELECTION_K}), seed {seed}", "online", "ecpo", REWARDS["pscore+format"],
            seed, rl_settings(preset, format_selection_k=min(FORMAT_SELECTION_K,
                                                              preset.generations))))
        tasks.append(Task(  # no format reward and weak co-training: nothing holds legality
            "ecpo on pscore, ntp 0.1", f"ecpo on pscore, ntp 0.1, seed {seed}", "online", "ecpo",
            REWARDS["pscore"], seed, rl_settings(preset, ntp_weight=0.1)))
    for loss_type in ("grpo", "ecpo"):
        tasks.append(Task(f"{loss_type} large lr, unclipped", f"stability {loss_type}", "online",
                          loss_type, REWARDS["pscore+format"], 0, rl_settings(
                              preset, learning_rate=preset.stability_learning_rate,
                              num_iterations=preset.stability_iterations,
                              max_steps=preset.stability_steps, max_grad_norm=0.0)))
    return tasks


_WORKER: dict[str, Study] = {}  # the study of a worker process (loaded once per process)


def start_worker(world: str, eval_users: int, eval_requests: int,
                 plugins: tuple[str, ...] = ()) -> None:
    """Load the study (and the main process's plugins) in this process, one torch thread."""
    torch.set_num_threads(1)
    load_plugins(plugins)
    _WORKER["study"] = Study(world, eval_users=eval_users, eval_requests=eval_requests)


def perform(task: Task) -> tuple[dict[str, Any], list[dict[str, float]] | None]:
    """Train the task's policy in this process's study; its evaluation and curve."""
    study = _WORKER["study"]
    if task.kind == "ppo":
        reward = build(task.spec, codec=study.start.codec, **study.reward_resources())
        if truth_terms(reward) and not task.oracle:
            raise ValueError(f"reward {task.spec!r} reads the simulator's truth; only the "
                             "oracle column may")
        reward_fn = EnvReward(reward)
        steps = task.settings["total_timesteps"]
        model = train_ppo(study.catalog, PPOAgentConfig(
            total_timesteps=steps, seed=task.seed, n_steps=max(2, min(64, steps // 8)),
            batch_size=max(2, min(128, steps // 8))), study.session_config, reward_fn=reward_fn)
        return study.evaluate(PPOSlateRecommender(model, study.catalog,
                                                  study.session_config.slate_size)), None
    policy, history = study.train(task.method, task.spec, task.seed, oracle=task.oracle,
                                  **task.settings)
    return study.evaluate_policy(policy), history


def shared_study(args: WorldStudyArgs, proxy_spec: str = PROXY) -> tuple[StudyPreset, Study]:
    """The alignment study's sizes for `args.preset` and its world (built, or reused, under
    `args.work`), loaded as this process's study (`perform` runs there), one torch thread."""
    torch.set_num_threads(1)
    preset = PRESETS[args.preset]
    world = build_world(preset.world, Path(args.work) / args.preset / "world")
    _WORKER["study"] = Study(world, eval_users=preset.eval_users,
                             eval_requests=preset.eval_requests, proxy_spec=proxy_spec)
    return preset, _WORKER["study"]


def run_tasks(tasks: list[Task], world: Path, preset: StudyPreset, workers: int,
              function: Callable[[Task], Any] = perform) -> list[Any]:
    """`function` of every task (default `perform`: its evaluation and curve), in order: in
    this process (whose study `start_worker` must have loaded) or, with workers > 1, in
    spawned processes with one torch thread each (the runs are independent; `function`
    must be a module-level function, so that it pickles)."""
    if workers <= 1:
        return [function(task) for task in tasks]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=start_worker,
                             initargs=(str(world), preset.eval_users,
                                       preset.eval_requests, loaded_plugins())) as pool:
        return list(pool.map(function, tasks))


def train_cells(tasks: list[Task], study: Study, preset: StudyPreset,
                workers: int) -> dict[str, dict[str, list]]:
    """Every task trained and evaluated (`run_tasks`, in `study`'s world), per table cell:
    {"runs": evaluations, "curves": histories}, in the tasks' (seed) order."""
    outcomes = run_tasks(tasks, study.world.layout.folder, preset, workers)
    cells: dict[str, dict[str, list]] = {}
    for task, (evaluation, history) in zip(tasks, outcomes, strict=True):
        cell = cells.setdefault(task.cell, {"runs": [], "curves": []})
        cell["runs"].append(evaluation)
        cell["curves"].append(history)
    return cells


def run(args: AlignmentBenchArgs) -> dict[str, Any]:
    """Run the study, write the results, return the summary."""
    started = time.perf_counter()
    parse_rewards(args.reward)  # bad designs fail before the world is built
    preset, study = shared_study(args)
    timings: dict[str, float] = {"world": round(time.perf_counter() - started, 1)}

    cells: dict[str, dict[str, Any]] = {}  # "method on reward" -> per-seed evaluations
    cells["pretrained"] = {"runs": [study.evaluate_policy(study.start)]}
    for name in BASELINES:
        cells[name] = {"runs": [study.evaluate(study.baseline(name))]}
    timings["baselines"] = round(time.perf_counter() - started - sum(timings.values()), 1)

    rewards = parse_rewards(args.reward)
    tasks = _tasks(preset, args.skip_ppo, rewards)
    outcomes = run_tasks(tasks, study.world.layout.folder, preset, args.workers)
    timings["trained policies"] = round(time.perf_counter() - started - sum(timings.values()), 1)

    curves: dict[str, list[dict[str, float]]] = {}
    stability: dict[str, list[dict[str, float]]] = {}
    for task, (evaluation, history) in zip(tasks, outcomes, strict=True):
        cells.setdefault(task.cell, {"runs": []})["runs"].append(evaluation)
        if history is not None and task.run.startswith("stability "):
            stability[task.method] = history
        elif history is not None:
            curves[task.run] = curve(history)
    weak_no_format = cells["ecpo on pscore, ntp 0.1"]["runs"]
    for cell in cells.values():
        cell["summary"] = _summarise(cell["runs"])
    headline = cells[" on ".join(HEADLINE)]["summary"]
    pretrained = cells["pretrained"]["summary"]
    summary = {
        "pretrained_true_watch_time": pretrained["true_watch_time"]["mean"],
        "cascade_true_watch_time": cells["cascade"]["summary"]["true_watch_time"]["mean"],
        "ecpo_true_watch_time": headline["true_watch_time"],
        "ecpo_legality": headline["legality"],
        "ecpo_no_format_legality": spread([run["legality"]
                                            for run in cells["ecpo on pscore"]["runs"]]),
        "ecpo_no_format_ntp_0.1_legality": spread([run["legality"] for run in weak_no_format]),
        "ecpo_format_rule_legality": spread(
            [run["legality"] for run in cells["ecpo on pscore+format, format rule"]["runs"]]),
        "ecpo_above_pretrained_seeds": sum(
            run["true_watch_time"] > pretrained["true_watch_time"]["mean"]
            for run in cells[" on ".join(HEADLINE)]["runs"]),
        "seeds": list(preset.seeds),
        "stability": {loss: {"ratio_max": max(h["charts/ratio_max"] for h in history),
                             "grad_norm_max": max(h["charts/grad_norm"] for h in history),
                             "legality_min": min(h["charts/legality"] for h in history)}
                      for loss, history in stability.items()},
    }
    result = {
        "command": command_line("benchmarks.alignment", args),
        "preset": asdict(preset),
        "rewards": rewards,
        "settings": {"ntp_weight": NTP_WEIGHT, "format_selection_k": FORMAT_SELECTION_K,
                     "rollout": "beam", "reference": "current",
                     "proxy_of_the_table": study.proxy_spec},
        "summary": summary,
        "cells": {name: cell["summary"] for name, cell in cells.items()},
        "runs": {name: cell["runs"] for name, cell in cells.items()},
        "curves": curves,
        "stability": stability,
        "timings_s": timings,
        "machine": study_machine(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.preset == "full" else f"_{args.preset}"
    (results / f"alignment{suffix}.json").write_text(json.dumps(result, indent=2, default=float))
    _plot(result, results, suffix)
    (results / f"alignment{suffix}.md").write_text(_markdown(result, suffix))
    return {"summary": summary, "cells": result["cells"], "seconds": result["seconds"],
            "results": str(results / f"alignment{suffix}.md")}


def _plot(result: dict[str, Any], results: Path, suffix: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = result["cells"]
    rewards = [*result["rewards"], FEEDBACK[1]]
    strategies = [*METHODS, "sb3_ppo", *NEW_METHODS, FEEDBACK[0]]
    figure, axis = plt.subplots(figsize=(17, 4.5))
    width = 0.8 / len(rewards)
    for index, reward in enumerate(rewards):
        means, errors, positions = [], [], []
        for position, strategy in enumerate(strategies):
            cell = cells.get(f"{strategy} on {reward}")
            if cell is None:
                continue
            positions.append(position + (index - (len(rewards) - 1) / 2) * width)
            means.append(cell["true_watch_time"]["mean"])
            errors.append(cell["true_watch_time"]["std"])
        axis.bar(positions, means, width, yerr=errors, capsize=2, label=f"reward: {reward}")
    for name, style in (("pretrained", "-"), ("cascade", "--"), ("popular", ":"),
                        ("random", "-.")):
        axis.axhline(cells[name]["true_watch_time"]["mean"], color="black", linestyle=style,
                     linewidth=1, label=name)
    axis.set_xticks(range(len(strategies)), [s.upper().replace("_", " ") for s in strategies])
    axis.set_ylabel("true watch time per session (s)")
    axis.set_title("True watch time after alignment, by strategy and reward "
                   f"(mean ± std over seeds {result['summary']['seeds']})")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(results / f"alignment_matrix{suffix}.png", dpi=110)
    plt.close(figure)

    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, history in result["curves"].items():
        if not name.startswith(("ecpo on pscore+format, seed", "ecpo on pscore, ")):
            continue
        steps = np.arange(1, len(history) + 1)
        axes[0].plot(steps, [h.get("rewards/pscore", np.nan) for h in history], label=name)
        axes[1].plot(steps, [h["charts/true_watch_time"] for h in history], label=name)
        axes[2].plot(steps, [h["charts/legality"] for h in history], label=name)
    for axis, title, label in zip(axes, (
            "proxy: P-score of the rollouts", "truth: expected watch time per rolled-out item",
            "legality of the rollouts (unconstrained)"), ("P-score", "seconds", "share legal"),
            strict=True):
        axis.set_title(title)
        axis.set_xlabel("ECPO step")
        axis.set_ylabel(label)
    axes[2].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(results / f"alignment_curves{suffix}.png", dpi=110)
    plt.close(figure)

    charts = (("charts/ratio_max", "largest ratio pi/pi_old in a step"),
              ("charts/grad_norm", "gradient norm (unclipped)"),
              ("charts/legality", "legality of the rollouts"),
              ("charts/true_watch_time", "true watch time per item (s)"))
    figure, axes = plt.subplots(1, len(charts), figsize=(18, 4))
    for loss_type, history in result["stability"].items():
        steps = np.arange(1, len(history) + 1)
        for axis, (key, title) in zip(axes, charts, strict=True):
            axis.plot(steps, [h[key] for h in history], label=loss_type.upper())
            axis.set_title(title)
            axis.set_xlabel("step")
    axes[0].set_yscale("log")
    axes[0].legend()
    figure.suptitle("GRPO against ECPO at a large learning rate, several updates per rollout")
    figure.tight_layout()
    figure.savefig(results / f"alignment_stability{suffix}.png", dpi=110)
    plt.close(figure)


def _cell(value: dict[str, float], digits: int) -> str:
    if value["n"] == 1:
        return f"{value['mean']:.{digits}f}"
    return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"


def _markdown(result: dict[str, Any], suffix: str) -> str:
    preset, summary = result["preset"], result["summary"]
    world = preset["world"]
    rows = [f"| {name} | {_cell(c['true_watch_time'], 0)} | {_cell(c['session_length'], 2)} | "
            f"{_cell(c['proxy_reward'], 4)} | {_cell(c['legality'], 3)} | "
            f"{_cell(c['shown_duration_s'], 1)} | {_cell(c['diversity'], 2)} | "
            f"{_cell(c['coverage'], 4)} |" for name, c in result["cells"].items()]
    ecpo = summary["ecpo_true_watch_time"]
    stability = summary["stability"]
    return "\n".join([
        "# Alignment: strategies x reward designs on the synthetic world",
        "",
        f"Command: `{result['command']}` ({result['seconds']:.0f} s; {result['machine']}).",
        "",
        f"World (`benchmarks/study.py`, the quickstart's): {world['items']} items, "
        f"{world['codebook']}^3 balanced RQ-Kmeans codes, {world['log_users']} sessions of at "
        f"most {world['log_requests']} requests logged by the cascade, one tiny OneRec "
        f"pre-trained {world['pretrain_steps']} steps on them, the P-score fitted on them. "
        f"Every RL run starts from that checkpoint: {preset['steps']} steps of "
        f"{preset['users']} new simulated users x G = {preset['generations']} beams "
        f"(unconstrained), lr {preset['learning_rate']}, on-policy reference, next-token "
        f"co-training weight {result['settings']['ntp_weight']}, a format term as a plain "
        "reward term (the row \"format rule\" uses the report's rule instead: K = "
        f"{result['settings']['format_selection_k']} random samples per group, legal ones get "
        "the format weight as advantage, illegal ones are dropped). SB3 PPO: "
        f"{preset['ppo_timesteps']} requests over 50 retrieved "
        "candidates. The strategies of 2025-26 run on pscore+format and oracle with the same "
        "settings (GBPO; TRL 1.16's loss types DAPO, BNPO, CISPO, SAPO at token level; "
        f"reward-weighted SFT, lambda {RWSFTConfig().reward_temperature}); feedback RL "
        "(GBPO) learns from the simulated users' drawn reactions, duration-shaped, whatever the spec (its proxy is charted). "
        "Evaluation: the same "
        f"{preset['eval_users']} simulated users for every policy, at most "
        f"{preset['eval_requests']} requests per session, OneRec served by unconstrained beam "
        "search (top 10 of 20 beams; an illegal code is a blank). Cells: mean ± std over "
        f"training seeds {summary['seeds']}; baselines and the pre-trained policy do not "
        "train, so one figure. Proxy column: "
        f"`{result['settings']['proxy_of_the_table']}` of the served slates.",
        "",
        "Reward specs: " + "; ".join(f"{name} = `{spec}`" for name, spec in
                                     result["rewards"].items()) + ".",
        "",
        "| policy (on reward) | true watch time / session (s) | session length | proxy | "
        "legality | shown duration (s) | categories / slate | coverage |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "![matrix](alignment_matrix" + suffix + ".png)",
        "",
        "## Headline: ECPO on the production-style proxy",
        "",
        f"- Pre-trained: {summary['pretrained_true_watch_time']:.0f} s of true watch time per "
        f"session; cascade {summary['cascade_true_watch_time']:.0f} s.",
        f"- ECPO on \"pscore + format\": {ecpo['mean']:.0f} ± {ecpo['std']:.0f} s (min "
        f"{ecpo['min']:.0f}, max {ecpo['max']:.0f}; {summary['ecpo_above_pretrained_seeds']} of "
        f"{ecpo['n']} seeds above the pre-trained policy); legality "
        f"{summary['ecpo_legality']['mean']:.3f} (min {summary['ecpo_legality']['min']:.3f}).",
        f"- ECPO on \"pscore\" without the format reward: legality "
        f"{summary['ecpo_no_format_legality']['mean']:.3f} (min "
        f"{summary['ecpo_no_format_legality']['min']:.3f}) with next-token co-training weight "
        f"{result['settings']['ntp_weight']}; "
        f"{summary['ecpo_no_format_ntp_0.1_legality']['mean']:.3f} (min "
        f"{summary['ecpo_no_format_ntp_0.1_legality']['min']:.3f}) at weight 0.1.",
        f"- ECPO with the report's format rule instead of the plain format term: legality "
        f"{summary['ecpo_format_rule_legality']['mean']:.3f} (min "
        f"{summary['ecpo_format_rule_legality']['min']:.3f}).",
        "",
        "![curves](alignment_curves" + suffix + ".png)",
        "",
        "## ECPO against GRPO at a large learning rate",
        "",
        "In the matrix GRPO and ECPO rows are identical: with one update per rollout and the "
        "on-policy reference every ratio is exactly 1, where the two losses (and their "
        "gradients) coincide; they part only when the ratio leaves 1, as here.",
        "",
        f"lr {preset['stability_learning_rate']}, {preset['stability_iterations']} updates per "
        f"rollout, {preset['stability_steps']} steps, no gradient clipping, seed 0, reward "
        "\"pscore + format\".",
        "",
        "| loss | largest ratio | largest gradient norm | lowest rollout legality |",
        "|---|---|---|---|",
        *[f"| {loss} | {figures['ratio_max']:.2f} | {figures['grad_norm_max']:.2f} | "
          f"{figures['legality_min']:.3f} |" for loss, figures in stability.items()],
        "",
        "![stability](alignment_stability" + suffix + ".png)",
        "",
        "Stage times (s): " + ", ".join(f"{name} {seconds:.0f}"
                                        for name, seconds in result["timings_s"].items()) + ".",
        "",
    ])


def print_human(result: dict[str, Any]) -> None:
    """`onerec-lab bench alignment` without --json: the markdown report."""
    print(Path(result["results"]).read_text())


def main(argv: list[str] | None = None) -> int:
    return study_main("benchmarks.alignment",
                      __doc__.splitlines()[0], AlignmentBenchArgs, run, argv)


if __name__ == "__main__":
    sys.exit(main())
