"""`python -m benchmarks.codebook`: the study end to end at --preset smoke, and its popularity
reference on a hand-made split."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.codebook import PRESETS, CodebookBenchArgs, popularity_recall, standard_error
from benchmarks.study import command_line, with_preset
from tests.conftest import run_study


def targets(items: list[int], num_items: int) -> SimpleNamespace:
    """Logged examples reduced to what the popularity reference reads: one item per row."""
    return SimpleNamespace(logs=SimpleNamespace(slates=np.array(items)[:, None]),
                           rows=np.arange(len(items)), positions=np.zeros(len(items), int),
                           num_items=num_items, num_examples=len(items))


def test_popularity_recall_ranks_items_by_training_frequency() -> None:
    # Training targets: item 2 three times, item 0 twice, item 3 once -> ranking 2, 0, 3, 1, 4.
    split = SimpleNamespace(train=targets([2, 0, 2, 3, 0, 2], 5),
                            held_out=targets([2, 0, 1, 4], 5))
    result = popularity_recall(split, CodebookBenchArgs(ks=(1, 2)))
    assert result["held_out_recall@1"] == pytest.approx(1 / 4)  # only item 2 at rank 0
    assert result["held_out_recall@2"] == pytest.approx(2 / 4)  # items 2 and 0
    assert result["held_out_ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 4)


def test_an_option_overrides_its_preset_size_and_the_command_records_only_options() -> None:
    args = with_preset(CodebookBenchArgs(preset="smoke", steps=7), PRESETS)
    assert (args.steps, args.items, args.codebooks, args.recall_examples) == (7, 600, (8, 16), 64)
    assert with_preset(CodebookBenchArgs(), PRESETS).recall_examples is None  # full: all
    given = CodebookBenchArgs(preset="smoke", codebooks=(8, 16), steps=7, item_ids=False,
                              json=True)
    assert command_line("benchmarks.codebook", given) == (
        "python -m benchmarks.codebook --preset smoke --codebooks 8 16 --steps 7 --no-item-ids")
    assert command_line("benchmarks.codebook", CodebookBenchArgs()) == (
        "python -m benchmarks.codebook")


def test_standard_error_is_the_binomial_one() -> None:
    assert standard_error(0.2, 100) == pytest.approx(0.04)
    assert standard_error(0.0, 10) == 0.0


@pytest.mark.heavy
def test_the_smoke_study_writes_its_report_json_and_plot(tmp_path: Path) -> None:
    run_study("codebook", "--preset", "smoke", "--results",
               str(tmp_path), timeout=300)
    for name in ("codebook_smoke.md", "codebook_smoke.json", "codebook_smoke.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    report = json.loads((tmp_path / "codebook_smoke.json").read_text())
    rows = report["results"]
    sizes = report["args"]["codebooks"]
    assert [(row["codebook"], row["balanced"]) for row in rows] == [
        (size, balanced) for size in sizes for balanced in (True, False)]
    for row in [*rows, report["references"]["item ids"]]:
        for key in ("held_out_loss", "held_out_item_nll", "train_final_loss"):
            assert math.isfinite(row[key]) and row[key] > 0, key
        assert 0.0 <= row["held_out_recall@1"] <= row["held_out_recall@10"] <= 1.0
        assert 0.0 <= row["held_out_tail_recall@10"] <= 1.0
        assert 0.0 <= row["top1_most_popular_share"] <= 1.0
        assert 1 <= row["distinct_items_recommended"] <= report["args"]["items"]
        assert 0 < row["tail_examples"] <= row["recall_examples"]
    for row in rows:
        tokenizer = row["tokenizer"]
        assert 0.0 <= tokenizer["collision_rate"] <= 1.0
        assert all(0.0 < value <= 1.0 for value in tokenizer["utilization"])
        assert all(0.0 < bits <= math.log2(row["codebook"]) + 1e-6
                   for bits in tokenizer["entropy_bits"])
    assert 0.0 <= report["references"]["most popular"]["held_out_recall@10"] <= 1.0
    markdown = (tmp_path / "codebook_smoke.md").read_text()
    assert "Command: `python -m benchmarks.codebook --preset smoke --results" in markdown
    assert "| item ids (1 x 600) |" in markdown and "| 3 x 16 plain |" in markdown
