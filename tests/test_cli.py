"""`onerec-lab` end to end, in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onerec_lab.cli", *argv],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )


def test_help_lists_the_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("quickstart", "tokenize"):
        assert command in result.stdout


def test_bad_option_value_is_a_clear_error_not_a_traceback() -> None:
    result = run_cli("tokenize", "--items", "1", "--json")
    assert result.returncode == 2
    assert "error" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.heavy
def test_quickstart_runs_every_stage_and_prints_the_table(tmp_path) -> None:
    result = run_cli(
        "quickstart", "--out", str(tmp_path / "run"), "--items", "800", "--codebook", "8",
        "--embedding-steps", "20", "--log-users", "60", "--log-requests", "5",
        "--pretrain-steps", "5", "--pscore-epochs", "1", "--rsft-steps", "1", "--ecpo-steps", "1",
        "--num-generations", "4", "--rl-users", "4", "--eval-users", "8", "--eval-requests", "3",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    policies = [row["policy"] for row in report["rows"]]
    assert policies == ["random", "popular", "cascade", "pretrained", "rsft", "ecpo"]
    for row in report["rows"]:
        assert row["true_watch_time"] >= 0 and 1 <= row["session_length"] <= 3
        assert 0 <= row["legality"] <= 1 and row["proxy_reward"] is not None
    assert report["tokenizer"]["utilization"] == [1.0, 1.0, 1.0]  # balanced k-means
    assert set(report["stage_seconds"]) == set(report["stages"]) and len(report["stages"]) == 8
    for name in ("report.md", "report.json", "comparison.png", "cascade.pt"):
        assert (tmp_path / "run" / name).is_file(), name
    assert any((tmp_path / "run" / "ecpo").rglob("events.out.tfevents*"))  # TensorBoard run
