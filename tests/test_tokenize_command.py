"""`onerec-lab tokenize`: synthetic and Beauty-file runs, the saved codec, bad arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from onerec_lab.commands.tokenize import TokenizeArgs, run
from policies.codec import SemanticIdCodec
from tests.conftest import REPO_ROOT, shared_data
from tests.test_reward_doubles import single_threaded_torch  # noqa: F401 (autouse: tiny tensors)

FAST = {"embedding_steps": 20, "iterations": 4}


def test_synthetic_balanced_run_reports_and_saves_the_codec(tmp_path) -> None:
    path = tmp_path / "codec.safetensors"
    result = run(TokenizeArgs(items=600, levels=2, codebook=8, balanced=True, out=str(path),
                              **FAST))
    assert result["items"] == 600 and result["codebook_sizes"] == [8, 8]
    # 600 items over 8 codes: 75 each, so every code is used and the entropy is log2(8).
    assert result["utilization"] == [1.0, 1.0]
    assert result["entropy_bits"] == pytest.approx([3.0, 3.0])
    assert 0.0 <= result["collision_rate"] <= 1.0
    assert 0.0 < result["reconstruction_error"] < 1.0
    assert result["seconds"] > 0 and "synthetic catalog" in result["embedding_source"]
    codec = SemanticIdCodec.load(path)
    assert codec.num_levels == result["codec_levels"]
    items = torch.arange(600)
    assert torch.equal(codec.decode(codec.encode(items)), items)


def test_same_seed_same_report() -> None:
    args = TokenizeArgs(items=300, levels=2, codebook=4, seed=3, **FAST)
    first, second = run(args), run(args)
    for key in ("entropy_bits", "collision_rate", "reconstruction_error"):
        assert first[key] == second[key]


def test_beauty_format_file(tmp_path) -> None:
    data = tmp_path / "tiny.txt"
    data.write_text("".join(f"{user} {user} {user + 1} {user + 2} {user + 3}\n"
                            for user in range(1, 13)))
    result = run(TokenizeArgs(data=str(data), levels=2, codebook=3, **FAST))
    assert result["items"] == 15  # raw ids 1..15
    assert "tiny.txt" in result["embedding_source"]


def test_real_beauty_file() -> None:
    path = shared_data("amazon-beauty/Beauty.txt")
    result = run(TokenizeArgs(data=str(path), levels=2, codebook=16, balanced=True, **FAST))
    assert result["items"] == 12_101
    assert result["utilization"] == [1.0, 1.0]


def test_bad_arguments_are_clear_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"items \(100\) must be >= codebook \(256\)"):
        TokenizeArgs(items=100)
    with pytest.raises(ValueError, match="levels must be >= 1"):
        TokenizeArgs(levels=0)
    with pytest.raises(ValueError, match="missing.txt does not exist"):
        run(TokenizeArgs(data=str(tmp_path / "missing.txt"), **FAST))


def test_cli_prints_json() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "onerec_lab.cli", "tokenize", "--items", "200", "--codebook", "4",
         "--levels", "2", "--embedding-steps", "5", "--iterations", "2", "--balanced", "--json"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["utilization"] == [1.0, 1.0] and report["items"] == 200
