"""Guards of the training loop and its checkpoints: a run that diverges stops and keeps its
last finite checkpoint; SIGINT / SIGTERM stop at a step boundary with a checkpoint that
resumes exactly; a checkpoint is read from its file or run folder, never unsafely, and what
is not one (another artefact, a damaged file, weights that are not finite, a config that asks
for a model it does not hold) is refused by name, before anything is allocated."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from envs.logs import SESSIONS_FILE, LoggedSessions
from policies.codec import SemanticIdCodec
from policies.config import OneRecConfig
from policies.encoder import Context
from policies.onerec import OneRecPolicy
from tests.conftest import REPO_ROOT
from tests.test_align_trainers import FAST as ONLINE_FAST
from tests.test_align_trainers import make_trainer
from tests.test_pretrain import FAST, random_codec, small_policy
from tests.test_training_loop import ScriptedTask
from trainers import loop as loop_module
from trainers.checkpoint import read_checkpoint, save_checkpoint
from trainers.grpo import GRPOConfig, GRPOTrainer
from trainers.guards import StopSignals, TrainingDiverged, TrainingInterrupted
from trainers.loop import (
    CHECKPOINT_FILE,
    Metrics,
    TrainingLoop,
    TrainingResult,
    load_policy,
    run_training,
)
from trainers.pretrain import PretrainConfig, pretrain
from trainers.pretrain_data import LoggedExamples

INTERRUPT_AT = 3  # the step during which the subprocess is signalled
CHILD_TIMEOUT = 240  # seconds: a loaded 2-core machine imports torch slowly


class PoisonedTask(ScriptedTask):
    """ScriptedTask, but from step `at` its loss is `value` (so the gradients stay zero and
    the weights finite: only the loss check can see it), or at step `at` a weight is set to
    `value` (the loss stays finite: only the weight check can see it)."""

    def __init__(self, at: int, value: float, poison: str) -> None:
        super().__init__()
        self.at, self.value, self.poison = at, value, poison

    def step(self, step: int, loop: TrainingLoop) -> Metrics:
        first, *others = self.policy.parameters()
        zero = sum(p.sum() for p in others) * 0.0  # the poisoned first weight left out
        if self.poison == "weights" and step == self.at:
            with torch.no_grad():
                first.view(-1)[0] = self.value
        loop.update(zero + self.value if self.poison == "loss" and step >= self.at else zero)
        return {"charts/value": float(step)}


def _scripted(codec: SemanticIdCodec, task: ScriptedTask, **settings: Any) -> TrainingResult:
    config = PretrainConfig(**{"max_steps": 8, "logging_steps": 3, "save_steps": 2,
                               "progress": False, **settings})
    return run_training(small_policy(codec), config, task, min_lr_rate=1.0)


def _all_finite(state: Mapping[str, Any]) -> bool:
    return all(torch.isfinite(value).all() for value in state.values()
               if isinstance(value, torch.Tensor) and value.is_floating_point())


def _saved_checkpoint(codec: SemanticIdCodec, folder: Path) -> Path:
    """A small run's checkpoint (two scripted steps) in `folder`."""
    _scripted(codec, ScriptedTask(), max_steps=2, output_dir=str(folder))
    return folder / CHECKPOINT_FILE


# ---- divergence -----------------------------------------------------------------------------


def test_an_absurd_learning_rate_stops_the_run_and_keeps_the_last_finite_checkpoint(
    logs: LoggedSessions, codec: SemanticIdCodec, tmp_path: Path
) -> None:
    config = PretrainConfig(max_steps=6, save_steps=1, logging_steps=3, progress=False,
                            **{**FAST, "learning_rate": 1e12, "warmup_steps": 0},
                            output_dir=str(tmp_path))
    with pytest.raises(TrainingDiverged) as raised:
        pretrain(small_policy(codec), LoggedExamples(logs), config)
    error, path = raised.value, tmp_path / CHECKPOINT_FILE
    # Step 1 starts from sane weights; its update (a step of 1e12) breaks the next loss.
    assert error.checkpoint == path and error.checkpoint_step == error.step - 1
    assert re.fullmatch(
        rf"training diverged at step {error.step}: (loss is (nan|inf)|the weights are not "
        rf"finite \(.*\)) \(learning rate 1e12 too high\?\); the last finite checkpoint is "
        rf"kept at {re.escape(str(path))} \(step {error.step - 1}\); lower --learning-rate or "
        r"raise --warmup-steps", str(error))
    checkpoint = read_checkpoint(path)  # refused if it held a NaN
    assert checkpoint.step == error.step - 1 and _all_finite(checkpoint.model)
    without_folder = dataclasses.replace(config, output_dir=None)
    with pytest.raises(TrainingDiverged, match=r"at step \d+: .*; nothing was saved \(no "
                                               r"output folder\); lower --learning-rate"):
        pretrain(small_policy(codec), LoggedExamples(logs), without_folder)


@pytest.mark.parametrize(("value", "shown"), [(float("nan"), "nan"), (float("inf"), "inf")])
def test_a_loss_that_is_not_finite_stops_at_its_step_before_the_next_save(
    codec: SemanticIdCodec, tmp_path: Path, value: float, shown: str
) -> None:
    # saves at 2, 4, 6, 8; windows end at 2, 3, 4, 6: the poisoned step 5 is seen at 6
    with pytest.raises(TrainingDiverged) as raised:
        _scripted(codec, PoisonedTask(at=5, value=value, poison="loss"),
                  output_dir=str(tmp_path), learning_rate=1e-3)
    path = tmp_path / CHECKPOINT_FILE
    assert str(raised.value) == (
        f"training diverged at step 5: loss is {shown} (learning rate 0.001 too high?); the "
        f"last finite checkpoint is kept at {path} (step 4); lower --learning-rate or raise "
        "--warmup-steps")
    assert (raised.value.step, raised.value.checkpoint_step) == (5, 4)
    assert read_checkpoint(path).step == 4  # step 6 was never saved
    copy = pickle.loads(pickle.dumps(raised.value))  # e.g. from a worker process
    assert (str(copy), copy.step, copy.checkpoint) == (str(raised.value), 5, path)


def test_weights_that_are_not_finite_stop_the_run_even_with_finite_losses(
    codec: SemanticIdCodec, tmp_path: Path
) -> None:
    name = next(iter(dict(small_policy(codec).named_parameters())))
    with pytest.raises(TrainingDiverged,
                       match=rf"training diverged at step 6: the weights are not finite \("
                             rf"{re.escape(name)} holds (nan|inf)\).*kept at .* \(step 4\)"):
        _scripted(codec, PoisonedTask(at=5, value=float("inf"), poison="weights"),
                  output_dir=str(tmp_path))
    assert read_checkpoint(tmp_path / CHECKPOINT_FILE).step == 4


def test_an_online_method_with_an_absurd_learning_rate_stops_too(
    logs: LoggedSessions, codec: SemanticIdCodec
) -> None:
    config = GRPOConfig(max_steps=4, **{**ONLINE_FAST, "learning_rate": 1e12})
    with pytest.raises(TrainingDiverged, match=r"training diverged at step \d: .*\(learning "
                                               r"rate 1e12 too high\?\); nothing was saved"):
        make_trainer(GRPOTrainer, config, logs, codec).train()


def test_a_checkpoint_that_is_not_finite_is_neither_saved_nor_loaded(
    codec: SemanticIdCodec, tmp_path: Path
) -> None:
    path = _saved_checkpoint(codec, tmp_path)
    before = path.read_bytes()
    policy = small_policy(codec)
    name = next(iter(dict(policy.named_parameters())))
    with torch.no_grad():
        dict(policy.named_parameters())[name].view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match=rf"the weights are not finite \({re.escape(name)} "
                                         rf"holds nan\): not saved to {re.escape(str(path))}"):
        save_checkpoint(path, policy, None, None, 3, {})
    assert path.read_bytes() == before
    # A NaN checkpoint crafted by hand (as an older lab could write one) is refused on load.
    payload = torch.load(path, weights_only=True)
    payload["model"][name] = torch.full_like(payload["model"][name], float("nan"))
    torch.save(payload, path)
    message = rf"{re.escape(str(path))} holds weights that are not finite \({re.escape(name)} " \
              r"holds nan\), saved by a run that diverged: pass another checkpoint"
    with pytest.raises(ValueError, match=message):
        read_checkpoint(path)
    with pytest.raises(ValueError, match=message):
        load_policy(tmp_path)
    with pytest.raises(ValueError, match=message):  # nor resumed from
        _scripted(codec, ScriptedTask(), max_steps=4, output_dir=str(tmp_path))


# ---- interrupts -----------------------------------------------------------------------------


@pytest.fixture
def main_thread() -> None:
    """Handlers are installed in the main thread only: a test that signals itself needs it."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be installed in the main thread")


class SignalAt(ScriptedTask):
    """ScriptedTask that sends its own process `signal_number` during step `at`."""

    def __init__(self, at: int, signal_number: int) -> None:
        super().__init__()
        self.at, self.signal_number = at, signal_number

    def step(self, step: int, loop: TrainingLoop) -> Metrics:
        if step == self.at:
            signal.raise_signal(self.signal_number)
        return super().step(step, loop)


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_at_the_step_boundary_with_a_checkpoint(
    codec: SemanticIdCodec, tmp_path: Path, signal_number: int, main_thread: None
) -> None:
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    name = signal.Signals(signal_number).name
    with pytest.raises(TrainingInterrupted) as raised:
        _scripted(codec, SignalAt(3, signal_number), output_dir=str(tmp_path), save_steps=100)
    path = tmp_path / CHECKPOINT_FILE
    assert str(raised.value) == (f"interrupted at step 3 by {name}; checkpoint saved to "
                                 f"{path}: rerun the same command to resume")
    assert (raised.value.step, raised.value.checkpoint, raised.value.signal_name) == (3, path,
                                                                                      name)
    checkpoint = read_checkpoint(path)
    assert checkpoint.step == 3 and len(checkpoint.extra["history"]) == 3
    copy = pickle.loads(pickle.dumps(raised.value))  # e.g. from a worker process
    assert (str(copy), copy.step, copy.signal_name) == (str(raised.value), 3, name)
    assert {number: signal.getsignal(number) for number in handlers} == handlers  # restored
    with pytest.raises(TrainingInterrupted, match=rf"^interrupted at step 2 by {name}; nothing "
                                                  r"was saved \(no output folder\)$"):
        _scripted(codec, SignalAt(2, signal_number))


def test_a_second_signal_raises_keyboard_interrupt_at_once(main_thread: None) -> None:
    previous = signal.getsignal(signal.SIGINT)
    with StopSignals() as signals:
        signal.raise_signal(signal.SIGTERM)
        assert signals.received == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is previous
    # Under torchrun the agent forwards the terminal's Ctrl-C: the repeat is the same press.
    with StopSignals(repeat_raises=False) as signals:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
        assert signals.received == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is previous


class SignalledExamples:
    """Example source of the subprocess below: asking for batch `at` (step `at`'s) writes
    `marker` and waits until `go` exists (the test signals the process before creating it),
    so the signal arrives during step `at` on any machine."""

    def __init__(self, source: LoggedExamples, at: int, marker: Path, go: Path) -> None:
        self.source, self.at, self.marker, self.go, self.served = source, at, marker, go, 0
        self.num_examples, self.num_items = source.num_examples, source.num_items
        self.complete_contexts, self.folder = source.complete_contexts, source.folder

    def examples(self, indices: np.ndarray) -> tuple[Context, torch.Tensor]:
        self.served += 1
        if self.served == self.at:
            self.marker.touch()
            deadline = time.monotonic() + CHILD_TIMEOUT
            while not self.go.exists():  # a handshake with the test, not a sleep to pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.go} never appeared")
                time.sleep(0.01)
        return self.source.examples(indices)


def _interrupt_config(output_dir: Path) -> PretrainConfig:
    return PretrainConfig(max_steps=6, save_steps=100, logging_steps=2, progress=False,
                          output_dir=str(output_dir), **FAST)


def interrupted_child(logs_dir: str, output_dir: str, marker: str, go: str) -> None:
    """The subprocess: pre-train on `logs_dir` into `output_dir`, signalled during step
    INTERRUPT_AT; prints the interrupt as JSON and exits 130 as the command line does."""
    torch.set_num_threads(1)  # as the test process (conftest): the same sums, bit for bit
    examples = SignalledExamples(LoggedExamples(LoggedSessions.load(logs_dir)), INTERRUPT_AT,
                                 Path(marker), Path(go))
    try:
        pretrain(small_policy(random_codec()), examples, _interrupt_config(Path(output_dir)))
    except TrainingInterrupted as error:
        print(json.dumps({"message": str(error), "step": error.step,
                          "checkpoint": str(error.checkpoint)}))
        sys.exit(130)
    sys.exit(1)


@pytest.mark.heavy
@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signalled_process_saves_and_resumes_to_the_uninterrupted_weights(
    logs: LoggedSessions, codec: SemanticIdCodec, tmp_path: Path, signal_number: int
) -> None:
    logs_dir, output_dir = tmp_path / "logs", tmp_path / "interrupted"
    logs.save(logs_dir)
    marker, go = tmp_path / "marker", tmp_path / "go"
    code = ("import sys; from tests.test_training_guards import interrupted_child; "
            "interrupted_child(*sys.argv[1:])")
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(logs_dir), str(output_dir), str(marker), str(go)],
        cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + CHILD_TIMEOUT
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), child.communicate(timeout=30)
        child.send_signal(signal_number)
        go.touch()
        stdout, stderr = child.communicate(timeout=CHILD_TIMEOUT)
    finally:
        child.kill()
    assert child.returncode == 130, stderr[-3000:]
    path = output_dir / CHECKPOINT_FILE
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report == {"message": f"interrupted at step {INTERRUPT_AT} by "
                                 f"{signal.Signals(signal_number).name}; checkpoint saved to "
                                 f"{path}: rerun the same command to resume",
                      "step": INTERRUPT_AT, "checkpoint": str(path)}
    assert read_checkpoint(path).step == INTERRUPT_AT  # saved at the boundary, not at save_steps

    examples = LoggedExamples(LoggedSessions.load(logs_dir))
    resumed_policy = small_policy(codec)
    resumed = pretrain(resumed_policy, examples, _interrupt_config(output_dir))
    whole_policy = small_policy(codec)
    whole = pretrain(whole_policy, examples, _interrupt_config(tmp_path / "whole"))
    assert resumed.resumed_from_step == INTERRUPT_AT and resumed.steps == 6
    assert resumed.losses == whole.losses  # bit for bit, the child's steps included
    expected = whole_policy.state_dict()
    assert all(torch.equal(value, expected[key])
               for key, value in resumed_policy.state_dict().items())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _signalled_rank(rank: int, port: int, out: str) -> None:
    """One of two gloo ranks; only rank 1 is signalled (during step 3)."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    task = SignalAt(3, signal.SIGTERM) if rank == 1 else ScriptedTask()
    config = PretrainConfig(max_steps=8, logging_steps=5, save_steps=100, progress=False,
                            device="cpu", output_dir=f"{out}/run")
    try:
        run_training(small_policy(random_codec()), config, task, min_lr_rate=1.0)
        outcome: dict[str, Any] = {"finished": True}
    except TrainingInterrupted as error:
        outcome = {"step": error.step, "message": str(error)}
    Path(out, f"rank{rank}.json").write_text(json.dumps(outcome))


@pytest.mark.heavy
def test_ranks_agree_on_the_step_when_only_one_is_signalled(tmp_path: Path) -> None:
    mp.spawn(_signalled_rank, args=(_free_port(), str(tmp_path)), nprocs=2)
    outcomes = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    path = tmp_path / "run" / CHECKPOINT_FILE
    expected = {"step": 3, "message": f"interrupted at step 3 by SIGTERM; checkpoint saved to "
                                      f"{path}: rerun the same command to resume"}
    assert outcomes == [expected, expected]
    assert read_checkpoint(path).step == 3


# ---- loading --------------------------------------------------------------------------------


def test_a_run_folder_is_taken_for_its_checkpoint(codec: SemanticIdCodec, tmp_path: Path) -> None:
    path = _saved_checkpoint(codec, tmp_path / "run")
    assert read_checkpoint(tmp_path / "run").path == path
    from_folder, from_file = load_policy(tmp_path / "run"), load_policy(path)
    assert all(torch.equal(value, from_file.state_dict()[key])
               for key, value in from_folder.state_dict().items())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path / 'empty'))} is a folder "
                                         r"without checkpoint.pt; pass a run folder written by "
                                         r"`onerec-lab pretrain`/`align`, or the checkpoint "
                                         r"file$"):
        load_policy(tmp_path / "empty")


def test_other_lab_artefacts_are_named_not_read(logs: LoggedSessions, tmp_path: Path) -> None:
    logs.save(tmp_path / "logs")
    sessions = tmp_path / "logs" / SESSIONS_FILE
    with pytest.raises(ValueError) as raised:
        load_policy(sessions)
    assert str(raised.value) == (f"{sessions} is a logged-sessions file (onerec-lab simulate), "
                                 "not a checkpoint; pass --policy RUN_FOLDER or CHECKPOINT.pt")
    codec_file = tmp_path / "codec.safetensors"
    random_codec().save(codec_file)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(codec_file))} is a semantic-ID codec "
                                         r"\(onerec-lab tokenize\), not a checkpoint"):
        read_checkpoint(codec_file)


@pytest.mark.parametrize("damage", ["truncated", "unsafe"])
def test_a_damaged_checkpoint_message_costs_no_data_and_no_safety(
    codec: SemanticIdCodec, tmp_path: Path, damage: str
) -> None:
    path = _saved_checkpoint(codec, tmp_path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:4096])  # a copy cut short
    else:  # a pickled module: a safe load refuses to build it
        torch.save({"format": "x", "object": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))} is not a readable "
                                         r"checkpoint") as raised:
        load_policy(path)
    message = str(raised.value)
    assert "delete" not in message.lower() and "weights_only" not in message
    assert "\n" not in message and message.endswith(
        "train into another folder (--out), or pass another checkpoint")


def _with_model_config(path: Path, **changes: Any) -> Path:
    """`path` rewritten with its model config changed (a crafted file)."""
    payload = torch.load(path, weights_only=True)
    config = json.loads(payload["extra"]["model_config"])
    payload["extra"]["model_config"] = json.dumps({**config, **changes})
    crafted = path.with_name("crafted.pt")
    torch.save(payload, crafted)
    return crafted


def test_a_config_asking_for_a_huge_model_is_refused_before_allocation(
    codec: SemanticIdCodec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crafted = _with_model_config(_saved_checkpoint(codec, tmp_path), d_model=10**6)
    built = []  # the devices models were built on
    real_build = loop_module.build_policy

    def spy(config: OneRecConfig, seed: int, device: torch.device | str = "cpu") -> OneRecPolicy:
        built.append(str(device))
        return real_build(config, seed, device)

    monkeypatch.setattr(loop_module, "build_policy", spy)
    # the codes' embedding of the tiny model is (codes, 64); d_model 10**6: terabytes
    with pytest.raises(ValueError, match=rf"^{re.escape(str(crafted))} does not hold the model "
                                         r"its config describes \(encoder.items.codes.weight is "
                                         r"\(\d+, 64\), the model's \(\d+, 1000000\)\)"):
        load_policy(crafted)
    assert built == ["meta"]
    malformed = _with_model_config(tmp_path / CHECKPOINT_FILE, no_such_field=1)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(malformed))} has a malformed model "
                                         r"config \(TypeError: .*no_such_field"):
        load_policy(malformed)
