"""`onerec-lab` end to end, in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


TINY_QUICKSTART = ("--items", "800", "--codebook", "8", "--embedding-steps", "20", "--log-users",
                   "60", "--log-requests", "5", "--cascade-steps", "5", "--pretrain-steps", "5",
                   "--pscore-epochs", "1",
                   "--rsft-steps", "1", "--ecpo-steps", "1", "--num-generations", "4",
                   "--rl-users", "4", "--eval-users", "8", "--eval-requests", "3")
STAGES = ["semantic IDs", "logged sessions", "pre-training", "P-score", "rsft", "ecpo",
          "evaluation"]


def quickstart(out: Path, *options: str) -> dict:
    result = run_cli("quickstart", "--out", str(out), *TINY_QUICKSTART, *options, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("quickstart") / "run"
    return out, quickstart(out)


@pytest.mark.heavy
def test_quickstart_runs_every_stage_and_prints_the_table(first_run) -> None:
    out, report = first_run
    policies = [row["policy"] for row in report["rows"]]
    assert policies == ["random", "popular", "cascade", "pretrained", "rsft", "ecpo"]
    for row in report["rows"]:
        assert row["true_watch_time"] >= 0 and 1 <= row["session_length"] <= 3
        assert 0 <= row["legality"] <= 1 and row["proxy_reward"] is not None
    assert report["tokenizer"]["utilization"] == [1.0, 1.0, 1.0]  # balanced k-means
    assert list(report["stages"]) == STAGES and len(report["stage_seconds"]) == len(STAGES)
    assert all(": built in" in line for line in report["stages"].values())
    for name in ("report.md", "report.json", "comparison.png", "cascade.pt", "world.json"):
        assert (out / name).is_file(), name
    assert any((out / "ecpo").rglob("events.out.tfevents*"))  # TensorBoard run


@pytest.mark.heavy
def test_a_rerun_reuses_unchanged_stages_and_rebuilds_changed_ones(first_run) -> None:
    out, report = first_run
    logged = run_cli("quickstart", "--out", str(out), *TINY_QUICKSTART)  # stderr: not a terminal
    assert logged.returncode == 0, logged.stderr
    lines = logged.stderr.splitlines()  # one plain line per stage, not a progress bar
    assert "quickstart: semantic IDs: embeddings + balanced RQ-Kmeans ..." in lines
    assert any(line.startswith("quickstart: ECPO with") and line.endswith(
        ": reused (same settings and inputs)") for line in lines), lines
    again = json.loads((out / "report.json").read_text())
    assert all(": reused" in again["stages"][stage] for stage in STAGES), again["stages"]
    assert again["rows"] == report["rows"]
    changed = quickstart(out, "--log-users", "50")
    stages = changed["stages"]
    assert ": reused" in stages["semantic IDs"]  # it does not read the logs
    assert "log_users 60 -> 50" in stages["logged sessions"]
    for stage in ("pre-training", "P-score", "rsft", "ecpo", "evaluation"):
        assert ": rebuilt" in stages[stage] and "changed" in stages[stage], stage
    assert changed["rows"] != report["rows"]
    fresh = quickstart(out.parent / "fresh", "--log-users", "50")  # the same run from scratch
    assert fresh["rows"] == changed["rows"]
