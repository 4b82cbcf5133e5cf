"""`onerec-lab bench alignment --preset smoke`: the whole study, end to end, in minutes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.heavy
def test_the_smoke_study_writes_its_tables_and_plots(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "onerec_lab.cli", "bench", "alignment", "--preset", "smoke",
               "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results"),
               "--json"]
    completed = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                               capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)
    summary = result["summary"]
    assert summary["ecpo_true_watch_time"]["mean"] > 0 and 0 <= summary["no_format_legality"] <= 1
    assert len(result["preset"]["seeds"]) == 3
    for name in ("alignment_smoke.md", "alignment_smoke.json", "alignment_curves_smoke.png",
                 "alignment_stability_smoke.png"):
        assert (tmp_path / "results" / name).is_file(), name
    table = (tmp_path / "results" / "alignment_smoke.md").read_text()
    assert "| pretrained |" in table and "| grpo |" in table and "| ecpo |" in table
