"""OneRec-V2's alignment experiments asked of the simulator: reward source, legacy negatives,
share of on-policy samples.

    python -m benchmarks.v2 [--preset full|smoke] [--workers N]

From the alignment study's world and pre-trained checkpoint (`benchmarks.study`), every run
trains with the alignment matrix's settings (`benchmarks.alignment.rl_settings`) and is then
evaluated in the simulator on the same users with the TRUE outcome: watch time per session
(V2's stay time), session length, views (clicks) per session and each interaction per
impression. Three parts (arXiv 2508.20900, sec. 3.1.2 and its Tables 6 and 7):

(a) reward source: the reward model ("pscore + 0.5*format", the production-style proxy),
    the simulated user's observed feedback with duration-aware shaping (`feedback_rl`), and a
    hybrid of both (`feedback_rl` with `reward_model_weight`), each under GBPO and ECPO;
(b) legacy negatives: GRPO, ECPO and GBPO when `legacy_share` of every group is the logging
    cascade's exposures (pi_old unknown, taken as sg(pi_theta)), against none, without
    gradient clipping: the factor on grad pi of the negative samples (GRPO's and ECPO's
    |A| / pi against GBPO's at most |A| / (1 - pi)) and their gradient norm, per update;
(c) share of on-policy samples under feedback RL (GBPO): 0, 25, 50, 100% of each group
    sampled by the policy, the rest legacy exposures (V2's Table 6 asks this).

Writes `v2<suffix>.md`, `.json` and `.png` under `--results`.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.alignment import REWARDS, Task, rl_settings, shared_study, train_cells
from benchmarks.study import (
    WorldStudyArgs,
    gap_text,
    mean_std,
    save_study,
    spread,
    study_main,
)

PROXY = REWARDS["pscore+format"]  # the reward model of part (a), charted in every run
SOURCE_LOSSES = ("gbpo", "ecpo")  # V2's loss and V1's, for part (a)
LEGACY_LOSSES = ("grpo", "ecpo", "gbpo")  # part (b), GRPO first: the others read against it
INTERACTIONS = ("like", "comment", "follow", "forward", "hate")

# V2's online A/B figures (arXiv 2508.20900), relative to OneRec-V1, in percent.
V2_TABLE_6 = {"without on-policy samples": {"stay time": 0.165, "views": -0.901,
                                            "comments": -4.982},
              "with on-policy samples": {"stay time": 0.227, "likes": 2.897, "comments": 6.392}}
V2_TABLE_7 = {"reward model": {"stay time": 0.269, "comments": 15.472},
              "user feedback": {"stay time": 0.299, "comments": 0.944},
              "hybrid": {"stay time": 0.283, "comments": 8.763}}


@dataclass(frozen=True)
class V2Preset:
    """Sizes of one run of the study (the world and RL sizes are the alignment study's)."""

    seeds: tuple[int, ...]  # training seeds of every cell
    hybrid_weight: float  # reward_model_weight of the hybrid source (part a)
    legacy_share: float  # share of each group from the logging policy (part b)
    on_policy_shares: tuple[float, ...]  # part (c): shares of each group the policy samples


PRESETS = {
    "full": V2Preset(seeds=(0, 1, 2), hybrid_weight=1.0, legacy_share=0.5,
                     on_policy_shares=(0.0, 0.25, 0.5, 1.0)),
    "smoke": V2Preset(seeds=(0,), hybrid_weight=1.0, legacy_share=0.5,
                      on_policy_shares=(0.0, 0.5, 1.0)),
}


@dataclass
class V2BenchArgs(WorldStudyArgs):
    """Arguments of `python -m benchmarks.v2`."""

    workers: int = 1  # processes training the runs side by side (one torch thread each)


def source_cell(source: str, loss_type: str) -> str:
    return f"{source}, {loss_type}"


def legacy_cell(share: float, loss_type: str) -> str:
    return f"legacy {share:.0%}: {loss_type}"


def on_policy_cell(share: float) -> str:
    """Part (c)'s cell; all on-policy is part (a)'s feedback run under GBPO (same settings)."""
    return source_cell("user feedback", "gbpo") if share == 1 else f"on-policy {share:.0%}"


def _sources(preset: V2Preset) -> dict[str, tuple[str | None, dict[str, Any]]]:
    """Part (a): source -> (method, or None for the loss itself; extra settings)."""
    return {"reward model": (None, {}),
            "user feedback": ("feedback_rl", {}),
            "hybrid": ("feedback_rl", {"reward_model_weight": preset.hybrid_weight})}


def _tasks(alignment: Any, preset: V2Preset) -> list[Task]:
    tasks = []
    for source, (method, extra) in _sources(preset).items():
        for loss_type in SOURCE_LOSSES:
            settings = rl_settings(alignment, **extra,
                                   **({"loss_type": loss_type} if method else {}))
            tasks += [Task(source_cell(source, loss_type), f"{source} {loss_type} {seed}",
                           "online", method or loss_type, PROXY, seed, settings)
                      for seed in preset.seeds]
    for share in (0.0, preset.legacy_share):
        for loss_type in LEGACY_LOSSES:
            settings = rl_settings(alignment, legacy_share=share, max_grad_norm=0.0,
                                   log_negative_gradient=True)
            tasks += [Task(legacy_cell(share, loss_type), f"legacy {share} {loss_type} {seed}",
                           "online", loss_type, PROXY, seed, settings)
                      for seed in preset.seeds]
    for share in preset.on_policy_shares:
        if share == 1:  # part (a)'s run
            continue
        settings = rl_settings(alignment, loss_type="gbpo", legacy_share=1 - share)
        tasks += [Task(on_policy_cell(share), f"on-policy {share} {seed}", "online",
                       "feedback_rl", PROXY, seed, settings) for seed in preset.seeds]
    return tasks


def outcome(run: dict[str, Any]) -> dict[str, float]:
    """The figures of one evaluated policy that the study compares."""
    rates = run["behaviour_rates"]
    return {"true_watch_time": run["true_watch_time"], "session_length": run["session_length"],
            "views": rates["click"] * run["impressions_per_session"],
            "proxy_reward": run["proxy_reward"], "legality": run["legality"],
            **{f"{name}_rate": rates[name] for name in INTERACTIONS}}


def _figures(runs: list[dict[str, Any]], curves: list[list[dict[str, float]]]) -> dict:
    """One cell over its seeds: the outcome, and the extremes of the per-update charts."""
    outcomes = [outcome(run) for run in runs]
    figures = {name: spread([each[name] for each in outcomes]) for name in outcomes[0]}
    for chart in ("negative_weight_max", "negative_pi_weight_max", "negative_grad_norm"):
        if f"charts/{chart}" in curves[0][0]:
            figures[f"largest_{chart.removesuffix('_max')}"] = spread(
                [max(step[f"charts/{chart}"] for step in curve) for curve in curves])
            figures[f"mean_{chart.removesuffix('_max')}"] = spread(
                [float(np.mean([step[f"charts/{chart}"] for step in curve])) for curve in curves])
    return figures


def change(value: float, reference: float) -> float:
    """Relative change in percent (V2's tables are relative changes)."""
    return 100.0 * (value - reference) / reference if reference else float("nan")


def run(args: V2BenchArgs) -> dict[str, Any]:
    started = time.perf_counter()
    preset = PRESETS[args.preset]
    alignment, study = shared_study(args)
    pretrained = outcome(study.evaluate_policy(copy.deepcopy(study.start)))
    cells = train_cells(_tasks(alignment, preset), study, alignment, args.workers)
    table = {name: _figures(cell["runs"], cell["curves"]) for name, cell in cells.items()}
    result = {
        "preset": asdict(preset),
        "rl": rl_settings(alignment),
        "proxy": PROXY,
        "pretrained": pretrained,
        "table": table,
        "changes": {name: {figure: change(value["mean"], pretrained[figure])
                           for figure, value in figures.items() if figure in pretrained}
                    for name, figures in table.items()},
        "curves": {name: cell["curves"] for name, cell in cells.items()
                   if name.startswith("legacy")},
        "v2_table_6": V2_TABLE_6,
        "v2_table_7": V2_TABLE_7,
    }
    report = save_study("v2", args, started, result, _plot, _markdown, per_worker=True)
    return {"table": table, "results": str(report)}


def _plot(result: dict[str, Any], path: Path) -> None:
    """(a) changes against the pre-trained policy by source; (c) against the on-policy share;
    (b) the per-update factor on grad pi and gradient norm of the negative samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    changes, table, preset = result["changes"], result["table"], result["preset"]
    figure, axes = plt.subplots(2, 3, figsize=(17, 9))
    figures = ("true_watch_time", "views", *[f"{name}_rate" for name in INTERACTIONS])
    sources = [name for name in changes if name.split(", ")[0] in V2_TABLE_7]
    width = 0.8 / len(sources)
    for index, name in enumerate(sources):
        axes[0, 0].bar(np.arange(len(figures)) + (index - (len(sources) - 1) / 2) * width,
                       [changes[name][figure] for figure in figures], width, label=name)
    axes[0, 0].set_xticks(range(len(figures)), [f.removesuffix("_rate") for f in figures],
                          rotation=30)
    axes[0, 0].axhline(0, color="black", linewidth=0.8)
    axes[0, 0].set_ylabel("% change against the pre-trained policy")
    axes[0, 0].set_title("(a) reward source: truth per session, interactions per impression",
                         fontsize=10)
    axes[0, 0].legend(fontsize=7)

    shares = preset["on_policy_shares"]
    for figure_name, colour in (("true_watch_time", "tab:blue"), ("views", "tab:orange"),
                                ("like_rate", "tab:green"), ("comment_rate", "tab:red")):
        axes[0, 1].plot([100 * s for s in shares],
                        [changes[on_policy_cell(s)][figure_name] for s in shares], marker="o",
                        color=colour, label=figure_name.removesuffix("_rate"))
    axes[0, 1].axhline(0, color="black", linewidth=0.8)
    axes[0, 1].set_xlabel("on-policy samples in each group (%), the rest legacy exposures")
    axes[0, 1].set_ylabel("% change against the pre-trained policy")
    axes[0, 1].set_title("(c) feedback RL (GBPO): share of on-policy samples", fontsize=10)
    axes[0, 1].legend(fontsize=7)

    names = list(table)
    watch = [table[name]["true_watch_time"] for name in names]
    axes[0, 2].barh(range(len(names)), [w["mean"] for w in watch],
                    xerr=[w["std"] for w in watch], capsize=2)
    axes[0, 2].axvline(result["pretrained"]["true_watch_time"], color="black", linestyle=":",
                       label="pre-trained")
    axes[0, 2].set_yticks(range(len(names)), names, fontsize=7)
    axes[0, 2].set_xlabel("true watch time / session (s), mean ± std over seeds")
    axes[0, 2].legend(fontsize=7)

    colours = {"grpo": "tab:red", "ecpo": "tab:blue", "gbpo": "tab:green"}
    styles = {0.0: ":", preset["legacy_share"]: "-"}
    for column, (chart, title) in enumerate((
            ("charts/negative_pi_weight_max", "largest factor on grad pi, A < 0"),
            ("charts/negative_weight_max", "largest factor on grad log pi, A < 0"),
            ("charts/negative_grad_norm", "gradient norm of the A < 0 samples"))):
        axis = axes[1, column]
        for share, style in styles.items():
            for loss_type in LEGACY_LOSSES:
                for index, curve in enumerate(result["curves"][legacy_cell(share, loss_type)]):
                    axis.plot(range(1, len(curve) + 1), [step[chart] for step in curve],
                              color=colours[loss_type], linestyle=style, alpha=0.8,
                              label=f"{loss_type.upper()}, legacy {share:.0%}"
                              if index == 0 else None)
        axis.set_yscale("log")
        axis.set_xlabel("RL step")
        axis.set_title(f"(b) {title} (every seed)", fontsize=10)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _gap(table: dict[str, Any], first: str, second: str, figure: str, digits: int,
         unit: str = "") -> str:
    """Cell `first` - cell `second` on `figure` (`benchmarks.study.gap_text`)."""
    return gap_text(table[first][figure], table[second][figure], digits, unit)


def _reading(result: dict[str, Any]) -> list[str]:
    """What the tables say, computed from them (the numbers decide, not the wording)."""
    table, changes, preset = result["table"], result["changes"], result["preset"]
    lines = []
    for loss_type in SOURCE_LOSSES:
        model = source_cell("reward model", loss_type)
        feedback = source_cell("user feedback", loss_type)
        watch_holds = table[feedback]["true_watch_time"]["mean"] > table[model][
            "true_watch_time"]["mean"]
        comments_hold = table[model]["comment_rate"]["mean"] > table[feedback][
            "comment_rate"]["mean"]
        lines.append(
            f"- (a) under {loss_type.upper()}: user feedback - reward model, true watch time "
            f"{_gap(table, feedback, model, 'true_watch_time', 0, ' s/session')} "
            f"({'as' if watch_holds else 'against'} V2: feedback favours stay time); comment "
            f"rate {_gap(table, model, feedback, 'comment_rate', 4)} per impression, reward "
            f"model - feedback ({'as' if comments_hold else 'against'} V2: the reward model "
            f"favours interactions); like rate {_gap(table, model, feedback, 'like_rate', 4)}.")
    share = preset["legacy_share"]
    for loss_type in LEGACY_LOSSES:
        cell, clean = legacy_cell(share, loss_type), legacy_cell(0.0, loss_type)
        lines.append(
            f"- (b) {loss_type.upper()} with {share:.0%} legacy exposures: largest factor on "
            f"grad pi of a negative sample {table[cell]['largest_negative_pi_weight']['max']:.3g}"
            f" (none legacy: {table[clean]['largest_negative_pi_weight']['max']:.3g}); largest "
            f"A < 0 gradient norm {table[cell]['largest_negative_grad_norm']['max']:.3g} "
            f"({table[clean]['largest_negative_grad_norm']['max']:.3g}); true watch time "
            f"{mean_std(table[cell]['true_watch_time'], 0)} s "
            f"({mean_std(table[clean]['true_watch_time'], 0)}).")
    shares = preset["on_policy_shares"]
    none, full = on_policy_cell(shares[0]), on_policy_cell(shares[-1])
    lines.append(
        f"- (c) feedback RL with {shares[0]:.0%} on-policy samples against the pre-trained "
        f"policy: true watch time {changes[none]['true_watch_time']:+.2f}%, views "
        f"{changes[none]['views']:+.2f}%, comments {changes[none]['comment_rate']:+.2f}% "
        f"(V2, without on-policy samples: +0.165%, -0.901%, -4.982%); with "
        f"{shares[-1]:.0%}: {changes[full]['true_watch_time']:+.2f}%, views "
        f"{changes[full]['views']:+.2f}%, likes {changes[full]['like_rate']:+.2f}%, comments "
        f"{changes[full]['comment_rate']:+.2f}% (V2, with on-policy samples: +0.227%, likes "
        f"+2.897%, comments +6.392%). {shares[-1]:.0%} - {shares[0]:.0%} true watch time "
        f"{_gap(table, full, none, 'true_watch_time', 0, ' s/session')}.")
    return lines


def _markdown(result: dict[str, Any], suffix: str) -> str:
    preset, rl, table, changes = (result["preset"], result["rl"], result["table"],
                                  result["changes"])
    pretrained = result["pretrained"]

    def outcome_rows(names: list[str]) -> list[str]:
        return [f"| {name} | {mean_std(table[name]['true_watch_time'], 0)} "
                f"({changes[name]['true_watch_time']:+.1f}%) | "
                f"{mean_std(table[name]['session_length'], 2)} | "
                f"{mean_std(table[name]['views'], 1)} ({changes[name]['views']:+.1f}%) | "
                + " | ".join(f"{table[name][f'{b}_rate']['mean']:.4f} "
                             f"({changes[name][f'{b}_rate']:+.1f}%)" for b in INTERACTIONS)
                + f" | {mean_std(table[name]['proxy_reward'], 4)} | "
                f"{mean_std(table[name]['legality'], 3)} |" for name in names]

    header = ("| run | true watch time / session (s) | session length | views / session | "
              + " | ".join(f"{b} / impression" for b in INTERACTIONS) + " | proxy | legality |")
    rule = "|---" * (6 + len(INTERACTIONS)) + "|"
    pretrained_row = (f"| pre-trained | {pretrained['true_watch_time']:.0f} | "
                      f"{pretrained['session_length']:.2f} | {pretrained['views']:.1f} | "
                      + " | ".join(f"{pretrained[f'{b}_rate']:.4f}" for b in INTERACTIONS)
                      + f" | {pretrained['proxy_reward']:.4f} | {pretrained['legality']:.3f} |")
    sources = [source_cell(source, loss) for source in V2_TABLE_7 for loss in SOURCE_LOSSES]
    shares = [on_policy_cell(share) for share in preset["on_policy_shares"]]
    legacy = [legacy_cell(share, loss) for share in (0.0, preset["legacy_share"])
              for loss in LEGACY_LOSSES]
    legacy_rows = [
        f"| {name} | {mean_std(table[name]['true_watch_time'], 0)} | "
        f"{mean_std(table[name]['legality'], 3)} | "
        f"{mean_std(table[name]['largest_negative_weight'], 2)} | "
        f"{table[name]['largest_negative_pi_weight']['max']:.3g} | "
        f"{table[name]['mean_negative_pi_weight']['mean']:.3g} | "
        f"{mean_std(table[name]['largest_negative_grad_norm'], 3)} | "
        f"{mean_std(table[name]['mean_negative_grad_norm'], 3)} |" for name in legacy]
    return "\n".join([
        "# OneRec-V2's alignment experiments in the simulator",
        "",
        f"Command: `{result['command']}` ({result['seconds']:.0f} s; {result['machine']}).",
        "",
        "From the alignment study's pre-trained checkpoint; every run "
        f"{rl['max_steps']} steps of {rl['users_per_step']} users x G = "
        f"{rl['num_generations']} unconstrained beams, lr {rl['learning_rate']}, next-token "
        f"co-training weight {rl['ntp_weight']}; reward model `{result['proxy']}` (charted in "
        "every run, the \"proxy\" column); feedback RL: the simulated user's drawn reaction to "
        "each exposure, duration buckets floor(log2(d + 1)), +1 for the batch's top 25% of "
        "history percentiles without a hate, -1 on a hate, the rest dropped; hybrid: that "
        f"plus {preset['hybrid_weight']} x the reward model's group-normalised advantage (my "
        "rule: V2 does not give its hybrid's). Legacy exposures: the cascade's top items for "
        "the same user, pi_old := sg(pi_theta). Mean ± std over seeds "
        f"{list(preset['seeds'])}; in brackets the change against the pre-trained policy "
        "(V2's tables are changes against OneRec-V1 in production A/B tests, so only the "
        "directions compare). Views: clicks per session.",
        "",
        "## (a) Reward source",
        "",
        header, rule, pretrained_row, *outcome_rows(sources),
        "",
        "V2's Table 7 (arXiv 2508.20900; % against V1): " + "; ".join(
            f"{source}: stay time {figures['stay time']:+.3f}%, comments "
            f"{figures['comments']:+.3f}%" for source, figures in V2_TABLE_7.items()) + ".",
        "",
        "## (b) Legacy negatives",
        "",
        f"{preset['legacy_share']:.0%} of each group from the cascade against none; no "
        "gradient clipping, so the norms are the losses' own. Factor on grad log pi: |dJ/d "
        "log pi_i| x B G on samples with A < 0; on grad pi: that / pi_i. Largest: over a "
        "run's updates (mean ± std over seeds; the grad-pi column the largest over seeds); "
        "mean: over a run's updates, averaged over seeds.",
        "",
        "| run | true watch time / session (s) | legality | largest factor on grad log pi | "
        "largest factor on grad pi | mean factor on grad pi | largest A < 0 gradient norm | "
        "mean A < 0 gradient norm |",
        "|---|---|---|---|---|---|---|---|",
        *legacy_rows,
        "",
        "## (c) Share of on-policy samples (feedback RL, GBPO)",
        "",
        header, rule, pretrained_row, *outcome_rows(shares),
        "",
        "V2's Table 6 (% against V1): " + "; ".join(
            f"{name}: " + ", ".join(f"{key} {value:+.3f}%" for key, value in figures.items())
            for name, figures in V2_TABLE_6.items()) + ".",
        "",
        f"![v2](v2{suffix}.png)",
        "",
        "## Reading",
        "",
        *_reading(result),
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    return study_main("benchmarks.v2", __doc__.splitlines()[0], V2BenchArgs, run, argv)


if __name__ == "__main__":
    sys.exit(main())
