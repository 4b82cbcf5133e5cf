"""Legality and stability under pressure: the format reward, next-token co-training, and
ECPO's early clip at a learning rate where the ratio runs away.

    python -m benchmarks.legality [--preset full|smoke] [--workers N]

From the alignment study's world and pre-trained checkpoint (`benchmarks.study`), over seeds:

1. ECPO on "pscore" and on "pscore + 0.5*format", each with next-token co-training weight 1.0
   (the lab's default) and 0.1 (weak): does the policy keep generating real items under
   unconstrained decoding? (The report: without the format reward legality fell below 50%.)
2. GRPO against ECPO at an extreme step (lr `extreme_learning_rate`, `extreme_iterations`
   updates per rollout, no gradient clipping, weak co-training): GRPO's ratio on negative
   advantages is unbounded, ECPO's is capped at 1 + epsilon + delta.

Writes `legality<suffix>.md`, `.json` and `.png` under `--results`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.alignment import REWARDS, Task, rl_settings, shared_study, train_cells
from benchmarks.study import WorldStudyArgs, mean_std, save_study, spread, study_main

NTP_WEIGHTS = (1.0, 0.1)  # the lab's default co-training, and a weak one


@dataclass(frozen=True)
class LegalityPreset:
    """Sizes of one run of the study (the world is the alignment study's)."""

    seeds: tuple[int, ...]  # training seeds of every variant
    extreme_learning_rate: float  # the stability part's step size
    extreme_iterations: int  # its updates per rollout
    extreme_steps: int  # its RL steps


PRESETS = {
    "full": LegalityPreset(seeds=(0, 1, 2), extreme_learning_rate=1e-2, extreme_iterations=8,
                           extreme_steps=20),
    "smoke": LegalityPreset(seeds=(0,), extreme_learning_rate=1e-2, extreme_iterations=2,
                            extreme_steps=2),
}


@dataclass
class LegalityBenchArgs(WorldStudyArgs):
    """Arguments of `python -m benchmarks.legality`."""

    workers: int = 1  # processes training the runs side by side (one torch thread each)


def _tasks(alignment: Any, preset: LegalityPreset) -> list[Task]:
    tasks = []
    for reward in ("pscore", "pscore+format"):
        for ntp in NTP_WEIGHTS:
            for seed in preset.seeds:
                tasks.append(Task(f"ecpo on {reward}, ntp {ntp}", f"{reward} ntp {ntp} {seed}",
                                  "online", "ecpo", REWARDS[reward], seed,
                                  rl_settings(alignment, ntp_weight=ntp)))
    for loss_type in ("grpo", "ecpo"):
        for seed in preset.seeds:
            tasks.append(Task(f"{loss_type}, extreme step", f"{loss_type} extreme {seed}",
                              "online", loss_type, REWARDS["pscore+format"], seed, rl_settings(
                                  alignment, learning_rate=preset.extreme_learning_rate,
                                  num_iterations=preset.extreme_iterations,
                                  max_steps=preset.extreme_steps, max_grad_norm=0.0,
                                  ntp_weight=0.1)))
    return tasks


def run(args: LegalityBenchArgs) -> dict[str, Any]:
    started = time.perf_counter()
    preset = PRESETS[args.preset]
    alignment, study = shared_study(args)
    tasks = _tasks(alignment, preset)
    cells = train_cells(tasks, study, alignment, args.workers)
    table = {}
    for name, cell in cells.items():
        curves = cell["curves"]
        table[name] = {
            "true_watch_time": spread([r["true_watch_time"] for r in cell["runs"]]),
            "legality": spread([r["legality"] for r in cell["runs"]]),
            "lowest_rollout_legality": spread([min(h["charts/legality"] for h in c)
                                                for c in curves]),
            "ratio_max": spread([max(h["charts/ratio_max"] for h in c) for c in curves]),
            "grad_norm_max": spread([max(h["charts/grad_norm"] for h in c) for c in curves]),
        }
    result = {
        "preset": asdict(preset),
        "rl": rl_settings(alignment),
        "table": table,
        "curves": {name: cell["curves"] for name, cell in cells.items()},
    }
    report = save_study("legality", args, started, result, _plot, _markdown, per_worker=True)
    return {"table": table, "results": str(report)}


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(17, 4.3))
    colours = {"ecpo on pscore, ntp 1.0": "tab:blue", "ecpo on pscore, ntp 0.1": "tab:red",
               "ecpo on pscore+format, ntp 1.0": "tab:green",
               "ecpo on pscore+format, ntp 0.1": "tab:orange"}
    for name, colour in colours.items():
        for index, history in enumerate(result["curves"][name]):
            axes[0].plot([h["charts/legality"] for h in history], color=colour,
                         label=name if index == 0 else None, alpha=0.8)
    axes[0].set_title("legality of the rollouts (unconstrained beams)")
    axes[0].set_xlabel("ECPO step")
    axes[0].set_ylabel("share of generated codes that are real items")
    axes[0].legend(fontsize=8)
    for loss_type, colour in (("grpo", "tab:red"), ("ecpo", "tab:blue")):
        for index, history in enumerate(result["curves"][f"{loss_type}, extreme step"]):
            label = loss_type.upper() if index == 0 else None
            axes[1].plot([h["charts/ratio_max"] for h in history], color=colour, label=label)
            axes[2].plot([h["charts/legality"] for h in history], color=colour, label=label)
    axes[1].set_yscale("log")
    axes[1].set_title("largest ratio pi / pi_old in a step (extreme step)")
    axes[2].set_title("legality of the rollouts (extreme step)")
    for axis in axes[1:]:
        axis.set_xlabel("step")
        axis.legend()
    axes[2].set_ylabel("share legal")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _markdown(result: dict[str, Any], suffix: str) -> str:
    preset, rl = result["preset"], result["rl"]

    rows = [f"| {name} | {mean_std(f['true_watch_time'], 0)} | {mean_std(f['legality'], 3)} | "
            f"{mean_std(f['lowest_rollout_legality'], 3)} | {mean_std(f['ratio_max'], 2)} | "
            f"{mean_std(f['grad_norm_max'], 2)} |" for name, f in result["table"].items()]
    return "\n".join([
        "# Legality and stability: format reward, co-training, ECPO's early clip",
        "",
        f"Command: `{result['command']}` ({result['seconds']:.0f} s; {result['machine']}).",
        "",
        "From the alignment study's pre-trained checkpoint; every run "
        f"{rl['max_steps']} steps of {rl['users_per_step']} users x G = "
        f"{rl['num_generations']} unconstrained beams, lr {rl['learning_rate']}, except the "
        f"extreme-step rows: lr {preset['extreme_learning_rate']}, "
        f"{preset['extreme_iterations']} updates per rollout, {preset['extreme_steps']} steps, "
        "no gradient clipping, co-training weight 0.1, reward `pscore + 0.5*format`. "
        f"Mean ± std over seeds {list(preset['seeds'])}; evaluation on the alignment study's "
        "users (legality = share of served slots whose code is a real item).",
        "",
        "| run | true watch time / session (s) | legality (served) | lowest rollout legality |"
        " largest ratio | largest gradient norm |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"![legality](legality{suffix}.png)",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    return study_main("benchmarks.legality",
                      __doc__.splitlines()[0], LegalityBenchArgs, run, argv)


if __name__ == "__main__":
    sys.exit(main())
