"""ECPO and GBPO against GRPO as the learning rate grows: negative-advantage gradients and
outcomes.

    python -m benchmarks.stability [--preset full|smoke] [--workers N]

From the alignment study's world and pre-trained checkpoint (`benchmarks.study`), GRPO,
ECPO and GBPO (OneRec-V2) train on "pscore + 0.5*format" with no gradient clipping (the clip
would hide how large the gradients get) and the lab's next-token co-training, at each
learning rate of `learning_rates`, over seeds, in two regimes where the ratio pi / pi_old
leaves 1 (where the three losses differ):

- on-policy: pi_old is the policy that sampled the rollout, updated `iterations` times on it;
- pre-trained reference: pi_old is the frozen pre-trained policy (the report's ablation of the
  reference), one update per rollout, so the ratio accumulates over the whole run.

Every update charts the factor in front of
grad log pi on the samples with a negative advantage (`charts/negative_weight_max`: GRPO's
rho |A| grows with the ratio, ECPO's is capped at (1 + eps + delta) |A|, GBPO's at
|A| pi / (1 - pi), binary cross-entropy's) and the norm of their
part of the gradient (`charts/negative_grad_norm`); every run is then evaluated in the
simulator (true watch time per session, legality).

Writes `stability<suffix>.md`, `.json` and `.png` under `--results`.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.alignment import REWARDS, Task, rl_settings, shared_study, train_cells
from benchmarks.study import (
    WorldStudyArgs,
    gap_text,
    mean_std,
    save_study,
    spread,
    study_main,
)

LOSSES = ("grpo", "ecpo", "gbpo")  # GRPO first: the others are read against it
REWARD = "pscore+format"


@dataclass(frozen=True)
class StabilityPreset:
    """Sizes of one run of the study (the world is the alignment study's)."""

    seeds: tuple[int, ...]  # training seeds of every (regime, loss, learning rate) cell
    learning_rates: tuple[float, ...]  # AdamW steps, smallest first
    iterations: int  # updates per rollout in the on-policy regime (TRL's num_iterations)
    steps: int  # RL steps per run
    curve_learning_rate: float  # the learning rate whose per-update curves are plotted


# regime -> (reference, updates per rollout or None for the preset's `iterations`)
REGIMES = {"on-policy": ("current", None), "pre-trained reference": ("pretrained", 1)}

PRESETS = {
    "full": StabilityPreset(seeds=(0, 1, 2), learning_rates=(1e-3, 2e-3, 3e-3, 1e-2), iterations=4,
                            steps=20, curve_learning_rate=2e-3),
    "smoke": StabilityPreset(seeds=(0,), learning_rates=(1e-2,), iterations=2, steps=2,
                             curve_learning_rate=1e-2),
}


@dataclass
class StabilityBenchArgs(WorldStudyArgs):
    """Arguments of `python -m benchmarks.stability`."""

    workers: int = 1  # processes training the runs side by side (one torch thread each)


def _cell(regime: str, loss_type: str, learning_rate: float) -> str:
    return f"{regime}: {loss_type}, lr {learning_rate:g}"


def _tasks(alignment: Any, preset: StabilityPreset) -> list[Task]:
    return [
        Task(_cell(regime, loss_type, learning_rate),
             f"{regime} {loss_type} lr {learning_rate:g} {seed}", "online", loss_type,
             REWARDS[REWARD], seed, rl_settings(
                 alignment, learning_rate=learning_rate, reference=reference,
                 num_iterations=iterations or preset.iterations, max_steps=preset.steps,
                 max_grad_norm=0.0, log_negative_gradient=True))
        for regime, (reference, iterations) in REGIMES.items()
        for learning_rate in preset.learning_rates
        for loss_type in LOSSES
        for seed in preset.seeds
    ]


def _figures(runs: list[dict[str, Any]], curves: list[list[dict[str, float]]]) -> dict:
    """One cell's figures over its seeds: outcome of the trained policy, extremes of the run."""

    def largest(name: str) -> dict[str, float]:
        return spread([max(step[name] for step in curve) for curve in curves])

    return {
        "true_watch_time": spread([run["true_watch_time"] for run in runs]),
        "legality": spread([run["legality"] for run in runs]),
        "proxy_reward": spread([run["proxy_reward"] for run in runs]),
        "lowest_rollout_legality": spread([min(s["charts/legality"] for s in c) for c in curves]),
        "ratio_max": largest("charts/ratio_max"),
        "negative_weight_max": largest("charts/negative_weight_max"),
        "negative_grad_norm_max": largest("charts/negative_grad_norm"),
        "grad_norm_max": largest("charts/grad_norm"),
    }


def run(args: StabilityBenchArgs) -> dict[str, Any]:
    started = time.perf_counter()
    preset = PRESETS[args.preset]
    alignment, study = shared_study(args)
    tasks = _tasks(alignment, preset)
    pretrained = study.evaluate_policy(copy.deepcopy(study.start))
    cells = train_cells(tasks, study, alignment, args.workers)
    table = {name: _figures(cell["runs"], cell["curves"]) for name, cell in cells.items()}
    result = {
        "preset": asdict(preset),
        "rl": rl_settings(alignment),
        "pretrained": {name: pretrained[name] for name in ("true_watch_time", "legality")},
        "table": table,
        "curves": {name: cell["curves"] for name, cell in cells.items()},
    }
    report = save_study("stability", args, started, result, _plot, _markdown, per_worker=True)
    return {"table": table, "results": str(report)}


CHARTS = (("charts/negative_weight_max", "largest factor on grad log pi, A < 0", True),
          ("charts/negative_grad_norm", "gradient norm of the A < 0 samples", True),
          ("charts/true_watch_time", "true watch time of the rollouts (s / item)", False),
          ("charts/legality", "legality of the rollouts", False))


def _plot(result: dict[str, Any], path: Path) -> None:
    """A row of per-update curves per regime (every seed, at `curve_learning_rate`), then
    the evaluated outcome and the largest negative-advantage factor against the lr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    preset = result["preset"]
    shown = preset["curve_learning_rate"]
    colours = {"grpo": "tab:red", "ecpo": "tab:blue", "gbpo": "tab:green"}
    figure, axes = plt.subplots(len(REGIMES) + 1, len(CHARTS),
                                figsize=(5 * len(CHARTS), 4.3 * (len(REGIMES) + 1)))
    for row, regime in enumerate(REGIMES):
        for column, (name, title, log_scale) in enumerate(CHARTS):
            axis = axes[row, column]
            for loss_type in LOSSES:
                for index, curve in enumerate(result["curves"][_cell(regime, loss_type, shown)]):
                    axis.plot(range(1, len(curve) + 1), [step[name] for step in curve],
                              color=colours[loss_type], alpha=0.8,
                              label=loss_type.upper() if index == 0 else None)
            axis.set_title(f"{title}\n({regime}, lr {shown:g}, every seed)", fontsize=10)
            axis.set_xlabel("RL step")
            if log_scale:
                axis.set_yscale("log")
            axis.legend(fontsize=8)
    rates = preset["learning_rates"]
    bottom = (("true_watch_time", "true watch time / session (s), evaluated"),
              ("legality", "legality of served slots, evaluated"),
              ("negative_weight_max", "largest factor on grad log pi, A < 0"),
              ("negative_grad_norm_max", "largest A < 0 gradient norm"))
    styles = dict(zip(REGIMES, ("--", "-"), strict=True))
    for column, (name, title) in enumerate(bottom):
        axis = axes[-1, column]
        for regime in REGIMES:
            for loss_type in LOSSES:
                figures = [result["table"][_cell(regime, loss_type, rate)][name]
                           for rate in rates]
                axis.errorbar(rates, [f["mean"] for f in figures],
                              yerr=[f["std"] for f in figures], color=colours[loss_type],
                              linestyle=styles[regime], marker="o", capsize=3,
                              label=f"{loss_type.upper()}, {regime}")
        if name in result["pretrained"]:
            axis.axhline(result["pretrained"][name], color="grey", linestyle=":",
                         label="pre-trained policy")
        axis.set_xscale("log")
        if name.startswith("negative"):
            axis.set_yscale("log")
        axis.set_xlabel("learning rate")
        axis.set_title(f"{title}\n(mean ± std over seeds)", fontsize=10)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _reading(result: dict[str, Any]) -> list[str]:
    """What the table says, computed from it: where ECPO's and GBPO's outcomes are above
    GRPO's, by how many pooled standard deviations, and how far each loss's negative factor
    went."""
    lines = []
    for regime in REGIMES:
        for rate in result["preset"]["learning_rates"]:
            lines.append(_reading_line(result, regime, rate))
    return lines


def _reading_line(result: dict[str, Any], regime: str, rate: float) -> str:
    cells = {loss: result["table"][_cell(regime, loss, rate)] for loss in LOSSES}
    gaps = [f"{loss.upper()} - GRPO true watch time " + gap_text(
        cells[loss]["true_watch_time"], cells["grpo"]["true_watch_time"], 0, " s/session")
        for loss in LOSSES[1:]]

    def each(name: str, digits: int) -> str:
        return ", ".join(f"{loss.upper()} {cells[loss][name]['max']:.{digits}f}"
                         for loss in LOSSES)

    return (f"- {regime}, lr {rate:g}: {'; '.join(gaps)}; largest factor on a negative sample "
            f"{each('negative_weight_max', 1)}; largest A < 0 gradient norm "
            f"{each('negative_grad_norm_max', 1)}; largest ratio {each('ratio_max', 2)}.")


def _markdown(result: dict[str, Any], suffix: str) -> str:
    preset, rl = result["preset"], result["rl"]

    rows = [f"| {name} | {mean_std(f['true_watch_time'], 0)} | {mean_std(f['legality'], 3)} | "
            f"{mean_std(f['lowest_rollout_legality'], 3)} | {mean_std(f['ratio_max'], 2)} | "
            f"{mean_std(f['negative_weight_max'], 2)} | {mean_std(f['negative_grad_norm_max'], 2)} | "
            f"{mean_std(f['grad_norm_max'], 2)} |" for name, f in result["table"].items()]
    pretrained = result["pretrained"]
    return "\n".join([
        "# Stability: ECPO and GBPO against GRPO as the learning rate grows",
        "",
        f"Command: `{result['command']}` ({result['seconds']:.0f} s; {result['machine']}).",
        "",
        "From the alignment study's pre-trained checkpoint (true watch time "
        f"{pretrained['true_watch_time']:.0f} s/session, legality "
        f"{pretrained['legality']:.3f}); every run {preset['steps']} steps of "
        f"{rl['users_per_step']} users x G = {rl['num_generations']} unconstrained beams, "
        f"on-policy with {preset['iterations']} updates per rollout or against the frozen "
        "pre-trained reference with 1, no gradient clipping, next-token "
        f"co-training weight {rl['ntp_weight']}, reward `{REWARDS[REWARD]}`, epsilon 0.2, "
        f"delta 0.1 (ECPO's cap 1.3). Mean ± std over seeds {list(preset['seeds'])}; "
        "evaluation on the alignment study's users. \"factor\": |dJ/d log pi_i| x B G on "
        "samples with a negative advantage (GRPO: rho |A|; ECPO: at most 1.3 |A|; GBPO: "
        "|A| pi / max(pi_old, 1 - pi), at most |A| pi / (1 - pi)); GBPO has no clip and "
        "its \"largest ratio\" is pi / pi'_old; \"A < 0 "
        "gradient\": the norm of those samples' part of the parameter gradient (averaged "
        "over a step's updates); the table shows the largest of each over a run.",
        "",
        "| run | true watch time / session (s) | legality (served) | lowest rollout legality |"
        " largest ratio | largest factor, A < 0 | largest A < 0 gradient | largest gradient |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"![stability](stability{suffix}.png)",
        "",
        "## Reading",
        "",
        *_reading(result),
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    return study_main("benchmarks.stability", __doc__.splitlines()[0], StabilityBenchArgs, run,
                      argv)


if __name__ == "__main__":
    sys.exit(main())
