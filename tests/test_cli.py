"""`onerec-lab` end to end, in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_quickstart_json_reports_what_it_did(tmp_path) -> None:
    result = run_cli("quickstart", "--out", str(tmp_path / "run"), "--items", "1500", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["stages"], "quickstart must list the stages it ran"
    tokenizer = report["tokenizer"]
    assert tokenizer["utilization"] == [1.0, 1.0, 1.0]  # balanced k-means uses every code
    assert 0.0 <= tokenizer["collision_rate"] < 0.5
    assert (tmp_path / "run" / "report.md").is_file()
