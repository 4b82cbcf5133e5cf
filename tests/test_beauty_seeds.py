"""`python -m benchmarks.beauty_seeds`: the seed summary over saved Beauty benchmark runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.beauty_seeds import main

SPLITS = ("valid", "test", "valid_history_masked", "test_history_masked")


def write_run(path: Path, seed: int, ndcg10: float, recall10: float = 0.07,
              **settings: object) -> None:
    """A beauty.json as the benchmark writes it, with the same figures on every split."""
    metrics = {"recall@5": 0.05, "ndcg@5": 0.035, "recall@10": recall10, "ndcg@10": ndcg10,
               "users": 100, "by_group": {"0": {"recall@10": 0.0, "users": 100}}}
    rows = [{"model": model, "steps": 10, **{split: dict(metrics) for split in SPLITS}}
            for model in ("onerec", "sasrec")]
    rows[0]["settings"] = {"preset": "beauty", "dropout": 0.1, **settings}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": "python -m benchmarks.beauty", "load": [0.0, 0.0],
                                "hardware": "CPU", "arguments": {"seed": seed}, "results": rows}))


def test_the_summary_gives_each_seed_the_mean_the_spread_and_the_seeds_above_tiger(
        tmp_path: Path) -> None:
    write_run(tmp_path / "beauty.json", seed=0, ndcg10=0.0370)
    write_run(tmp_path / "beauty_seeds" / "seed1" / "beauty.json", seed=1, ndcg10=0.0390)
    write_run(tmp_path / "beauty_seeds" / "seed2" / "beauty.json", seed=2, ndcg10=0.0380,
              recall10=0.0600)
    assert main(["--results", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "beauty_seeds.json").read_text())
    column = result["columns"]["OneRec N@10"]
    assert result["seeds"] == [0, 1, 2]
    assert column["values"] == [0.0370, 0.0390, 0.0380]
    assert column["mean"] == pytest.approx(0.0380)
    assert column["sd"] == pytest.approx(0.0010)
    # TIGER: Recall@10 0.0648, NDCG@10 0.0384; only seed 1 clears both (seed 2's recall fails)
    assert result["above_tiger"] == result["above_tiger_history_dropped"] == [1]
    table = (tmp_path / "beauty_seeds.md").read_text()
    assert "| mean | 0.0500 | 0.0350 | 0.0667 | 0.0380 |" in table
    assert "in 1 of 3 seeds (seeds 1); its mean NDCG@10 is 0.0380 (sd 0.0010)" in table
    assert "(mean minus TIGER: -0.0004, -0.4 seed standard deviations)" in table
    assert ("dropped from its beams: above TIGER on both in 1 of 3 seeds (lowest Recall@10 "
            "0.0600, lowest NDCG@10 0.0370)") in table
    assert f"Command: `python -m benchmarks.beauty_seeds --results {tmp_path}`" in table
    assert ("the same settings (OneRec: preset beauty, dropout 0.1, repeat bias off, 10 steps; "
            "SASRec 10 steps)") in table


def test_seed_folders_directly_under_the_results_folder_count_too(tmp_path: Path) -> None:
    for seed in (3, 4):
        write_run(tmp_path / f"seed{seed}" / "beauty.json", seed=seed, ndcg10=0.04,
                  repeat_bias=True)
    assert main(["--results", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "beauty_seeds.json").read_text())
    assert result["seeds"] == [3, 4] and result["setting"]["repeat_bias"] is True


def test_runs_of_other_settings_are_not_mixed(tmp_path: Path) -> None:
    """A run saved without the repeat bias setting (older runs) counts as repeat_bias False."""
    write_run(tmp_path / "beauty.json", seed=0, ndcg10=0.037)
    write_run(tmp_path / "beauty_seeds" / "seed1" / "beauty.json", seed=1, ndcg10=0.038,
              repeat_bias=False)
    assert main(["--results", str(tmp_path)]) == 0
    write_run(tmp_path / "beauty_seeds" / "seed2" / "beauty.json", seed=2, ndcg10=0.039,
              repeat_bias=True, dropout=0.2)
    with pytest.raises(SystemExit, match=r"seed2/beauty.json was trained with other settings "
                                         r"than .*beauty.json \(dropout, repeat_bias: 0.2, True "
                                         r"against 0.1, False\)"):
        main(["--results", str(tmp_path)])


def test_too_few_runs_or_a_repeated_seed_are_clear_errors(tmp_path: Path) -> None:
    write_run(tmp_path / "beauty.json", seed=0, ndcg10=0.037)
    with pytest.raises(SystemExit, match="needs at least two runs; found 1 .* --seed 1"):
        main(["--results", str(tmp_path)])
    write_run(tmp_path / "beauty_seeds" / "seed0" / "beauty.json", seed=0, ndcg10=0.038)
    with pytest.raises(SystemExit, match="repeats seed 0"):
        main(["--results", str(tmp_path)])
    (tmp_path / "beauty_seeds" / "seed0" / "beauty.json").write_text("{not json")
    with pytest.raises(SystemExit, match="the seed summary needs .*seed0/beauty.json"):
        main(["--results", str(tmp_path)])
