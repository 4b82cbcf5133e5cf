"""`onerec-lab reward fit` and `onerec-lab reward check` end to end, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from envs.logging_policies import PopularPolicy
from envs.logs import collect_sessions
from envs.simulator import default_catalog
from rewards.pscore import OBJECTIVES
from tests.conftest import REPO_ROOT


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onerec_lab.cli", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    catalog = default_catalog(num_items=800, seed=0)
    folder = tmp_path_factory.mktemp("logs")
    collect_sessions(PopularPolicy(catalog), catalog, num_users=120, max_requests=5, seed=0).save(
        folder
    )
    return folder


def test_fit_then_check_report_per_objective_auc_and_component_means(logs: Path, tmp_path) -> None:
    fitted = run_cli(
        "reward",
        "fit",
        "--logs",
        str(logs),
        "--seed",
        "0",
        "--out",
        str(tmp_path / "pscore"),
        "--epochs",
        "1",
        "--pareto-steps",
        "20",
        "--json",
    )
    assert fitted.returncode == 0, fitted.stderr
    report = json.loads(fitted.stdout)
    for key in ("auc", "pscore_auc", "equal_weight_auc"):
        assert set(report[key]) == set(OBJECTIVES), key
    assert report["watch_time_scale"] > 0 and "watch_time" in report["auc"]
    assert set(report["watch_time_tracking"]["pscore"]) == {
        "spearman",
        "auc_vs_median",
        "duration_spearman",
    }
    assert report["auc"]["click"] is not None and 0 <= report["auc"]["click"] <= 1
    assert (tmp_path / "pscore" / "pscore.pt").is_file()

    checked = run_cli(
        "reward",
        "check",
        "--spec",
        "pscore + 0.5*format",
        "--logs",
        str(logs),
        "--pscore",
        str(tmp_path / "pscore"),
        "--json",
    )
    assert checked.returncode == 0, checked.stderr
    result = json.loads(checked.stdout)
    assert set(result["components"]) == {"pscore", "format"}
    assert result["components"]["format"] == 1.0  # logged slates hold distinct real items
    assert result["total"] == pytest.approx(result["components"]["pscore"] + 0.5, abs=1e-5)


def test_a_malformed_spec_is_a_clear_error_not_a_traceback(logs: Path) -> None:
    checked = run_cli("reward", "check", "--spec", "pscore + 0.5*", "--logs", str(logs))
    assert checked.returncode == 2
    assert "found the end of the spec (at position 13 of 'pscore + 0.5*')" in checked.stderr
    assert "Traceback" not in checked.stderr
