"""`python -m benchmarks.speed --preset smoke`: every loop measured against its reference."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.speed import main


@pytest.mark.heavy
def test_smoke_speed_study_measures_every_loop_against_its_reference(tmp_path: Path) -> None:
    assert main(["--preset", "smoke", "--results", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "speed_smoke.json").read_text())
    loops = [row["loop"] for row in result["rows"]]
    assert loops == ["simulator", "pre-training", "generation", "RL"]
    for row in result["rows"]:
        assert row["ours"] > 0 and row["reference"] > 0
        assert math.isclose(row["ratio"], row["ours"] / row["reference"])
    assert "| RL | completions/s |" in (tmp_path / "speed_smoke.md").read_text()
    assert (tmp_path / "speed_smoke.png").is_file()
