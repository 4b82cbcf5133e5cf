"""`onerec-lab pretrain`: end to end in a subprocess, resuming, Beauty files, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from envs.logs import LoggedSessions
from onerec_lab.commands.pretrain import PretrainArgs, run
from onerec_lab.experiment.layout import CODEC_FILE
from onerec_lab.experiment.pretraining import CodecSettings
from policies.codec import SemanticIdCodec
from tests.conftest import REPO_ROOT
from tests.test_pretrain import random_codec, small_logs
from trainers.pretrain import CHECKPOINT_FILE, PretrainConfig, load_policy

TINY_BUDGET = ["--batch-size", "8", "--codebook", "8", "--embedding-steps", "10",
               "--warmup-steps", "2", "--logging-steps", "2"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "onerec_lab.cli", "pretrain", *args],
                          cwd=REPO_ROOT, env=environment, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture(scope="module")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("logs")
    small_logs().save(folder)
    return folder


@pytest.mark.heavy
def test_the_command_builds_a_codec_trains_and_resumes(logs_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    completed = _cli("--logs", str(logs_dir), "--out", str(out), "--steps", "4", "--json",
                     *TINY_BUDGET)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)
    assert {"initial_loss", "final_loss", "tokens_per_s", "parameters", "steps",
            "seconds"} <= set(result)
    assert result["steps"] == 4 and result["codec_built"] and result["world_size"] == 1
    assert result["parameters"] > 0 and result["tokens_per_s"] > 0
    codec = SemanticIdCodec.load(out / CODEC_FILE)
    assert codec.codebook_sizes[:3] == (8, 8, 8)
    policy = load_policy(out / CHECKPOINT_FILE)
    assert policy.config.num_creators > 0 and policy.config.positive_length == 24
    assert (policy.encoder.items.item_creator > 0).any()  # side features from the catalog

    more = run(PretrainArgs(out=str(out), logs=str(logs_dir), json=True,
                            codec=CodecSettings(codebook=8, embedding_steps=10),
                            training=PretrainConfig(max_steps=6, per_device_train_batch_size=8,
                                                    warmup_steps=2, logging_steps=2)))
    assert more["resumed_from_step"] == 4 and more["steps"] == 6
    assert not more["codec_built"] and more["codec"] == str(out / CODEC_FILE)
    assert more["initial_loss"] == result["initial_loss"]


def test_beauty_histories_pre_train_through_the_same_trainer(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = [" ".join(map(str, [user, *rng.integers(1, 60, size=6)])) for user in range(40)]
    data = tmp_path / "Beauty.txt"
    data.write_text("\n".join(lines) + "\n")
    result = run(PretrainArgs(out=str(tmp_path / "run"), data=str(data), json=True,
                              codec=CodecSettings(codebook=4, embedding_steps=10),
                              training=PretrainConfig(max_steps=3,
                                                      per_device_train_batch_size=8)))
    assert result["steps"] == 3 and result["codec_built"]
    assert result["examples"] == 40 * 3  # 4 training items per user: 3 (history, next) pairs


def test_logs_without_high_quality_exposures_are_a_clear_error(
    logs_dir: Path, tmp_path: Path
) -> None:
    logs = LoggedSessions.load(logs_dir)
    silent = LoggedSessions({**logs.columns, "feedback": np.zeros_like(logs.feedback)},
                            logs.header, _catalog=logs.catalog)
    folder = tmp_path / "silent"
    silent.save(folder)
    with pytest.raises(ValueError, match=rf"logs {folder} hold no high-quality exposure"):
        run(PretrainArgs(out=str(tmp_path / "run"), logs=str(folder)))
    assert not (tmp_path / "run").exists()  # nothing was built before the check


def test_bad_arguments_and_a_foreign_codec_are_clear_errors(logs_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of --logs"):
        PretrainArgs(out="x")
    with pytest.raises(ValueError, match="per_device_train_batch_size must be >= 1"):
        PretrainArgs(out="x", logs="y",
                     training=PretrainConfig(per_device_train_batch_size=0))
    zero = _cli("--logs", str(logs_dir), "--out", str(tmp_path / "run"), "--batch-size", "0")
    assert zero.returncode == 2 and "per_device_train_batch_size must be >= 1" in zero.stderr
    foreign = tmp_path / "foreign.safetensors"
    random_codec(num_items=50).save(foreign)
    with pytest.raises(ValueError, match=rf"codec {foreign} covers 50 items but the logs .* has 400"):
        run(PretrainArgs(out=str(tmp_path / "run"), logs=str(logs_dir),
                         codec=CodecSettings(codec=str(foreign))))
    completed = _cli("--logs", str(logs_dir), "--out", str(tmp_path / "run"), "--preset", "huge")
    assert completed.returncode == 2 and "unknown preset 'huge'" in completed.stderr
