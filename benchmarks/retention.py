"""Retention: does a policy that wins the session win the week?

    python -m benchmarks.retention [--preset full|smoke] [--workers N]

From the alignment study's world and pre-trained checkpoint (`benchmarks.study`), policies are
trained with the alignment matrix's settings over seeds and judged twice on the same
simulated users: on one session (`trainers.evaluate`: true watch time per session) and over
`days` days of `OneRec/Days-v0` (`trainers.evaluate_days`: watch time over the horizon, App
Stay Time's analogue, active days, next-day retention, return rate, churn, coverage):

- pre-trained, the cascade that logged the world, random (no training);
- ECPO on "pscore + 0.5*format" (the production-style proxy);
- ECPO on the oracle (the simulator's true engagement of the session: the myopic optimum);
- ECPO on "pscore + 0.5*format + w*freshness", `freshness` a reward a user wrote as a plugin
  (`benchmarks/retention_rewards.py`: topics absent from the user's recent impressions);
- feedback RL (GBPO, OneRec-V2's user-feedback alignment).

The reading compares each trained policy with the pre-trained one on both scales, in pooled
standard deviations over seeds: a policy "wins the session and loses the week" when its
session gain is positive and its horizon gain negative, beyond the noise.

Writes `retention<suffix>.md`, `.json` and `.png` under `--results`.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import benchmarks.retention_rewards  # noqa: F401  (registers `freshness`)
from benchmarks.alignment import _WORKER, REWARDS, Task, rl_settings, run_tasks, shared_study
from benchmarks.study import (
    WorldStudyArgs,
    gap_text,
    mean_std,
    pooled_gap,
    save_study,
    spread,
    study_main,
)
from envs.days import DaysConfig
from onerec_lab.experiment import recommender
from onerec_lab.experiment.evaluation import PROXY, proxy_reward
from trainers.evaluate import EVALUATION_SEED
from trainers.evaluate_days import evaluate_days

FRESHNESS = "freshness"


@dataclass(frozen=True)
class RetentionPreset:
    """Sizes of one run of the study (the world and RL sizes are the alignment study's)."""

    seeds: tuple[int, ...]  # training seeds of every trained policy
    days: float  # the horizon of the long-term evaluation
    day_users: int  # users of the long-term evaluation
    freshness_weight: float  # w of the freshness term


PRESETS = {
    "full": RetentionPreset(seeds=(0, 1, 2), days=7.0, day_users=100, freshness_weight=0.3),
    "smoke": RetentionPreset(seeds=(0,), days=1.0, day_users=4, freshness_weight=0.3),
}


@dataclass
class RetentionBenchArgs(WorldStudyArgs):
    """Arguments of `python -m benchmarks.retention`."""

    workers: int = 1  # processes training the policies side by side (one torch thread each)


def designs(preset: RetentionPreset) -> dict[str, tuple[str, str, dict[str, Any], bool]]:
    """Trained policies: name -> (method, reward spec, extra settings, oracle run)."""
    return {
        "ecpo on pscore+format": ("ecpo", REWARDS["pscore+format"], {}, False),
        "ecpo on oracle": ("ecpo", REWARDS["oracle"], {}, True),
        "ecpo on pscore+format+freshness": (
            "ecpo", f"{REWARDS['pscore+format']} + {preset.freshness_weight}*{FRESHNESS}", {},
            False),
        "feedback_rl (gbpo)": ("feedback_rl", REWARDS["pscore+format"], {}, False),
    }


def judge(task: Task) -> dict[str, Any]:
    """Train the task's policy in this process's study (the alignment study's worker) and
    judge it on one session and over the horizon (`task.settings["judge"]`)."""
    study = _WORKER["study"]
    settings = dict(task.settings)
    judging = settings.pop("judge")
    policy, _ = study.train(task.method, task.spec, task.seed, oracle=task.oracle, **settings)
    return both_scales(study, policy, judging)


def both_scales(study: Any, policy: Any, judging: dict[str, Any]) -> dict[str, Any]:
    """A policy (a OneRec policy or a baseline name) on one session and over the horizon."""
    served = recommender(study.world, policy, 20)
    session = study.evaluate(served)
    days = evaluate_days(served, study.catalog, study.session_config,
                         DaysConfig(days=judging["days"],
                                    session_requests=study.evaluation.max_requests),
                         judging["users"], EVALUATION_SEED,
                         proxy_reward(study.world, PROXY)).to_dict()
    return {"session": session, "days": days}


def run(args: RetentionBenchArgs) -> dict[str, Any]:
    started = time.perf_counter()
    preset = PRESETS[args.preset]
    alignment, study = shared_study(args)
    judging = {"days": preset.days, "users": preset.day_users}
    fixed = {"pre-trained": both_scales(study, copy.deepcopy(study.start), judging),
             "cascade": both_scales(study, "cascade", judging),
             "random": both_scales(study, "random", judging)}
    tasks = [Task(name, f"{name}, seed {seed}", "online", method, spec, seed,
                  {**rl_settings(alignment, **extra), "judge": judging}, oracle=oracle)
             for name, (method, spec, extra, oracle) in designs(preset).items()
             for seed in preset.seeds]
    outcomes = run_tasks(tasks, study.world.layout.folder, alignment, args.workers, judge)
    runs: dict[str, list[dict[str, Any]]] = {name: [figures] for name, figures in fixed.items()}
    for task, figures in zip(tasks, outcomes, strict=True):
        runs.setdefault(task.cell, []).append(figures)
    table = {name: _figures(each) for name, each in runs.items()}
    result = {"preset": asdict(preset), "rl": rl_settings(alignment),
              "designs": {name: {"method": method, "spec": spec, "oracle": oracle}
                          for name, (method, spec, _, oracle) in designs(preset).items()},
              "table": table, "runs": runs}
    report = save_study("retention", args, started, result, _plot, _markdown,
                        per_worker=args.workers > 1)
    return {"table": table, "results": str(report)}


SESSION = ("true_watch_time", "session_length", "coverage")
HORIZON = ("watch_time", "watch_time_per_session", "sessions", "active_days",
           "next_day_retention", "return_rate", "churn_rate", "coverage", "diversity")


def _figures(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    figures = {f"session_{name}": spread([run["session"][name] for run in runs])
               for name in SESSION}
    figures.update({f"days_{name}": spread([run["days"][name] for run in runs])
                    for name in HORIZON})
    return figures


def _plot(result: dict[str, Any], path: Path) -> None:
    """Session watch time against watch time over the horizon, one point per policy (mean
    ± std over seeds); and active days, next-day retention by policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = result["table"]
    figure, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    for name, f in table.items():
        axes[0].errorbar(f["session_true_watch_time"]["mean"], f["days_watch_time"]["mean"] / 3600,
                         xerr=f["session_true_watch_time"]["std"],
                         yerr=f["days_watch_time"]["std"] / 3600, marker="o", capsize=3,
                         label=name)
    axes[0].set_xlabel("true watch time of one session (s)")
    axes[0].set_ylabel(f"watch time over {result['preset']['days']:g} days (h)")
    axes[0].set_title("the session against the week", fontsize=10)
    axes[0].legend(fontsize=7)
    names = list(table)
    for axis, figure_name, title in ((axes[1], "days_active_days", "active days"),
                                     (axes[2], "days_next_day_retention",
                                      "next-day retention")):
        values = [table[name][figure_name] for name in names]
        axis.barh(range(len(names)), [v["mean"] for v in values],
                  xerr=[v["std"] for v in values], capsize=2)
        axis.set_yticks(range(len(names)), names, fontsize=7)
        axis.set_title(f"{title} (mean ± std over seeds)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _gap(first: dict[str, float], second: dict[str, float]) -> tuple[float, bool]:
    """first - second of two spreads, and whether it exceeds their pooled std."""
    gap, pooled = pooled_gap(first, second)
    return gap, pooled > 0 and abs(gap) > pooled


def _reading(result: dict[str, Any]) -> list[str]:
    """Each trained policy against the pre-trained one on both scales (the numbers decide)."""
    table, lines = result["table"], []
    base = table["pre-trained"]
    for name in result["designs"]:
        f = table[name]
        session_gap = _gap(f["session_true_watch_time"], base["session_true_watch_time"])
        week_gap = _gap(f["days_watch_time"], base["days_watch_time"])
        verdict = ("wins the session and loses the horizon" if session_gap[0] > 0 > week_gap[0]
                   else "loses the session and wins the horizon"
                   if session_gap[0] < 0 < week_gap[0] else "moves both the same way")
        verdict += (" (both gaps beyond one pooled std)" if session_gap[1] and week_gap[1]
                    else " (within the seed noise on at least one scale)")
        lines.append(
            f"- {name} against pre-trained: session "
            f"{gap_text(f['session_true_watch_time'], base['session_true_watch_time'], 0, ' s')}"
            f"; horizon {gap_text(f['days_watch_time'], base['days_watch_time'], 0, ' s')}; "
            f"active days {gap_text(f['days_active_days'], base['days_active_days'], 2)}; "
            f"next-day retention "
            f"{gap_text(f['days_next_day_retention'], base['days_next_day_retention'], 3)}: "
            f"{verdict}.")
    return lines


def _markdown(result: dict[str, Any], suffix: str) -> str:
    preset, rl, table = result["preset"], result["rl"], result["table"]
    rows = [f"| {name} | {mean_std(f['session_true_watch_time'], 0)} | "
            f"{mean_std(f['days_watch_time'], 0)} | {mean_std(f['days_watch_time_per_session'], 0)}"
            f" | {mean_std(f['days_sessions'], 2)} | {mean_std(f['days_active_days'], 2)} | "
            f"{mean_std(f['days_next_day_retention'], 3)} | {mean_std(f['days_return_rate'], 3)} | "
            f"{mean_std(f['days_churn_rate'], 3)} | {mean_std(f['days_coverage'], 4)} |"
            for name, f in table.items()]
    return "\n".join([
        "# Retention: the session against the week",
        "",
        f"Command: `{result['command']}` ({result['seconds']:.0f} s; {result['machine']}).",
        "",
        "From the alignment study's pre-trained checkpoint; every trained policy "
        f"{rl['max_steps']} steps of {rl['users_per_step']} users x G = "
        f"{rl['num_generations']}, lr {rl['learning_rate']}, seeds {list(preset['seeds'])}. "
        "Session: the alignment study's users, at most 20 requests. Horizon: "
        f"{preset['day_users']} users over {preset['days']:g} days of `OneRec/Days-v0` "
        "(sessions of at most 20 requests, the return model between them: "
        "envs/README.md, \"Days and returns\"). Designs: " + "; ".join(
            f"{name} = `{d['method']}` on `{d['spec']}`" for name, d in result["designs"].items())
        + ". Mean ± std over seeds (the baselines and the pre-trained policy do not train).",
        "",
        "| policy | session watch time (s) | watch time over the horizon (s) | per session (s) "
        "| sessions | active days | next-day retention | return rate | churn | coverage |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"![retention](retention{suffix}.png)",
        "",
        "## Reading",
        "",
        *_reading(result),
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    return study_main("benchmarks.retention", __doc__.splitlines()[0], RetentionBenchArgs, run,
                      argv)


if __name__ == "__main__":
    sys.exit(main())
