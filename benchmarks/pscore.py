"""P-score benchmark: per-objective AUC of the towers, the equal-weight fusion and the
Pareto-searched fusion, on logs of the popularity logging policy.

    python -m benchmarks.pscore [--quick]

Logs sessions with `onerec-lab simulate` (popular policy), fits the P-score with
`onerec-lab reward fit` once per seed (same logs, different split / initialisation / search),
and writes benchmarks/results/pscore.md and pscore.json. Every AUC is on the test split,
which neither the towers nor the weight search saw; the search split's numbers (where the
search guarantees "no objective drops") are reported beside them.

Target (issue): on every objective the fused P-score's AUC >= the equal-weight fusion's, and
strictly above on at least one.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from envs.spec import BEHAVIOURS
from onerec_lab.commands.reward import RewardFitArgs, run_fit
from onerec_lab.commands.simulate import SimulateArgs
from onerec_lab.commands.simulate import run as simulate

RESULTS = Path(__file__).resolve().parent / "results"
HELD_OUT = 0.3  # share of requests for the weight search, and again for the test split


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _delta(fused: float | None, equal: float | None) -> str:
    return "n/a" if fused is None or equal is None else f"{fused - equal:+.4f}"


def seed_table(report: dict[str, Any]) -> list[str]:
    """Markdown rows: one per objective, test split."""
    lines = [
        "| objective | test positives | tower AUC | equal-weight AUC | P-score AUC | "
        "P-score - equal | weight |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in BEHAVIOURS:
        fused, equal = report["pscore_auc"][name], report["equal_weight_auc"][name]
        lines.append(
            f"| {name} | {report['positives'][name]} | {_cell(report['auc'][name])} | "
            f"{_cell(equal)} | {_cell(fused)} | {_delta(fused, equal)} | "
            f"{report['fusion_weights'][name]:.3f} |"
        )
    search = report["search"]
    gains = [
        _delta(search["pscore_auc"][name], search["equal_weight_auc"][name]) for name in BEHAVIOURS
    ]
    lines += [
        "",
        f"Search split (P-score - equal, guaranteed >= 0): {', '.join(gains)}; "
        f"{search['accepted']} steps kept of {search['proposals']} proposals.",
    ]
    return lines


def reading(fits: dict[int, dict[str, Any]]) -> list[str]:
    """What the numbers say, per seed: which objectives rose, fell or stayed on the test split."""
    lines = []
    for seed, fit in fits.items():
        changes = {
            name: fit["pscore_auc"][name] - fit["equal_weight_auc"][name]
            for name in BEHAVIOURS
            if fit["pscore_auc"][name] is not None and fit["equal_weight_auc"][name] is not None
        }
        fell = [
            f"{name} ({change:+.4f}, {fit['positives'][name]} positives)"
            for name, change in changes.items()
            if change < 0
        ]
        rose = sum(change > 0 for change in changes.values())
        lines.append(
            f"- Seed {seed}: the Pareto weights raise {rose} of {len(changes)} objectives on the "
            f"test split" + (f"; lower {', '.join(fell)}." if fell else ", lower none.")
        )
    lines += [
        "",
        "Each tower ranks its own objective best; one fused score has to trade objectives "
        "(click and hate conflict: click-bait draws both), and the equal-weight fusion is one "
        "point of that trade-off. The search keeps a weight change only if no objective's AUC "
        "drops on the search split nor on either random half of it, so every kept step is a "
        "Pareto improvement there; on unseen requests that promise holds up to sampling noise, "
        "which is largest for the rare behaviours (follow, comment, forward: a few hundred "
        "positives per split).",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small logs, one seed (smoke run)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: the models are small and cores are shared)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    users, requests, seeds = (600, 10, (0,)) if args.quick else (12_000, 20, (0, 1))
    command = "python -m benchmarks.pscore" + (" --quick" if args.quick else "")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        logged = simulate(
            SimulateArgs(policy="popular", users=users, requests=requests, seed=0, out=folder)
        )
        fits = {
            seed: run_fit(
                RewardFitArgs(
                    logs=folder,
                    out=f"{folder}/pscore-{seed}",
                    seed=seed,
                    search_share=HELD_OUT,
                    test_share=HELD_OUT,
                )
            )
            for seed in seeds
        }
    met = {seed: fit["target_met"] for seed, fit in fits.items()}
    lines = [
        "# P-score benchmark",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
        f"Python {platform.python_version()}. Wall time {time.perf_counter() - started:.0f} s.",
        "",
        f"Logs: popular logging policy, {logged['sessions']} sessions, {logged['requests']} "
        f"requests, {logged['impressions']} impressions (synthetic catalog of 5,000 items). "
        f"Split by request: {1 - 2 * HELD_OUT:.0%} train, {HELD_OUT:.0%} weight search, "
        f"{HELD_OUT:.0%} test (large held-out parts: the rare behaviours need positives); every "
        "AUC below is on the test split. Hate enters the fusion negatively; its AUC is that of "
        "ranking hated items last (`rewards/pareto.py`).",
        "",
        "Target: P-score AUC >= equal-weight AUC on every objective, > on at least one: "
        + ", ".join(f"seed {seed} **{'met' if ok else 'not met'}**" for seed, ok in met.items())
        + ".",
        "",
    ]
    for seed, fit in fits.items():
        lines += [
            f"## Seed {seed} (fit {fit['seconds']:.0f} s, train loss "
            f"{fit['train_loss'][0]:.4f} -> {fit['train_loss'][-1]:.4f})",
            "",
        ]
        lines += seed_table(fit) + [""]
    lines += ["## Reading", ""] + reading(fits)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pscore.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "pscore.json").write_text(
        json.dumps(
            {
                "command": command,
                "logs": logged,
                "fits": {str(seed): fit for seed, fit in fits.items()},
                "target_met": {str(seed): ok for seed, ok in met.items()},
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
