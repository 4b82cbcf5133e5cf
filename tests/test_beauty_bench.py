"""`python -m benchmarks.beauty` end to end on a 40-user file with a 3-step budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.beauty import SWEEP, shortfall
from tests.conftest import REPO_ROOT


def write_tiny_beauty(path: Path) -> None:
    """40 users of 4 to 8 items among 30, in Beauty.txt's format."""
    rng = np.random.default_rng(0)
    path.write_text("".join(
        " ".join(map(str, [user, *rng.integers(1, 31, size=rng.integers(4, 9))])) + "\n"
        for user in range(1, 41)
    ))


def test_the_benchmark_writes_both_models_on_both_splits(tmp_path: Path) -> None:
    data = tmp_path / "tiny_beauty.txt"
    write_tiny_beauty(data)
    command = [sys.executable, "-m", "benchmarks.beauty", "--data", str(data),
               "--onerec-steps", "3", "--sasrec-steps", "3", "--codebook", "4",
               "--results-dir", str(tmp_path / "results")]
    completed = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                               capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((tmp_path / "results" / "beauty.json").read_text())
    onerec, sasrec = result["results"]
    assert (onerec["model"], onerec["steps"], sasrec["model"], sasrec["steps"]) == (
        "onerec", 3, "sasrec", 3)
    for row in (onerec, sasrec):
        for split in ("valid", "test", "valid_history_masked", "test_history_masked"):
            assert row[split]["users"] == 40
            assert 0.0 <= row[split]["ndcg@10"] <= row[split]["recall@10"] <= 1.0
    table = (tmp_path / "results" / "beauty.md").read_text()
    assert "| TIGER (paper) | 0.0454 | 0.0321 | 0.0648 | 0.0384 |" in table
    assert "Command: `python -m benchmarks.beauty --data" in table
    below = onerec["test"]["recall@10"] <= 0.0648 or onerec["test"]["ndcg@10"] <= 0.0384
    assert ("## Why OneRec is below TIGER here" in table) == below


def test_the_sweep_ranks_every_variant_on_validation_only(tmp_path: Path) -> None:
    data = tmp_path / "tiny_beauty.txt"
    write_tiny_beauty(data)
    command = [sys.executable, "-m", "benchmarks.beauty", "--data", str(data),
               "--sweep-steps", "2", "--codebook", "4", "--results-dir", str(tmp_path)]
    completed = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                               capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = json.loads((tmp_path / "beauty_sweep.json").read_text())["results"]
    assert [row["variant"] for row in rows] == list(SWEEP)
    assert all(set(row) >= {"valid", "steps"} and "test" not in row for row in rows)
    assert not (tmp_path / "beauty.md").exists()


def test_the_shortfall_section_computes_budget_and_generalisation_gaps() -> None:
    onerec = {"steps": 100, "batch_size": 10, "training_pairs": 500, "parameters": 2e6,
              "valid": {"recall@10": 0.1}, "test": {"recall@10": 0.05}}
    sasrec = {"valid": {"recall@10": 0.1}, "test": {"recall@10": 0.08}}
    text = "\n".join(shortfall(onerec, sasrec))
    assert "100 steps of 10 examples (2 epochs) of a 2.00 M-parameter model" in text
    assert "51200 times as many examples" in text  # 200k x 256 / (100 x 10)
    assert "drops by 50% for OneRec against 20% for SASRec" in text
