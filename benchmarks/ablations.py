"""The report's RL ablations, asked of the simulator's truth: Pass@K, group size, rollout
method and reference model.

    python -m benchmarks.ablations [--preset full|smoke] [--work DIR] [--results DIR]

From the study world's one pre-trained checkpoint (`benchmarks.study`):

- group size: ECPO on "pscore + 0.5*format" with G in `group_sizes` (the report: 512 beat 128);
- rollouts: beam search of width G against sampling (top-k / top-p; the report: beam won);
- reference: pi_old on-policy ("current") against the frozen pre-trained policy (the report:
  on-policy won);
- Pass@K: the pre-trained and the ECPO policy each generate K candidates per request by beam
  search, the P-score picks the served slate among them; true watch time per session for K
  in `pass_ks` (K >= the slate of 10; K = 10 is no choice at all) (the report: RL gained +0.49% stay time at Pass@32, +0.09% at Pass@512).

Every variant runs over `seeds` and is evaluated on the same simulated users (true watch time
per session, mean ± std over seeds). Writes `ablations<suffix>.md`, `.json`, `.png`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.alignment import NTP_WEIGHT, shared_study
from benchmarks.study import Study, WorldStudyArgs, save_study, spread, study_main
from rewards import build
from trainers.evaluate import OneRecRecommender

REWARD = "pscore + 0.5*format"


@dataclass(frozen=True)
class AblationPreset:
    """Sizes of one run of the study (the world is the alignment study's)."""

    steps: int  # ECPO steps per run
    users: int  # users per step
    generations: int  # G of the rollout, reference and Pass@K runs
    group_sizes: tuple[int, ...]  # G of the group-size runs
    learning_rate: float  # AdamW step
    seeds: tuple[int, ...]  # training seeds of every variant
    pass_ks: tuple[int, ...]  # candidates K of the Pass@K evaluation
    pass_users: int  # users of the Pass@K evaluation (beam 512 is the costliest)


PRESETS = {
    "full": AblationPreset(steps=30, users=8, generations=32, group_sizes=(8, 32, 128, 512),
                           learning_rate=3e-4, seeds=(0, 1), pass_ks=(10, 32, 128, 512),
                           pass_users=30),
    "smoke": AblationPreset(steps=2, users=2, generations=8, group_sizes=(4, 8),
                            learning_rate=3e-4, seeds=(0,), pass_ks=(10, 16), pass_users=4),
}


AblationBenchArgs = WorldStudyArgs  # the arguments of `python -m benchmarks.ablations`: none of its own


def run(args: AblationBenchArgs) -> dict[str, Any]:
    started = time.perf_counter()
    preset = PRESETS[args.preset]
    alignment, study = shared_study(args, proxy_spec=REWARD)
    base = {"learning_rate": preset.learning_rate, "max_steps": preset.steps,
            "users_per_step": preset.users, "num_generations": preset.generations,
            "ntp_weight": NTP_WEIGHT}

    def variant(**settings: Any) -> dict[str, Any]:
        """ECPO with `settings` over the seeds: true watch time, proxy, legality."""
        runs, policies = [], []
        for seed in preset.seeds:
            policy, _ = study.train("ecpo", REWARD, seed, **{**base, **settings})
            runs.append(study.evaluate_policy(policy))
            policies.append(policy)
        return {"runs": runs, "policies": policies, **{
            figure: spread([r[figure] for r in runs])
            for figure in ("true_watch_time", "proxy_reward", "legality")}}

    pretrained = study.evaluate_policy(study.start)
    parts: dict[str, dict[str, dict[str, Any]]] = {"group size": {}, "rollout": {},
                                                    "reference": {}}
    for size in preset.group_sizes:
        parts["group size"][f"G = {size}"] = variant(num_generations=size)
    default = parts["group size"].get(f"G = {preset.generations}") or variant()
    parts["rollout"]["beam search"] = default
    parts["rollout"]["sampling (top-k 16, top-p 0.95)"] = variant(rollout="sampling", top_k=16,
                                                                  top_p=0.95)
    parts["reference"]["current (on-policy)"] = default
    parts["reference"]["pre-trained (frozen)"] = variant(reference="pretrained")

    # Pass@K: K beams per request, the P-score picks the served slate among them.
    selector = build("pscore", codec=study.start.codec, **study.reward_resources())
    pass_study = Study(study.world, eval_users=preset.pass_users,
                       eval_requests=alignment.eval_requests, proxy_spec=REWARD)
    pass_at_k: dict[str, dict[int, dict[str, float]]] = {"pre-trained": {}, "ECPO": {}}
    slate = study.session_config.slate_size
    for k in preset.pass_ks:
        candidates = max(k, slate)
        pass_at_k["pre-trained"][k] = spread([pass_study.evaluate(OneRecRecommender(
            study.start, slate, candidates, selector=selector))["true_watch_time"]])
        pass_at_k["ECPO"][k] = spread([
            pass_study.evaluate(OneRecRecommender(policy, slate, candidates,
                                                  selector=selector))["true_watch_time"]
            for policy in default["policies"]])

    tables = {part: {name: {key: value for key, value in figures.items()
                            if key not in ("runs", "policies")}
                     for name, figures in variants.items()} for part, variants in parts.items()}
    result = {
        "preset": asdict(preset),
        "world": asdict(alignment.world),
        "pretrained": {key: pretrained[key] for key in ("true_watch_time", "proxy_reward",
                                                        "legality")},
        "tables": tables,
        "pass_at_k": pass_at_k,
    }
    report = save_study("ablations", args, started, result, _plot, _markdown)
    return {"tables": tables, "pass_at_k": pass_at_k,
            "results": str(report)}


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = result["tables"]
    figure, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    pretrained = result["pretrained"]["true_watch_time"]
    for axis, part in zip(axes[:3], ("group size", "rollout", "reference"), strict=True):
        names = list(tables[part])
        means = [tables[part][n]["true_watch_time"]["mean"] for n in names]
        stds = [tables[part][n]["true_watch_time"]["std"] for n in names]
        axis.bar(range(len(names)), means, yerr=stds, capsize=3, color="tab:blue")
        axis.axhline(pretrained, color="black", linestyle="--", label="pre-trained")
        axis.set_xticks(range(len(names)), [n.replace(" (", "\n(") for n in names], fontsize=8)
        axis.set_ylabel("true watch time per session (s)")
        axis.set_title(f"ECPO: {part}")
        axis.legend(fontsize=8)
    for name, marker in (("pre-trained", "o"), ("ECPO", "s")):
        ks = sorted(int(k) for k in result["pass_at_k"][name])
        means = [result["pass_at_k"][name][k]["mean"] for k in ks]
        axes[3].plot(ks, means, marker=marker, label=name)
    axes[3].set_xscale("log", base=2)
    axes[3].set_xlabel("K candidates per request (the P-score picks the slate)")
    axes[3].set_ylabel("true watch time per session (s)")
    axes[3].set_title("Pass@K with and without RL")
    axes[3].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _markdown(result: dict[str, Any], suffix: str) -> str:
    preset, pretrained = result["preset"], result["pretrained"]
    lines = [
        "# RL ablations: group size, rollouts, reference, Pass@K",
        "",
        f"Command: `{result['command']}` ({result['seconds']:.0f} s; {result['machine']}).",
        "",
        f"World: the alignment study's ({result['world']['items']} items). ECPO on `{REWARD}` "
        f"from the one pre-trained checkpoint: {preset['steps']} steps of {preset['users']} "
        f"users, G = {preset['generations']} unless varied, lr {preset['learning_rate']}, "
        f"seeds {list(preset['seeds'])}; evaluation on the same simulated users (mean ± std "
        "over seeds). Pre-trained: "
        f"{pretrained['true_watch_time']:.0f} s true watch time per session, proxy "
        f"{pretrained['proxy_reward']:.4f}, legality {pretrained['legality']:.3f}.",
        "",
    ]
    for part, variants in result["tables"].items():
        lines += [f"## {part}", "", "| variant | true watch time / session (s) | proxy | "
                  "legality |", "|---|---|---|---|"]
        for name, figures in variants.items():
            watch, proxy, legal = (figures[k] for k in ("true_watch_time", "proxy_reward",
                                                        "legality"))
            lines.append(f"| {name} | {watch['mean']:.0f} ± {watch['std']:.0f} | "
                         f"{proxy['mean']:.4f} ± {proxy['std']:.4f} | {legal['mean']:.3f} |")
        lines.append("")
    ks = sorted(int(k) for k in result["pass_at_k"]["pre-trained"])
    lines += ["## Pass@K", "",
              f"K beams per request, the P-score serves its best 10 ({preset['pass_users']} "
              "users; ECPO: mean over the seeds' policies).", "",
              "| K | pre-trained (s) | ECPO (s) | RL gain |", "|---|---|---|---|"]
    for k in ks:
        before = result["pass_at_k"]["pre-trained"][k]["mean"]
        after = result["pass_at_k"]["ECPO"][k]["mean"]
        lines.append(f"| {k} | {before:.0f} | {after:.0f} | {100 * (after / before - 1):+.1f}% |")
    lines += ["", f"![ablations](ablations{suffix}.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return study_main("benchmarks.ablations",
                      __doc__.splitlines()[0], AblationBenchArgs, run, argv)


if __name__ == "__main__":
    sys.exit(main())
