"""The shared training loop: window reduction, `*_max` across ranks, plain progress lines,
checkpoint kinds. (Version-1 checkpoints resume in tests/test_pretrain.py and
tests/test_align_trainers.py.)"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from envs.logs import LoggedSessions
from policies.codec import SemanticIdCodec
from tests.test_align_trainers import FAST as ONLINE_FAST
from tests.test_align_trainers import make_trainer
from tests.test_pretrain import FAST, small_policy
from trainers.checkpoint import read_checkpoint, training_metadata
from trainers.grpo import GRPOConfig, GRPOTrainer
from trainers.loop import (
    CHECKPOINT_FILE,
    Metrics,
    TrainingLoop,
    TrainingTask,
    reduce_records,
    run_training,
)
from trainers.pretrain import PretrainConfig, pretrain
from trainers.pretrain_data import LoggedExamples
from trainers.runtime import reduce_across_ranks


@pytest.fixture
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stderr is captured (not a terminal) and no variable forces rich to think otherwise."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)


def test_records_reduce_to_their_mean_or_for_max_charts_their_largest() -> None:
    records = [{"losses/total": 1.0, "charts/ratio_max": 1.5, "charts/margin": float("nan")},
               {"losses/total": 2.0, "charts/ratio_max": 1.25, "charts/margin": float("nan")},
               {"losses/total": 4.5, "charts/ratio_max": 1.75, "rewards/kept": 0.5}]
    reduced = reduce_records(records)
    assert reduced["losses/total"] == 2.5 and reduced["charts/ratio_max"] == 1.75
    assert math.isnan(reduced["charts/margin"])  # no record holds a number for it
    assert reduced["rewards/kept"] == 0.5  # the mean over the records that have it


def _reduce_worker(rank: int, init_file: str, out: str) -> None:
    """Rank r holds (N = 2, M = 3) values r + 1, 10 (r + 1), -(r + 1); reduces them."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        values = torch.tensor([[1.0, 10.0, -1.0], [2.0, 20.0, -2.0]], dtype=torch.float64)
        reduced = reduce_across_ranks(values * (rank + 1), ["losses/total", "charts/ratio_max",
                                                            "charts/negative_weight_max"], 2)
        torch.save(reduced, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_max_charts_take_the_largest_over_ranks_and_the_rest_the_mean(tmp_path: Path) -> None:
    mp.spawn(_reduce_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    first, second = (torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
                     for rank in range(2))
    # rank 0: 1, 10, -1 | rank 1: 2, 20, -2 (first row); the mean, the largest, the largest
    expected = torch.tensor([[1.5, 20.0, -1.0], [3.0, 40.0, -2.0]], dtype=torch.float64)
    assert torch.equal(first, expected) and torch.equal(second, expected)


class ScriptedTask(TrainingTask):
    """Metrics given by hand per step: `value` = step, `value_max` = 10 - step (so a window's
    largest is its first step's); each step one optimizer step on a zero loss."""

    label = "scripted"

    def __init__(self, kind: str = "pretrain") -> None:
        self.kind = kind
        self.restored: dict[str, Any] | None = None

    def start(self, loop: TrainingLoop) -> None:
        self.policy = loop.policy

    def settings(self) -> dict[str, Any]:
        return {"script": 1}

    def hyperparameters(self) -> Mapping[str, Any]:
        return {"script": 1}

    def run_metadata(self) -> dict[str, Any]:
        return {"logs": "/scripted"}

    def step(self, step: int, loop: TrainingLoop) -> Metrics:
        loop.update(sum(p.sum() for p in self.policy.parameters()) * 0.0)
        return {"charts/value": float(step), "charts/value_max": torch.tensor(10.0 - step)}

    def progress_text(self, record: Mapping[str, float], window: Mapping[str, float]) -> str:
        return f"value {record['charts/value']:.4f}"

    def trainer_state(self) -> dict[str, Any]:
        return {"note": "scripted"}

    def restore(self, state: dict[str, Any]) -> None:
        self.restored = state


def _scripted(codec: SemanticIdCodec, task: ScriptedTask, **settings: Any):
    config = PretrainConfig(**{"max_steps": 7, "logging_steps": 3, "save_steps": 100,
                               "progress": False, **settings})
    return run_training(small_policy(codec), config, task, min_lr_rate=1.0)


def test_tensorboard_points_are_window_means_or_maxima(codec: SemanticIdCodec,
                                                      tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = _scripted(codec, ScriptedTask(), output_dir=str(tmp_path))
    assert [record["charts/value"] for record in result.history] == [1, 2, 3, 4, 5, 6, 7]
    assert all(record["charts/learning_rate"] > 0 for record in result.history)
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    # windows: steps 1-3, 4-6, 7
    assert [(e.step, e.value) for e in events.Scalars("charts/value")] == [(3, 2), (6, 5), (7, 7)]
    assert [(e.step, e.value) for e in events.Scalars("charts/value_max")] == [
        (3, 9), (6, 6), (7, 3)]
    assert any("hyperparameters" in tag for tag in events.Tags()["tensors"])


def test_a_resume_restores_the_task_state_and_refuses_another_kind(
    codec: SemanticIdCodec, tmp_path: Path
) -> None:
    _scripted(codec, ScriptedTask(), output_dir=str(tmp_path), max_steps=2)
    path = tmp_path / CHECKPOINT_FILE
    record = read_checkpoint(path).extra
    assert record["kind"] == "pretrain" and record["trainer_state"] == {"note": "scripted"}
    assert record["settings"] == {"script": 1, "world_size": 1}
    assert training_metadata(path) == {"logs": "/scripted"}
    resumed = ScriptedTask()
    result = _scripted(codec, resumed, output_dir=str(tmp_path), max_steps=3)
    assert result.resumed_from_step == 2 and resumed.restored == {"note": "scripted"}
    assert [record["charts/value"] for record in result.history] == [1, 2, 3]
    with pytest.raises(ValueError, match=rf"{path} is a checkpoint of pre-training, not of an "
                                         "online alignment run: pass another output folder"):
        _scripted(codec, ScriptedTask(kind="online"), output_dir=str(tmp_path), max_steps=4)


def test_off_a_terminal_progress_is_plain_lines(codec: SemanticIdCodec, no_terminal: None,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    # max_steps 25, logging_steps 2: a line every max(2, ceil(25 / 10)) = 3 steps
    _scripted(codec, ScriptedTask(), max_steps=25, logging_steps=2, progress=True)
    lines = capsys.readouterr().err.splitlines()
    steps = [1, 3, 6, 9, 12, 15, 18, 21, 24, 25]
    assert lines == [f"scripted: step {step}/25, value {step:.4f}" for step in steps]
    _scripted(codec, ScriptedTask(), max_steps=25, progress=False)
    assert capsys.readouterr().err == ""


def test_pretraining_and_online_runs_print_their_figures(
    logs: LoggedSessions, codec: SemanticIdCodec, no_terminal: None,
    capsys: pytest.CaptureFixture[str]
) -> None:
    pretrain(small_policy(codec), LoggedExamples(logs),
             PretrainConfig(max_steps=4, logging_steps=2, **FAST))
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "pretrain: step 1/4", "pretrain: step 2/4", "pretrain: step 4/4"]
    assert all(re.fullmatch(r"pretrain: step \d/4, loss \d\.\d{4}, [\d,]+ tokens/s", line)
               for line in lines), lines
    config = GRPOConfig(max_steps=2, **{**ONLINE_FAST, "progress": True})
    make_trainer(GRPOTrainer, config, logs, codec).train()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(
        re.fullmatch(r"ecpo: step \d/2, proxy \d\.\d{4}, true watch \d+\.\d\d s", line)
        for line in lines), lines
