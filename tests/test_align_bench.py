"""The alignment studies at their smoke size, end to end: `onerec-lab bench alignment --preset
smoke` (the command contract), then the hacking, ablation, legality, stability, V2 and retention
studies on the same cached world."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.ablations import AblationBenchArgs
from benchmarks.ablations import run as run_ablations
from benchmarks.alignment import FEEDBACK, METHODS, NEW_METHODS, NEW_REWARDS, REWARDS
from benchmarks.hacking import HackingBenchArgs
from benchmarks.hacking import run as run_hacking
from benchmarks.legality import LegalityBenchArgs
from benchmarks.legality import run as run_legality
from benchmarks.retention import RetentionBenchArgs
from benchmarks.retention import run as run_retention
from benchmarks.stability import StabilityBenchArgs
from benchmarks.stability import run as run_stability
from benchmarks.v2 import INTERACTIONS, V2BenchArgs, legacy_cell, on_policy_cell, source_cell
from benchmarks.v2 import PRESETS as V2_PRESETS
from benchmarks.v2 import run as run_v2
from tests.conftest import REPO_ROOT
from tests.test_docs import plugin_file, readme_bench_command


@pytest.fixture(scope="module")
def smoke_alignment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """README's smoke alignment study, as written (two worker processes, README's plugin file
    with its `novelty` reward as the design `mine`), in a folder outside the repository; its
    work folder caches the world for the other studies."""
    root = tmp_path_factory.mktemp("studies")
    (root / "my_plugin.py").write_text(plugin_file())
    command = [sys.executable, "-m", "onerec_lab.cli", *readme_bench_command()[1:],
               "--work", str(root / "work"), "--results", str(root / "results"), "--json"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run(command, cwd=root, env=environment, capture_output=True,
                               text=True, timeout=900, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return root, json.loads(completed.stdout)


def smoke(args_class: type, root: Path) -> object:
    """A study's smoke arguments on the alignment study's cached world and results folder."""
    return args_class(preset="smoke", work=str(root / "work"), results=str(root / "results"))


@pytest.mark.heavy
def test_a_plugins_reward_is_a_column_of_the_matrix(smoke_alignment) -> None:
    root, result = smoke_alignment
    assert "--workers 2" in " ".join(readme_bench_command())
    for method in (*METHODS, "sb3_ppo"):
        assert result["cells"][f"{method} on mine"]["true_watch_time"]["mean"] >= 0, method
    saved = json.loads((root / "results" / "alignment_smoke.json").read_text())
    assert saved["rewards"]["mine"] == "pscore + 0.1*novelty"
    assert "--plugin my_plugin.py" in saved["command"]
    assert "rewards/novelty" in saved["curves"]["ecpo on mine, seed 0"][-1]
    assert "mine = `pscore + 0.1*novelty`" in (root / "results" / "alignment_smoke.md").read_text()


@pytest.mark.heavy
def test_the_smoke_alignment_study_writes_its_tables_and_plots(smoke_alignment) -> None:
    root, result = smoke_alignment
    summary, cells = result["summary"], result["cells"]
    assert summary["ecpo_true_watch_time"]["mean"] > 0
    assert 0 <= summary["ecpo_no_format_legality"]["mean"] <= 1
    expected = {"pretrained", "random", "popular", "cascade", " on ".join(FEEDBACK),
                *(f"{method} on {reward}" for method in (*METHODS, "sb3_ppo") for reward in REWARDS),
                *(f"{method} on {reward}" for method in NEW_METHODS for reward in NEW_REWARDS)}
    assert expected <= set(cells)
    for cell in cells.values():
        assert cell["legality"]["mean"] >= 0 and cell["true_watch_time"]["mean"] >= 0
    for name in ("alignment_smoke.md", "alignment_smoke.json", "alignment_matrix_smoke.png",
                 "alignment_curves_smoke.png", "alignment_stability_smoke.png"):
        assert (root / "results" / name).is_file(), name
    table = (root / "results" / "alignment_smoke.md").read_text()
    assert "| pretrained |" in table and "| ecpo on pscore+format |" in table
    assert "| sb3_ppo on oracle |" in table and "| grpo large lr, unclipped |" in table
    assert "| gbpo on oracle |" in table and "| feedback_rl on user feedback |" in table


@pytest.mark.heavy
def test_the_smoke_hacking_study_logs_proxy_and_truth_per_step(smoke_alignment) -> None:
    root, _ = smoke_alignment
    result = run_hacking(smoke(HackingBenchArgs, root))
    assert set(result["proxies"]) == {"little data", "much data"}
    assert result["proxies"]["little data"]["sessions"] < result["proxies"]["much data"]["sessions"]
    for run in result["summary"].values():
        assert run["truth_start"] > 0 and run["proxy_start"] > 0
    assert (root / "results" / "hacking_smoke.png").is_file()


@pytest.mark.heavy
def test_the_smoke_ablations_cover_every_part(smoke_alignment) -> None:
    root, _ = smoke_alignment
    result = run_ablations(smoke(AblationBenchArgs, root))
    assert set(result["tables"]) == {"group size", "rollout", "reference"}
    assert set(result["pass_at_k"]) == {"pre-trained", "ECPO"}
    text = (root / "results" / "ablations_smoke.md").read_text()
    assert "## Pass@K" in text and "| G = 4 |" in text


@pytest.mark.heavy
def test_the_smoke_legality_study_covers_format_and_extreme_steps(smoke_alignment) -> None:
    root, _ = smoke_alignment
    result = run_legality(smoke(LegalityBenchArgs, root))
    table = result["table"]
    assert {"ecpo on pscore, ntp 0.1", "ecpo on pscore+format, ntp 1.0",
            "grpo, extreme step", "ecpo, extreme step"} <= set(table)
    for figures in table.values():
        assert 0 <= figures["legality"]["mean"] <= 1
    # ECPO's early clip caps the ratio it differentiates at 1 + epsilon + delta.
    assert table["ecpo, extreme step"]["ratio_max"]["max"] <= 1.3 + 1e-4
    assert (root / "results" / "legality_smoke.png").is_file()


@pytest.mark.heavy
def test_the_smoke_stability_study_charts_negative_advantage_gradients(smoke_alignment) -> None:
    root, _ = smoke_alignment
    result = run_stability(smoke(StabilityBenchArgs, root))
    table = result["table"]
    assert set(table) == {f"{regime}: {loss}, lr 0.01" for regime in ("on-policy", "pre-trained reference") for loss in ("grpo", "ecpo", "gbpo")}
    for figures in table.values():
        assert 0 <= figures["legality"]["mean"] <= 1
        assert figures["negative_grad_norm_max"]["max"] > 0
    # ECPO's factor on a negative-advantage sample is at most (1 + eps + delta) max |A|,
    # and |A| <= sqrt(G - 1) for a group normalised by its std (smoke: G = 8).
    assert table["pre-trained reference: ecpo, lr 0.01"]["negative_weight_max"]["max"] <= 1.3 * 7 ** 0.5 + 1e-4
    assert table["pre-trained reference: ecpo, lr 0.01"]["ratio_max"]["max"] <= 1.3 + 1e-4
    text = (root / "results" / "stability_smoke.md").read_text()
    assert "| on-policy: grpo, lr 0.01 |" in text and "## Reading" in text
    assert "| on-policy: gbpo, lr 0.01 |" in text and "GBPO - GRPO true watch time" in text
    assert (root / "results" / "stability_smoke.png").is_file()


@pytest.mark.heavy
def test_the_smoke_v2_study_covers_sources_legacy_negatives_and_on_policy_shares(
        smoke_alignment) -> None:
    """`python -m benchmarks.v2 --preset smoke`: every cell of its three parts, the
    interaction rates per impression, V2's tables quoted, and the factor on grad pi of the
    negative samples when half of each group is the cascade's items: GRPO's |A| / pi (those
    items have a low probability under the policy) far above GBPO's, at most |A| / (1 - pi)."""
    root, _ = smoke_alignment
    result = run_v2(smoke(V2BenchArgs, root))
    table = result["table"]
    preset = V2_PRESETS["smoke"]
    assert {source_cell(source, loss) for source in ("reward model", "user feedback", "hybrid")
            for loss in ("gbpo", "ecpo")} <= set(table)
    assert {legacy_cell(share, loss) for share in (0.0, preset.legacy_share)
            for loss in ("grpo", "ecpo", "gbpo")} <= set(table)
    assert {on_policy_cell(share) for share in preset.on_policy_shares} <= set(table)
    for figures in table.values():
        assert 0 <= figures["legality"]["mean"] <= 1 and figures["views"]["mean"] >= 0
        assert all(0 <= figures[f"{name}_rate"]["mean"] <= 1 for name in INTERACTIONS)
    legacy = {loss: table[legacy_cell(preset.legacy_share, loss)] for loss in ("grpo", "gbpo")}
    assert (legacy["grpo"]["largest_negative_pi_weight"]["max"]
            > 10 * legacy["gbpo"]["largest_negative_pi_weight"]["max"])
    text = (root / "results" / "v2_smoke.md").read_text()
    assert "Command: `python -m benchmarks.v2 --preset smoke" in text
    assert "stay time +0.269%, comments +15.472%" in text and "## Reading" in text
    assert "| on-policy 0% |" in text and "| hybrid, gbpo |" in text
    assert (root / "results" / "v2_smoke.png").is_file()


@pytest.mark.heavy
def test_the_smoke_retention_study_judges_every_policy_on_the_session_and_the_horizon(
        smoke_alignment) -> None:
    """`python -m benchmarks.retention --preset smoke`: every policy (baselines, pre-trained,
    the four trained designs incl. the plugin reward `freshness`) with its session and
    horizon figures, and the reading's verdict per design."""
    root, _ = smoke_alignment
    result = run_retention(smoke(RetentionBenchArgs, root))
    table = result["table"]
    assert {"pre-trained", "cascade", "random", "ecpo on pscore+format", "ecpo on oracle",
            "ecpo on pscore+format+freshness", "feedback_rl (gbpo)"} == set(table)
    for figures in table.values():
        assert figures["days_watch_time"]["mean"] >= figures["days_watch_time_per_session"]["mean"]
        assert figures["days_sessions"]["mean"] >= 1
        assert 0 <= figures["days_next_day_retention"]["mean"] <= 1
    text = (root / "results" / "retention_smoke.md").read_text()
    assert "`ecpo` on `pscore + 0.5*format + 0.3*freshness`" in text
    assert text.count("against pre-trained: session") == 4
    assert (root / "results" / "retention_smoke.png").is_file()
