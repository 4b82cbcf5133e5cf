"""`python -m benchmarks.generation --preset smoke` end to end, and the re-encode reference's rows."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks.generation import repeat_rows
from policies.encoder import Context
from tests.conftest import run_study


def test_repeat_rows_copies_each_user_in_place() -> None:
    context = Context(short_term_items=torch.tensor([[1, 2], [3, -1]]))
    repeated = repeat_rows(context, 3)
    assert repeated.short_term_items.tolist() == [[1, 2]] * 3 + [[3, -1]] * 3
    assert repeated.positive_items is None


def test_the_smoke_run_times_every_method(tmp_path: Path) -> None:
    run_study("generation", "--preset", "smoke",
               "--results", str(tmp_path), timeout=600)
    rows = json.loads((tmp_path / "generation_smoke.json").read_text())["results"]
    assert [(row["preset"], row["K"]) for row in rows] == [("tiny", 8), ("tiny", 64)]
    for row in rows:
        for name in ("encoder_s_per_user", "beam_s_per_user", "sample_s_per_user",
                     "reencode_s_per_user"):
            assert row[name] > 0
    assert "| tiny | " in (tmp_path / "generation_smoke.md").read_text()
