"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is one file written by `torch.save` and read back with
`torch.load(weights_only=True)` (no arbitrary code runs on load). It holds a format tag and
version, the optimizer step, the model's state dict, the optimizer's and the scheduler's
state dicts, and `extra`: whatever else the trainer needs to resume (random-generator states,
the model config as JSON, the loss curve so far, paths). Writes are atomic: the file is
written next to its destination, flushed to disk and renamed over it, so a run killed while
saving leaves the previous checkpoint intact.

The module knows nothing of OneRec: pre-training stores its config in `extra`, RL trainers
can store theirs, and `config_differences` tells a caller what changed between two configs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

CHECKPOINT_FORMAT = "onerec-lab/training-checkpoint"
CHECKPOINT_VERSION = 1


class Checkpoint(NamedTuple):
    """A checkpoint read from disk (tensors on the CPU)."""

    path: Path  # where it was read from, for error messages
    step: int  # optimizer steps taken when it was saved
    model: dict[str, Any]  # the model's state dict
    optimizer: dict[str, Any] | None  # the optimizer's state dict (None: not saved)
    scheduler: dict[str, Any] | None  # the learning-rate scheduler's state dict (None: not saved)
    extra: dict[str, Any]  # trainer-specific state: generator states, config JSON, curves


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: Optimizer | None,
    scheduler: LRScheduler | None,
    step: int,
    extra: Mapping[str, Any],
) -> Path:
    """Write a checkpoint to `path` atomically; returns the path.

    `extra` may hold tensors, numbers, strings and lists/dicts of them (what
    `torch.load(weights_only=True)` accepts). Pass the unwrapped model, not a DDP wrapper.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "step": int(step),
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "extra": dict(extra),
    }
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        torch.save(payload, tmp)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)
    return path


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`; a missing, damaged or foreign file is a
    ValueError naming the path and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist; train one first or fix the path")
    fix = "delete it (and resume from an earlier copy, or retrain into an empty folder)"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip, pickle and read errors all mean "unreadable"
        raise ValueError(
            f"{path} is not a readable checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); it may be truncated or "
            f"corrupt: {fix}"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an onerec-lab training checkpoint: {fix}")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path} has checkpoint version {payload.get('version')!r}, this onerec-lab reads "
            f"version {CHECKPOINT_VERSION}: retrain with this version"
        )
    missing = [key for key in ("step", "model", "optimizer", "scheduler", "extra")
               if key not in payload]
    if missing:
        raise ValueError(f"{path} lacks the entries {missing}: {fix}")
    return Checkpoint(path, int(payload["step"]), payload["model"], payload["optimizer"],
                      payload["scheduler"], payload["extra"])


def restore_checkpoint(
    checkpoint: Checkpoint,
    model: nn.Module,
    optimizer: Optimizer | None = None,
    scheduler: LRScheduler | None = None,
) -> None:
    """Load the model (and the optimizer and scheduler, when given) from `checkpoint`.

    A state that does not fit (another model shape, another optimizer) is a ValueError
    naming the checkpoint's path.
    """
    parts: list[tuple[str, Any, Any]] = [("model", model, checkpoint.model)]
    if optimizer is not None:
        parts.append(("optimizer", optimizer, checkpoint.optimizer))
    if scheduler is not None:
        parts.append(("scheduler", scheduler, checkpoint.scheduler))
    for name, target, state in parts:
        if state is None:
            raise ValueError(
                f"{checkpoint.path} holds no {name} state; it cannot resume training, only "
                "initialise a model"
            )
        try:
            target.load_state_dict(state)
        except (ValueError, RuntimeError, KeyError) as error:
            raise ValueError(
                f"{checkpoint.path}: its {name} state does not fit ({error}); resume with the "
                "settings it was saved with, or train into another folder"
            ) from error


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Fields whose values differ between two JSON-ready configs, as "name: saved X, now Y"."""
    names = sorted(set(saved) | set(current))
    return [
        f"{name}: checkpoint {saved.get(name)!r}, now {current.get(name)!r}"
        for name in names
        if saved.get(name) != current.get(name)
    ]
