"""`python -m benchmarks.generation --quick` end to end, and the re-encode reference's rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.generation import repeat_rows
from policies.encoder import Context
from tests.conftest import REPO_ROOT


def test_repeat_rows_copies_each_user_in_place() -> None:
    context = Context(short_term_items=torch.tensor([[1, 2], [3, -1]]))
    repeated = repeat_rows(context, 3)
    assert repeated.short_term_items.tolist() == [[1, 2]] * 3 + [[3, -1]] * 3
    assert repeated.positive_items is None


def test_the_quick_run_times_every_method(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "benchmarks.generation", "--quick",
               "--results-dir", str(tmp_path)]
    completed = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                               capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = json.loads((tmp_path / "generation.json").read_text())["results"]
    assert [(row["preset"], row["K"]) for row in rows] == [("tiny", 8), ("tiny", 64)]
    for row in rows:
        for name in ("encoder_s_per_user", "beam_s_per_user", "sample_s_per_user",
                     "reencode_s_per_user"):
            assert row[name] > 0
    assert "| tiny | " in (tmp_path / "generation.md").read_text()
