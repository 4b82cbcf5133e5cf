"""Amazon Beauty across seeds: how much the benchmark's figures move from one seed to the next.

    python -m benchmarks.beauty --seed 1 --results-dir benchmarks/results/beauty_seeds/seed1
    python -m benchmarks.beauty --seed 2 --results-dir benchmarks/results/beauty_seeds/seed2
    python -m benchmarks.beauty_seeds

The seed drives everything random in a run (item embeddings, codes, initialisation, batch
order, dropout), so the runs differ only by chance. This module reads the default run
(benchmarks/results/beauty.json, seed 0) and every beauty_seeds/seed*/beauty.json, and writes
beauty_seeds.md and .json: each seed's test figures, their mean and sample standard deviation,
and how many seeds clear TIGER's published figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.beauty import METRICS, RESULTS, TIGER, load_results
from onerec_lab.args import add_dataclass_arguments, build_from_namespace

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
class BeautySeedsArgs:
    """Arguments of the seed summary."""

    results_dir: str = str(RESULTS)  # holds beauty.json (seed 0) and beauty_seeds/seed*/


def seed_runs(results: Path) -> dict[int, dict[str, Any]]:
    """Seed -> {model: result row} of the default run and every saved seed run."""
    paths = [results / "beauty.json", *sorted((results / "beauty_seeds").glob("seed*/beauty.json"))]
    runs: dict[int, dict[str, Any]] = {}
    for path in paths:
        saved = load_results(path, needed_by="the seed summary")
        seed = int(saved.get("arguments", {}).get("seed", 0))
        if seed in runs:
            raise SystemExit(f"{path} repeats seed {seed}; keep one run per seed")
        runs[seed] = {row["model"]: row for row in saved["results"]}
    if len(runs) < 2:
        raise SystemExit(f"the seed summary needs at least two runs; found {len(runs)} under "
                         f"{results} (run the benchmark with --seed 1 --results-dir "
                         f"{results / 'beauty_seeds' / 'seed1'})")
    return runs


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

    return {"seeds": sorted(runs), "columns": columns, "above_tiger": above("test"),
            "above_tiger_history_dropped": above("test_history_masked")}


def report(result: dict[str, Any]) -> list[str]:
    """The markdown of beauty_seeds.md."""
    columns = result["columns"]
    titles = list(columns)
    seeds = result["seeds"]
    tiger = {title: TIGER[key] for title, model, split, key in COLUMNS
             if (model, split) == ("onerec", "test")}  # the columns TIGER's paper reports
    ndcg = columns["OneRec N@10"]
    return [
        "# Amazon Beauty across seeds (test split)", "",
        "Command: `python -m benchmarks.beauty_seeds`, over `python -m benchmarks.beauty` "
        f"(seed 0, beauty.json) and `--seed S` runs in beauty_seeds/seedS/ ({len(seeds)} seeds: "
        f"{', '.join(map(str, seeds))}). Each run trains both models anew with "
        "evaluate-offline's defaults; OneRec as generated unless the column says otherwise.", "",
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataclass_arguments(parser, BeautySeedsArgs)
    args = build_from_namespace(BeautySeedsArgs, parser.parse_args(argv))
    results = Path(args.results_dir)
    result = summary(seed_runs(results))
    lines = report(result)
    (results / "beauty_seeds.md").write_text("\n".join(lines) + "\n")
    (results / "beauty_seeds.json").write_text(json.dumps(
        {"command": "python -m benchmarks.beauty_seeds", "metrics": list(METRICS), **result},
        indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
