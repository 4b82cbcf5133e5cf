"""`onerec-lab simulate` and `onerec-lab bench env`, end to end in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from envs.logs import LoggedSessions
from envs.spec import BEHAVIOURS
from tests.conftest import REPO_ROOT


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "onerec_lab.cli", *argv], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)


def test_simulate_writes_logs_and_prints_the_summary(tmp_path: Path) -> None:
    result = run_cli("simulate", "--policy", "popular", "--users", "12", "--requests", "3",
                     "--seed", "0", "--items", "500", "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["sessions"] == 12 and 12 <= summary["impressions"] <= 12 * 3 * 10
    assert 1 <= summary["mean_session_length"] <= 3 and summary["mean_watch_time"] > 0
    assert set(summary["behaviour_rates"]) == set(BEHAVIOURS)
    logs = LoggedSessions.load(tmp_path)
    assert logs.num_sessions == 12 and logs.catalog.num_items == 500


def test_bench_env_reports_both_rates() -> None:
    result = run_cli("bench", "env", "--users", "4", "--steps", "2", "--reference-steps", "2",
                     "--items", "300", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in ("impressions_per_s", "reference_impressions_per_s", "speedup"):
        assert report[key] > 0


def test_a_bad_option_is_a_clear_error() -> None:
    result = run_cli("simulate", "--users", "0", "--json")
    assert result.returncode == 2
    assert "--users must be >= 1" in result.stderr and "Traceback" not in result.stderr
