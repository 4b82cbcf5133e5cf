"""`onerec-lab align` and `onerec-lab evaluate` end to end, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from envs.logs import LoggedSessions
from onerec_lab.commands.align import AlignArgs, run
from onerec_lab.commands.evaluate import EvaluateArgs
from tests.conftest import REPO_ROOT
from tests.test_pretrain import random_codec, small_logs, small_policy
from trainers.pretrain import CHECKPOINT_FILE, PretrainConfig, load_policy, pretrain
from trainers.pretrain_data import LoggedExamples

TINY = ["--steps", "2", "--users", "2", "--num-generations", "4", "--eval-users", "3",
        "--eval-requests", "2", "--candidates", "10"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "onerec_lab.cli", *args], cwd=REPO_ROOT,
                          env=environment, capture_output=True, text=True, timeout=300,
                          check=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A logs folder and a policy pre-trained on it for two steps (its checkpoint records it)."""
    folder = tmp_path_factory.mktemp("world")
    small_logs().save(folder / "logs")
    logs = LoggedSessions.load(folder / "logs")
    pretrain(small_policy(random_codec()), LoggedExamples(logs),
             PretrainConfig(max_steps=2, per_device_train_batch_size=4, warmup_steps=1,
                            output_dir=str(folder / "pretrained"), progress=False))
    return folder / "logs", folder / "pretrained" / CHECKPOINT_FILE


@pytest.mark.heavy
def test_align_prints_the_before_and_after_figures(world: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    _, checkpoint = world
    completed = _cli("align", "--method", "ecpo", "--reward", "pscore + 0.5*format", "--policy",
                     str(checkpoint), "--seed", "0", "--out", str(tmp_path / "run"), "--json",
                     *TINY)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)
    for name in ("proxy_reward", "true_watch_time", "legality"):
        assert isinstance(result[f"{name}_before"], float)
        assert isinstance(result[f"{name}_after"], float)
    assert 0 <= result["legality_after"] <= 1 and result["true_watch_time_before"] > 0
    assert "rewards/pscore" in result["final_metrics"]
    out = tmp_path / "run"
    assert (out / "align.json").is_file() and (out / "align.md").is_file()
    assert (out / "tensorboard").is_dir()
    load_policy(out / CHECKPOINT_FILE)  # the aligned policy is a policy checkpoint

    evaluated = _cli("evaluate", "--policy", str(out / CHECKPOINT_FILE), "--users", "3",
                     "--requests", "2", "--seed", "0", "--json", "--out", str(tmp_path / "eval"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    figures = json.loads(evaluated.stdout)
    assert {"true_watch_time", "session_length", "behaviour_rates", "proxy_reward", "legality",
            "diversity", "coverage"} <= set(figures)
    assert (tmp_path / "eval" / "evaluation.md").is_file()


@pytest.mark.heavy
@pytest.mark.parametrize("method", ["rsft", "dpo", "grpo"])
def test_every_method_runs_through_the_command(method: str, world: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    _, checkpoint = world
    result = run(AlignArgs(policy=str(checkpoint), out=str(tmp_path), method=method,
                           reward="format", steps=2, users=2, num_generations=4, eval_users=2,
                           eval_requests=1, candidates=10, json=True))
    assert result["method"] == method and {"legality_before", "legality_after"} <= set(result)


def test_logged_rsft_and_baselines(world: tuple[Path, Path], tmp_path: Path) -> None:
    logs_dir, checkpoint = world
    result = run(AlignArgs(policy=str(checkpoint), out=str(tmp_path), method="rsft",
                           rsft_data="logs", reward="format", steps=1, eval_users=2,
                           eval_requests=1, candidates=10, json=True))
    assert result["resumed_from_step"] == 0 and "final_ntp_loss" in result
    completed = _cli("evaluate", "--policy", "popular", "--logs", str(logs_dir), "--users", "2",
                     "--requests", "1", "--reward", "format", "--json")
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert json.loads(completed.stdout)["legality"] == 1.0


def test_bad_input_is_a_clear_error(world: tuple[Path, Path], tmp_path: Path) -> None:
    _, checkpoint = world
    unknown = _cli("align", "--method", "ppo", "--policy", str(checkpoint), "--out",
                   str(tmp_path))
    assert unknown.returncode == 2 and "invalid choice: 'ppo'" in unknown.stderr
    with pytest.raises(ValueError, match="unknown method 'ppo'"):
        AlignArgs(policy=str(checkpoint), out=str(tmp_path), method="ppo")
    single = _cli("align", "--policy", str(checkpoint), "--out", str(tmp_path),
                  "--num-generations", "1", "--json")
    assert single.returncode == 2 and "num_generations must be >= 2" in single.stderr
    assert "Traceback" not in single.stderr
    bad_spec = _cli("align", "--policy", str(checkpoint), "--out", str(tmp_path), "--reward",
                    "pscor")
    assert bad_spec.returncode == 2 and "did you mean 'pscore'" in bad_spec.stderr
    with pytest.raises(ValueError, match="needs --logs"):
        EvaluateArgs(policy="random")
    with pytest.raises(ValueError, match="neither a checkpoint"):
        EvaluateArgs(policy=str(tmp_path / "missing.pt"))
