"""The simulator benchmark at its smoke size: every table, the days env's row among them."""

from __future__ import annotations

from pathlib import Path

from benchmarks.env import EnvBenchArgs, run


def test_the_smoke_env_benchmark_measures_the_days_env_beside_the_session_env(
        tmp_path: Path) -> None:
    result = run(EnvBenchArgs(preset="smoke", results=str(tmp_path)))
    days = result["days_env"]
    assert days["days_impressions_per_cpu_s"] > 0 and days["session_impressions_per_cpu_s"] > 0
    assert days["days_cost_per_impression_ratio"] == (days["session_impressions_per_cpu_s"]
                                                      / days["days_impressions_per_cpu_s"])
    text = (tmp_path / "env_smoke.md").read_text()
    assert "Days env (`OneRec/Days-v0`" in text and "## Memory" in text
    assert result["throughput"]["impressions_per_s"] > 0
