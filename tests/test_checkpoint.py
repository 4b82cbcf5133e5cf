"""Generic training checkpoints: exact round trips, atomic writes, clear errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from trainers.checkpoint import (
    config_differences,
    read_checkpoint,
    restore_checkpoint,
    save_checkpoint,
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
