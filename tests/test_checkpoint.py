"""Generic training checkpoints: exact round trips, atomic writes, clear errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from trainers.checkpoint import (
    RunRecord,
    config_differences,
    read_checkpoint,
    restore_checkpoint,
    run_record,
    save_checkpoint,
    training_metadata,
)
from trainers.schedule import warmup_cosine_schedule


def _setup(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    return model, optimizer, warmup_cosine_schedule(optimizer, 2, 10)


def _train(model: nn.Module, optimizer: torch.optim.Optimizer,
           scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int,
           generator: torch.Generator) -> list[float]:
    losses = []
    for _ in range(steps):
        inputs = torch.randn(16, 4, generator=generator)
        loss = (model(inputs).squeeze(1) - inputs.sum(1)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


def test_a_restored_run_continues_exactly(tmp_path: Path) -> None:
    model, optimizer, scheduler = _setup()
    generator = torch.Generator().manual_seed(1)
    _train(model, optimizer, scheduler, 3, generator)
    path = save_checkpoint(tmp_path / "run" / "checkpoint.pt", model, optimizer, scheduler, 3,
                           {"generator": generator.get_state(), "note": "three steps"})
    expected = _train(model, optimizer, scheduler, 4, generator)

    checkpoint = read_checkpoint(path)
    assert checkpoint.step == 3 and checkpoint.extra["note"] == "three steps"
    restored, restored_optimizer, restored_scheduler = _setup(seed=7)  # other initial weights
    restore_checkpoint(checkpoint, restored, restored_optimizer, restored_scheduler)
    restored_generator = torch.Generator()
    restored_generator.set_state(checkpoint.extra["generator"])
    assert _train(restored, restored_optimizer, restored_scheduler, 4, restored_generator) == expected
    assert restored_scheduler.last_epoch == 7
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), restored.parameters(),
                                                  strict=True))


def test_saves_are_atomic_replacements(tmp_path: Path) -> None:
    model, optimizer, scheduler = _setup()
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model, optimizer, scheduler, 1, {})
    save_checkpoint(path, model, None, None, 2, {})
    assert [entry.name for entry in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp left
    checkpoint = read_checkpoint(path)
    assert checkpoint.step == 2 and checkpoint.optimizer is None
    with pytest.raises(ValueError, match=rf"{path} holds no optimizer state"):
        restore_checkpoint(checkpoint, model, optimizer)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_file_is_a_value_error_naming_it(tmp_path: Path, damage: str) -> None:
    model, optimizer, scheduler = _setup()
    path = save_checkpoint(tmp_path / "checkpoint.pt", model, optimizer, scheduler, 1, {})
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a checkpoint" * 9,
                      "empty": b""}[damage])
    with pytest.raises(ValueError, match=rf"{path} is not a readable checkpoint.*truncated"):
        read_checkpoint(path)


def test_foreign_missing_and_unsafe_files_are_value_errors(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match=rf"{foreign} is not an onerec-lab training checkpoint"):
        read_checkpoint(foreign)
    with pytest.raises(ValueError, match="missing.pt does not exist"):
        read_checkpoint(tmp_path / "missing.pt")
    model, _, _ = _setup()
    unsafe = save_checkpoint(tmp_path / "unsafe.pt", model, None, None, 1,
                             {"object": copy.copy(model)})  # a pickled module: code on load
    with pytest.raises(ValueError, match=f"{unsafe} is not a readable checkpoint"):
        read_checkpoint(unsafe)


def test_a_state_of_another_shape_is_a_value_error_naming_the_path(tmp_path: Path) -> None:
    model, optimizer, scheduler = _setup()
    path = save_checkpoint(tmp_path / "checkpoint.pt", model, optimizer, scheduler, 1, {})
    other = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    with pytest.raises(ValueError, match=rf"{path}: its model state does not fit"):
        restore_checkpoint(read_checkpoint(path), other)


def test_config_differences_name_each_changed_field() -> None:
    saved = {"d_model": 64, "codebook_sizes": [64, 64, 64], "dropout": 0.0}
    current = {"d_model": 128, "codebook_sizes": [64, 64, 64], "seed": 1}
    assert config_differences(saved, current) == [
        "d_model: checkpoint 64, now 128",
        "dropout: checkpoint 0.0, now None",
        "seed: checkpoint None, now 1",
    ]
    assert config_differences(saved, dict(saved)) == []


def _version_1(path: Path, model: nn.Module, extra: dict) -> Path:
    """A file as version 1 wrote it (before the shared loop's layout)."""
    torch.save({"format": "onerec-lab/training-checkpoint", "version": 1, "step": 3,
                "model": model.state_dict(), "optimizer": None, "scheduler": None,
                "extra": extra}, path)
    return path


def as_version_1(path: Path) -> None:
    """Rewrite a checkpoint in the layout version 1 wrote (the code before the shared loop)."""
    payload = torch.load(path, weights_only=True)
    extra = payload["extra"]
    state = extra["trainer_state"]
    if extra["kind"] == "pretrain":
        payload["extra"] = {
            "model_config": extra["model_config"],
            "training_settings": extra["settings"],
            "sampler": state["sampler"],
            "rng": extra["rng"],
            "losses": [record["losses/ntp"] for record in extra["history"]],
            "totals": state["totals"],
            "logs": extra["metadata"]["logs"],
        }
    else:
        caller = {key: value for key, value in extra["metadata"].items()
                  if key not in ("method", "reward") and value is not None}
        payload["extra"] = {
            "model_config": extra["model_config"],
            "settings": extra["settings"],
            "ntp_sampler": state["sampler"],
            "reference": state["reference"],
            "history": extra["history"],
            **caller,
        }
    payload["version"] = 1
    torch.save(payload, path)


def test_version_1_layouts_read_as_the_run_record(tmp_path: Path) -> None:
    model, _, _ = _setup()
    sampler, rng = {"generator": torch.ones(3)}, {"cpu": torch.zeros(2, dtype=torch.uint8)}
    pretraining = read_checkpoint(_version_1(tmp_path / "pretrain.pt", model, {
        "model_config": '{"d_model": 64}', "training_settings": {"seed": 0, "world_size": 1},
        "sampler": sampler, "rng": rng, "losses": [2.5, 2.25, 2.0],
        "totals": {"encoder_tokens": 9, "decoder_tokens": 6, "seconds": 0.5},
        "logs": "/data/logs"}))
    assert pretraining.version == 1
    record = run_record(pretraining)
    assert record.kind == "pretrain" and record.settings == {"seed": 0, "world_size": 1}
    assert record.history == [{"losses/ntp": 2.5}, {"losses/ntp": 2.25}, {"losses/ntp": 2.0}]
    assert torch.equal(record.trainer_state["sampler"]["generator"], torch.ones(3))
    assert record.trainer_state["totals"]["encoder_tokens"] == 9 and "cpu" in record.rng
    assert training_metadata(pretraining) == {"logs": "/data/logs"}

    online = _version_1(tmp_path / "online.pt", model, {
        "model_config": '{"d_model": 64}',
        "settings": {"method": "ecpo", "reward": "pscore + format", "world_size": 1},
        "ntp_sampler": sampler, "reference": None, "history": [{"rewards/proxy": 0.5}],
        "logs": "/data/logs", "world": "abc123"})  # the caller's metadata, spread
    record = run_record(read_checkpoint(online))
    assert record.kind == "online" and record.history == [{"rewards/proxy": 0.5}]
    assert record.rng == {} and record.trainer_state["reference"] is None
    assert training_metadata(online) == {"logs": "/data/logs", "world": "abc123",
                                         "method": "ecpo", "reward": "pscore + format"}


def test_the_run_record_round_trips_and_its_absence_is_a_clear_error(tmp_path: Path) -> None:
    model, _, _ = _setup()
    record = RunRecord(kind="online", model_config="{}", settings={"seed": 1}, history=[],
                       rng={}, trainer_state={"sampler": {}}, metadata={"reward": "oracle"})
    path = save_checkpoint(tmp_path / "run.pt", model, None, None, 1, record._asdict())
    assert run_record(read_checkpoint(path)) == record
    assert training_metadata(path) == {"logs": None, "reward": "oracle"}
    generic = save_checkpoint(tmp_path / "generic.pt", model, None, None, 1, {"note": "x"})
    with pytest.raises(ValueError, match=rf"{generic} holds no training run record"):
        training_metadata(generic)
    old = _version_1(tmp_path / "old.pt", model, {"note": "x"})
    with pytest.raises(ValueError, match=rf"{old} holds no training run record"):
        run_record(read_checkpoint(old))
    future = tmp_path / "future.pt"
    torch.save({**torch.load(path, weights_only=True), "version": 3}, future)
    with pytest.raises(ValueError, match=rf"{future} has checkpoint version 3, this onerec-lab "
                                         r"reads versions \(1, 2\)"):
        read_checkpoint(future)
