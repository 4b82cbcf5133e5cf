"""`python -m benchmarks.scaling`: the power-law fit, and the study end to end at --preset smoke."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.scaling import PRESETS, ScalingBenchArgs, fit_power_law
from benchmarks.study import with_preset
from tests.conftest import run_study

PARAMETERS = np.geomspace(1e5, 3e6, 6)


def test_the_fit_recovers_a_power_law_with_an_offset() -> None:
    losses = 40.0 * PARAMETERS ** -0.3 + 1.5
    fit = fit_power_law(PARAMETERS, losses)
    assert fit["form"] == "a * N^-alpha + c"
    assert fit["alpha"] == pytest.approx(0.3, rel=0.05)
    assert fit["c"] == pytest.approx(1.5, abs=0.02)
    assert fit["a"] == pytest.approx(40.0, rel=0.2)


def test_a_pure_power_law_falls_back_to_no_offset() -> None:
    losses = 12.0 * PARAMETERS ** -0.1  # c = 0: the best offset sits at the grid's lower edge
    fit = fit_power_law(PARAMETERS, losses)
    assert fit["form"] == "a * N^-alpha"
    assert fit["c"] == 0.0
    assert fit["alpha"] == pytest.approx(0.1, rel=1e-6)
    assert fit["a"] == pytest.approx(12.0, rel=1e-6)


def test_three_points_fit_without_an_offset() -> None:
    fit = fit_power_law(PARAMETERS[:3], 5.0 * PARAMETERS[:3] ** -0.2 + 1.0)
    assert fit["form"] == "a * N^-alpha" and "too few" in fit["why"]


def test_widths_are_checked_against_the_depths_the_preset_fills_in() -> None:
    with pytest.raises(ValueError, match="6 widths and 3 depths"):
        with_preset(ScalingBenchArgs(preset="smoke", widths=(8, 16, 24, 32, 48, 64)), PRESETS)
    assert with_preset(ScalingBenchArgs(preset="smoke", widths=(4, 8, 12)), PRESETS).depths == (
        1, 1, 1)


@pytest.mark.heavy
def test_the_smoke_study_writes_its_report_json_and_plots(tmp_path: Path) -> None:
    run_study("scaling", "--preset", "smoke", "--results",
               str(tmp_path), timeout=300)
    for name in ("scaling_smoke.md", "scaling_smoke.json", "scaling_smoke.png",
                 "scaling_curves_smoke.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    report = json.loads((tmp_path / "scaling_smoke.json").read_text())
    rows = report["results"]
    assert [row["width"] for row in rows] == report["args"]["widths"]
    assert [row["parameters"] for row in rows] == sorted(row["parameters"] for row in rows)
    for row in rows:
        assert all(math.isfinite(row[key]) and row[key] > 0
                   for key in ("held_out_loss", "train_final_loss", "held_out_item_nll"))
        assert len(row["losses"]) == report["args"]["steps"]
    assert all(math.isfinite(report["fit"][key]) for key in ("a", "alpha", "c"))
    assert report["train_examples"] > 0 and report["held_out_examples"] > 0
    markdown = (tmp_path / "scaling_smoke.md").read_text()
    assert markdown.startswith("# Scaling") and "Command: `python -m benchmarks.scaling --preset smoke --results" in markdown
    assert markdown.count("\n| 1 x d") == len(rows)
