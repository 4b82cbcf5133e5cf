"""Reward hacking: the proxy an RL run optimises against the truth it should raise.

    python -m benchmarks.hacking [--preset full|smoke] [--work DIR] [--results DIR]

Two P-scores are fitted on logs of the study world's cascade (`benchmarks.study`): one on
little data, one on much (fresh users in both, the same epochs and Pareto search). From the
world's one pre-trained checkpoint, ECPO optimises "pscore + 0.5*format" with each, and every
step logs the P-score of its rollouts (the proxy the run sees) next to the simulator's
expected watch time of the same rollouts (the truth it never sees). Hacking is the proxy
rising while the truth stalls or falls. The end policies are also evaluated in whole
sessions on the same users, with the truth and with both proxies.

Writes `hacking<suffix>.md`, `.json` and `hacking<suffix>.png` under `--results`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.alignment import NTP_WEIGHT, shared_study
from benchmarks.study import WorldStudyArgs, save_study, study_main
from envs.logs import collect_sessions
from policies.cascade import CascadeRecommender
from rewards import ParetoConfig, PScoreTrainConfig, fit_pscore

REWARD = "pscore + 0.5*format"
LOG_SEED = 5_000_000  # first user seed of the proxies' logs: apart from the world's users
START_STEPS = 5  # the plot's curves are relative to the mean of the first steps


@dataclass(frozen=True)
class HackingPreset:
    """Sizes of one run of the study (the world is the alignment study's)."""

    little_users: int  # logged sessions behind the small-data proxy
    much_users: int  # logged sessions behind the large-data proxy
    log_requests: int  # most requests per logged session
    pscore_epochs: int  # passes of each P-score fit
    steps: int  # ECPO steps per run
    users: int  # users per ECPO step
    generations: int  # G per user
    learning_rate: float  # AdamW step of the runs
    seeds: tuple[int, ...]  # ECPO seeds per proxy


PRESETS = {
    "full": HackingPreset(little_users=60, much_users=3000, log_requests=10, pscore_epochs=4,
                          steps=60, users=16, generations=16, learning_rate=3e-4,
                          seeds=(0, 1)),
    "smoke": HackingPreset(little_users=10, much_users=40, log_requests=3, pscore_epochs=1,
                           steps=2, users=4, generations=8, learning_rate=3e-4, seeds=(0,)),
}


HackingBenchArgs = WorldStudyArgs  # the arguments of `python -m benchmarks.hacking`: none of its own


def run(args: HackingBenchArgs) -> dict[str, Any]:
    started = time.perf_counter()
    preset = PRESETS[args.preset]
    alignment, study = shared_study(args, proxy_spec=REWARD)
    cascade = CascadeRecommender.load(study.world.cascade_path)

    proxies, fits = {}, {}
    for name, users in (("little data", preset.little_users), ("much data", preset.much_users)):
        logs = collect_sessions(cascade, study.catalog, users, preset.log_requests, LOG_SEED,
                                config=study.session_config, policy_name="cascade")
        fit = fit_pscore(logs, study.catalog, PScoreTrainConfig(
            epochs=preset.pscore_epochs, pareto=ParetoConfig(steps=100)))
        proxies[name] = fit.model
        fits[name] = {"sessions": users, "impressions": int(logs.num_requests
                                                               * study.session_config.slate_size),
                      "pscore_auc": fit.report["pscore_auc"]}

    evaluations: dict[str, dict[str, Any]] = {}

    def evaluate(name: str, policy: Any) -> None:
        """The truth, and the served slates' reward under each proxy."""
        figures = {proxy_name: study.evaluate_policy(policy, pscore=model)
                   for proxy_name, model in proxies.items()}
        first = next(iter(figures.values()))  # the same sessions: the proxy only scores them
        evaluations[name] = {
            "true_watch_time": first["true_watch_time"],
            "true_watch_time_sem": first["true_watch_time_sem"],
            "session_length": first["session_length"],
            "shown_duration_s": first["shown_duration_s"],
            **{f"proxy ({proxy_name})": figures[proxy_name]["proxy_reward"]
               for proxy_name in proxies},
        }

    evaluate("pretrained", study.start)
    curves: dict[str, list[dict[str, float]]] = {}
    for proxy_name, model in proxies.items():
        for seed in preset.seeds:
            name = f"ECPO on the {proxy_name} proxy, seed {seed}"
            policy, curves[name] = study.train(
                "ecpo", REWARD, seed, pscore=model, learning_rate=preset.learning_rate,
                max_steps=preset.steps, users_per_step=preset.users,
                num_generations=preset.generations, ntp_weight=NTP_WEIGHT)
            evaluate(name, policy)

    summary = {}
    for name, history in curves.items():
        window = max(1, len(history) // 5)  # first and last fifth of the run, averaged
        summary[name] = {
            "proxy_start": float(np.mean([h["rewards/pscore"] for h in history[:window]])),
            "proxy_end": float(np.mean([h["rewards/pscore"] for h in history[-window:]])),
            "truth_start": float(np.mean([h["charts/true_watch_time"]
                                          for h in history[:window]])),
            "truth_end": float(np.mean([h["charts/true_watch_time"]
                                        for h in history[-window:]])),
        }
    result = {
        "preset": asdict(preset),
        "world": asdict(alignment.world),
        "proxies": fits,
        "evaluations": evaluations,
        "summary": summary,
        "curves": curves,
    }
    report = save_study("hacking", args, started, result,
                        lambda saved, path: _plot(saved["curves"], path), _markdown)
    return {"summary": summary, "evaluations": evaluations, "proxies": fits,
            "results": str(report)}


def _smooth(values: list[float], window: int = 5) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.size < window:
        return array
    kernel = np.ones(window) / window
    return np.convolve(np.pad(array, (window - 1, 0), mode="edge"), kernel, mode="valid")


def _plot(curves: dict[str, list[dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    colours = {"little data": "tab:red", "much data": "tab:blue"}
    for name, history in curves.items():
        colour = next(c for proxy, c in colours.items() if proxy in name)
        steps = np.arange(1, len(history) + 1)
        proxy = np.asarray([h["rewards/pscore"] for h in history])
        truth = np.asarray([h["charts/true_watch_time"] for h in history])
        style = "-" if name.endswith("seed 0") else "--"
        start = slice(0, START_STEPS)  # each step has new users: one step is a noisy anchor
        axes[0].plot(steps, _smooth(list(proxy / proxy[start].mean())), style, color=colour,
                     label=name)
        axes[1].plot(steps, _smooth(list(truth / truth[start].mean())), style, color=colour,
                     label=name)
    axes[0].set_title("proxy: the run's own P-score of its rollouts")
    axes[1].set_title("truth: expected watch time of the same rollouts")
    for axis in axes:
        axis.axhline(1.0, color="grey", linewidth=0.8)
        axis.set_xlabel("ECPO step")
        axis.set_ylabel(f"ratio to the first {START_STEPS} steps' mean (5-step moving mean)")
    axes[1].legend(fontsize=8)
    figure.suptitle("Reward hacking: a proxy fitted on little data against one fitted on much")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _markdown(result: dict[str, Any], suffix: str) -> str:
    proxies = list(result["proxies"])
    fit_rows = []
    for name, fit in result["proxies"].items():
        aucs = ", ".join(f"{k} {'n/a' if v is None else f'{v:.3f}'}"  # n/a: no positives
                         for k, v in fit["pscore_auc"].items())
        fit_rows.append(f"| {name} | {fit['sessions']} | {fit['impressions']} | {aucs} |")
    curve_rows = [f"| {name} | {s['proxy_start']:.4f} | {s['proxy_end']:.4f} | "
                  f"{s['truth_start']:.2f} | {s['truth_end']:.2f} |"
                  for name, s in result["summary"].items()]
    evaluation_rows = [
        f"| {name} | {e['true_watch_time']:.0f} ± {e['true_watch_time_sem']:.0f} | "
        f"{e['session_length']:.2f} | {e['shown_duration_s']:.1f} | "
        + " | ".join(f"{e[f'proxy ({p})']:.4f}" for p in proxies) + " |"
        for name, e in result["evaluations"].items()]
    preset = result["preset"]
    return "\n".join([
        "# Reward hacking: proxy against truth over RL steps",
        "",
        f"Command: `{result['command']}` ({result['seconds']:.0f} s; {result['machine']}).",
        "",
        f"World: the alignment study's ({result['world']['items']} items). Two P-scores on "
        f"fresh cascade logs of at most {preset['log_requests']} requests per session, "
        f"{preset['pscore_epochs']} epochs each; ECPO on `{REWARD}` with each, "
        f"{preset['steps']} steps of {preset['users']} users x G = {preset['generations']}, lr "
        f"{preset['learning_rate']}, seeds {list(preset['seeds'])}.",
        "",
        "| proxy | logged sessions | impressions | fused P-score test AUC per objective |",
        "|---|---|---|---|",
        *fit_rows,
        "",
        "Rollouts during training (means over the first and the last fifth of the steps):",
        "",
        "| run | proxy at start | proxy at end | true watch / item at start (s) | "
        "true watch / item at end (s) |",
        "|---|---|---|---|---|",
        *curve_rows,
        "",
        "Whole sessions on the evaluation users (the served slates scored by both proxies):",
        "",
        "| policy | true watch time / session (s) | session length | shown duration (s) | "
        + " | ".join(f"proxy ({p})" for p in proxies) + " |",
        "|---|---|---|---|" + "---|" * len(proxies),
        *evaluation_rows,
        "",
        f"![hacking](hacking{suffix}.png)",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    return study_main("benchmarks.hacking",
                      __doc__.splitlines()[0], HackingBenchArgs, run, argv)


if __name__ == "__main__":
    sys.exit(main())
