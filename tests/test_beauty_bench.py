"""`python -m benchmarks.beauty` end to end on a 40-user file with a 3-step budget."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.beauty import SWEEP, main, shortfall
from tests.conftest import run_study


def write_tiny_beauty(path: Path) -> None:
    """40 users of 4 to 8 items among 30, in Beauty.txt's format."""
    rng = np.random.default_rng(0)
    path.write_text("".join(
        " ".join(map(str, [user, *rng.integers(1, 31, size=rng.integers(4, 9))])) + "\n"
        for user in range(1, 41)
    ))


def test_the_benchmark_writes_both_models_on_both_splits(tmp_path: Path) -> None:
    data = tmp_path / "tiny_beauty.txt"
    write_tiny_beauty(data)
    run_study("beauty", "--data", str(data),
               "--onerec-steps", "3", "--sasrec-steps", "3", "--codebook", "4",
               "--preset", "tiny", "--dropout", "0.0",
               "--results", str(tmp_path / "results"), timeout=600)
    result = json.loads((tmp_path / "results" / "beauty.json").read_text())
    onerec, sasrec = result["results"]
    assert (onerec["model"], onerec["steps"], sasrec["model"], sasrec["steps"]) == (
        "onerec", 3, "sasrec", 3)
    # --preset and --dropout override evaluate-offline's OneRec defaults (beauty, 0.1)
    assert (onerec["settings"]["preset"], onerec["settings"]["dropout"]) == ("tiny", 0.0)
    for row in (onerec, sasrec):
        for split in ("valid", "test", "valid_history_masked", "test_history_masked"):
            assert row[split]["users"] == 40
            assert 0.0 <= row[split]["ndcg@10"] <= row[split]["recall@10"] <= 1.0
            groups = row[split]["by_group"].values()  # popularity buckets split the users
            assert sum(group["users"] for group in groups) == 40
            assert sum(group["recall@10"] * group["users"] for group in groups) == (
                pytest.approx(row[split]["recall@10"] * 40))
    table = (tmp_path / "results" / "beauty.md").read_text()
    assert "| TIGER (paper) | 0.0454 | 0.0321 | 0.0648 | 0.0384 |" in table
    assert "Command: `python -m benchmarks.beauty --data" in table
    assert "## Recall@10 by how often the target occurs in training" in table
    assert ("- A variant run: preset tiny, dropout 0.0, steps 3 instead of evaluate-offline's "
            "current default (preset beauty, dropout 0.1, steps 48000)") in table
    assert "were chosen on the validation split" not in table  # only the defaults' run says so
    learned = onerec["repeat_bias"]  # evaluate-offline's default: the learned repeat bias
    assert len(learned["continues"]) == len(learned["commits"]) == len(onerec["codebook_sizes"])
    assert f"{learned['commits'][-1]:+.2f} (commits; on the last level" in table
    assert (f"{onerec['training_targets_in_history']:,} of the {onerec['training_pairs']:,} "
            "training targets repeat an item of their history") in table
    below = onerec["test"]["recall@10"] <= 0.0648 or onerec["test"]["ndcg@10"] <= 0.0384
    assert ("## Where OneRec falls short of TIGER" in table) == below
    # --render rewrites the same beauty.md from beauty.json alone (the data file is not read)
    (tmp_path / "results" / "beauty.md").unlink()
    assert main(["--render", "--data", str(tmp_path / "absent.txt"),
                 "--results", str(tmp_path / "results")]) == 0
    assert (tmp_path / "results" / "beauty.md").read_text() == table


def test_render_without_a_saved_run_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--render needs .*beauty.json"):
        main(["--render", "--results", str(tmp_path)])
    (tmp_path / "beauty.json").write_text('{"results": []}')
    with pytest.raises(SystemExit, match="reading it failed: KeyError"):
        main(["--render", "--results", str(tmp_path)])


@pytest.mark.heavy  # twelve variants, one of them trains a SASRec (20 steps here) for its codes
def test_the_sweep_ranks_every_variant_on_validation_only(tmp_path: Path) -> None:
    data = tmp_path / "tiny_beauty.txt"
    write_tiny_beauty(data)
    run_study("beauty", "--data", str(data),
               "--sweep-steps", "2", "--sasrec-steps", "20", "--codebook", "4",
               "--results", str(tmp_path), timeout=600)
    rows = json.loads((tmp_path / "beauty_sweep.json").read_text())["results"]
    assert [row["variant"] for row in rows] == list(SWEEP)
    assert all(set(row) >= {"valid", "steps"} and "test" not in row for row in rows)
    codebooks = {row["variant"]: row["codebook"] for row in rows}
    assert (codebooks["chosen (defaults)"], codebooks["codebook / 4 (3 x 64 at --codebook 256)"],
            codebooks["codebook x 4 (3 x 1024 at --codebook 256)"]) == (4, 2, 16)
    assert not (tmp_path / "beauty.md").exists()


def test_the_shortfall_section_computes_budget_and_generalisation_gaps() -> None:
    def split(recall: float, rare: float, frequent: float) -> dict:
        # 10 users: 4 with targets in bucket 0 (rare), 2 in bucket 3, 4 in the last bucket
        groups = {0: {"recall@10": rare, "users": 4}, 3: {"recall@10": 0.0, "users": 2},
                  5: {"recall@10": frequent, "users": 4}}
        return {"recall@10": recall, "users": 10, "by_group": groups}

    onerec = {"steps": 100, "batch_size": 10, "training_pairs": 500, "parameters": 2e6,
              "valid": split(0.1, 0.0, 0.25), "test": split(0.05, 0.0, 0.125)}
    sasrec = {"valid": split(0.1, 0.25, 0.0), "test": split(0.08, 0.2, 0.0)}
    text = "\n".join(shortfall(onerec, sasrec))
    assert "100 steps of 10 examples (2 epochs) of a 2.00 M-parameter model" in text
    assert "51200 times as many examples" in text  # 200k x 256 / (100 x 10)
    assert "drops by 50% for OneRec against 20% for SASRec" in text
    assert ("seen fewer than 11 times in training (40% of test targets, 40% of validation "
            "targets), OneRec's Recall@10 is 0.0000 against SASRec's 0.2000; on targets seen "
            "51 times or more, 0.1250 against 0.0000") in text
