"""Amazon Beauty across seeds: how much the benchmark's figures move from one seed to the next.

    python -m benchmarks.beauty --seed 0 --results benchmarks/results/beauty_repeat/seed0
    python -m benchmarks.beauty --seed 1 --results benchmarks/results/beauty_repeat/seed1
    python -m benchmarks.beauty_seeds --results benchmarks/results/beauty_repeat

The seed drives everything random in a run (item embeddings, codes, initialisation, batch
order, dropout), so the runs differ only by chance. This module reads, under `--results`
(default benchmarks/results), the default run's beauty.json (seed 0) if there is one and every
beauty_seeds/seed*/beauty.json and seed*/beauty.json, and writes beauty_seeds.md and .json
there: each seed's test figures, their mean and sample standard deviation, and how many seeds
clear TIGER's published figures. Runs trained with other settings than the first (steps,
OneRec's settings) are an error: a summary holds runs that differ only by seed.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.beauty import METRICS, RESULTS, TIGER, load_results, onerec_settings
from benchmarks.study import command_line, study_main

# (column title, model, split key, metric) of each figure the table shows per seed.
COLUMNS = (
    *((f"OneRec {name}", "onerec", "test", key) for name, key in (
        ("R@5", "recall@5"), ("N@5", "ndcg@5"), ("R@10", "recall@10"), ("N@10", "ndcg@10"))),
    ("OneRec R@10, history dropped", "onerec", "test_history_masked", "recall@10"),
    ("OneRec N@10, history dropped", "onerec", "test_history_masked", "ndcg@10"),
    ("OneRec valid R@10", "onerec", "valid", "recall@10"),
    ("SASRec R@10", "sasrec", "test", "recall@10"),
    ("SASRec N@10", "sasrec", "test", "ndcg@10"),
)


@dataclass
class BeautySeedsBenchArgs:
    """Arguments of `python -m benchmarks.beauty_seeds`."""

    results: str = str(RESULTS)  # holds beauty.json, beauty_seeds/seed*/ or seed*/ runs; the
    # summary beauty_seeds.md / .json is written there
    json: bool = False  # print the summary as one JSON object


def seed_runs(results: Path) -> dict[int, dict[str, Any]]:
    """Seed -> {model: result row} of the default run and every saved seed run."""
    paths = [path for path in [results / "beauty.json"] if path.exists()] + sorted(
        [*(results / "beauty_seeds").glob("seed*/beauty.json"), *results.glob("seed*/beauty.json")]
    )
    runs: dict[int, dict[str, Any]] = {}
    first: tuple[Path, dict[str, Any]] | None = None
    for path in paths:
        saved = load_results(path, needed_by="the seed summary")
        seed = int(saved.get("arguments", {}).get("seed", 0))
        if seed in runs:
            raise SystemExit(f"{path} repeats seed {seed}; keep one run per seed")
        runs[seed] = {row["model"]: row for row in saved["results"]}
        setting = run_setting(runs[seed])
        if first is None:
            first = (path, setting)
        elif setting != first[1]:
            differ = sorted(k for k in setting if setting[k] != first[1].get(k))
            raise SystemExit(
                f"{path} was trained with other settings than {first[0]} ({', '.join(differ)}: "
                f"{', '.join(str(setting[k]) for k in differ)} against "
                f"{', '.join(str(first[1].get(k)) for k in differ)}); a seed summary compares "
                "runs that differ only by seed: keep other variants in another --results"
            )
    if len(runs) < 2:
        raise SystemExit(f"the seed summary needs at least two runs; found {len(runs)} under "
                         f"{results} (run the benchmark with --seed 1 --results "
                         f"{results / 'beauty_seeds' / 'seed1'})")
    return runs


def run_setting(run: dict[str, Any]) -> dict[str, Any]:
    """What must be equal across the runs of one summary: both models' steps, OneRec's settings."""
    onerec = run["onerec"]
    return {**onerec_settings(onerec), "onerec_steps": onerec.get("steps"),
            "sasrec_steps": run["sasrec"].get("steps")}


def summary(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per column: the value of each seed, the mean and the sample standard deviation; and
    the seeds whose OneRec is above TIGER on both Recall@10 and NDCG@10, as generated and with
    history items dropped."""
    columns = {}
    for title, model, split, key in COLUMNS:
        values = [runs[seed][model][split][key] for seed in sorted(runs)]
        columns[title] = {"values": values, "mean": statistics.mean(values),
                          "sd": statistics.stdev(values)}

    def above(split: str) -> list[int]:
        return [seed for seed in sorted(runs) if all(
            runs[seed]["onerec"][split][key] > TIGER[key] for key in ("recall@10", "ndcg@10"))]

    return {"seeds": sorted(runs), "columns": columns,
            "setting": run_setting(runs[min(runs)]), "above_tiger": above("test"),
            "above_tiger_history_dropped": above("test_history_masked")}


def report(result: dict[str, Any], command: str = "python -m benchmarks.beauty_seeds"
           ) -> list[str]:
    """The markdown of beauty_seeds.md."""
    columns = result["columns"]
    titles = list(columns)
    seeds = result["seeds"]
    tiger = {title: TIGER[key] for title, model, split, key in COLUMNS
             if (model, split) == ("onerec", "test")}  # the columns TIGER's paper reports
    ndcg = columns["OneRec N@10"]
    setting = result["setting"]
    return [
        "# Amazon Beauty across seeds (test split)", "",
        f"Command: `{command}`, over `python -m benchmarks.beauty` runs "
        f"(beauty.json, beauty_seeds/seedS/ or seedS/ under the results directory; {len(seeds)} "
        "seeds: "
        f"{', '.join(map(str, seeds))}). Each run trains both models anew with the same "
        f"settings (OneRec: preset {setting.get('preset')}, dropout {setting.get('dropout')}, "
        f"repeat bias {'on' if setting['repeat_bias'] else 'off'}, {setting['onerec_steps']:,} "
        f"steps; SASRec {setting['sasrec_steps']:,} steps); OneRec as generated unless the "
        "column says otherwise.", "",
        "| seed | " + " | ".join(titles) + " |", "|---|" + "---|" * len(titles),
        *(f"| {seed} | " + " | ".join(f"{columns[t]['values'][i]:.4f}" for t in titles) + " |"
          for i, seed in enumerate(seeds)),
        "| mean | " + " | ".join(f"{columns[t]['mean']:.4f}" for t in titles) + " |",
        "| sample sd | " + " | ".join(f"{columns[t]['sd']:.4f}" for t in titles) + " |",
        "| TIGER (paper) | " + " | ".join(
            f"{tiger[t]:.4f}" if t in tiger else "" for t in titles) + " |",
        "",
        f"- OneRec as generated is above TIGER on both Recall@10 and NDCG@10 in "
        f"{len(result['above_tiger'])} of {len(seeds)} seeds"
        + (f" (seeds {', '.join(map(str, result['above_tiger']))})" if result["above_tiger"]
           else "") + f"; its mean NDCG@10 is {ndcg['mean']:.4f} (sd {ndcg['sd']:.4f}) "
        f"against TIGER's {TIGER['ndcg@10']:.4f} (mean minus TIGER: "
        f"{ndcg['mean'] - TIGER['ndcg@10']:+.4f}"
        + (f", {(ndcg['mean'] - TIGER['ndcg@10']) / ndcg['sd']:+.1f} seed standard deviations"
           if ndcg["sd"] > 0 else "") + ").",
        f"- With each user's history items dropped from its beams: above TIGER on both in "
        f"{len(result['above_tiger_history_dropped'])} of {len(seeds)} seeds (lowest Recall@10 "
        f"{min(columns['OneRec R@10, history dropped']['values']):.4f}, lowest NDCG@10 "
        f"{min(columns['OneRec N@10, history dropped']['values']):.4f}).",
    ]


def run(args: BeautySeedsBenchArgs) -> dict[str, Any]:
    """The summary of the runs under `args.results`, written there; returns it and the path
    of its markdown."""
    results = Path(args.results)
    result = summary(seed_runs(results))
    command = command_line("benchmarks.beauty_seeds", args)
    (results / "beauty_seeds.md").write_text("\n".join(report(result, command)) + "\n")
    (results / "beauty_seeds.json").write_text(json.dumps(
        {"command": command, "metrics": list(METRICS), **result}, indent=2))
    return {**result, "results": str(results / "beauty_seeds.md")}


def main(argv: list[str] | None = None) -> int:
    return study_main("benchmarks.beauty_seeds", __doc__.splitlines()[0], BeautySeedsBenchArgs,
                      run, argv)


if __name__ == "__main__":
    sys.exit(main())
