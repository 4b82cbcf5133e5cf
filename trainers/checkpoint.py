"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is one file written by `torch.save` and read back with
`torch.load(weights_only=True)` (no arbitrary code runs on load). It holds a format tag and
version, the optimizer step, the model's state dict, the optimizer's and the scheduler's
state dicts, and `extra`: whatever else the trainer needs to resume. Writes are atomic: the
file is written next to its destination, flushed to disk and renamed over it, so a run killed
while saving leaves the previous checkpoint intact.

The training loop (`trainers.loop`) stores one layout in `extra`, the same for pre-training
and the online methods (version 2, `RunRecord`):

| key | holds |
|---|---|
| `kind` | `"pretrain"` or `"online"`: which loop wrote it; a resume must match |
| `model_config` | the model's config as JSON text (`load_policy` rebuilds the model from it) |
| `settings` | what a resumed run must share with it (`config_differences` names the rest) |
| `history` | every step's metrics from step 1, `{name: value}` |
| `rng` | the global random generators (dropout) |
| `trainer_state` | the trainer's own: next-token sampler, token totals, frozen reference |
| `metadata` | what the run was trained on, never compared: `logs`, online `method` / `reward` |

`run_record` reads it, mapping the two version-1 layouts (pre-training's and the online
loop's, whose keys had drifted apart) onto it, so old checkpoints load and resume exactly;
`training_metadata` is what a command reads (e.g. the logs folder a policy was trained on).
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
CHECKPOINT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: the layouts before the shared loop, read by run_record
# The version-1 online layout's own keys; it spread the caller's metadata over other keys.
V1_ONLINE_KEYS = ("model_config", "settings", "ntp_sampler", "reference", "history")


class Checkpoint(NamedTuple):
    """A checkpoint read from disk (tensors on the CPU)."""

    path: Path  # where it was read from, for error messages
    step: int  # optimizer steps taken when it was saved
    model: dict[str, Any]  # the model's state dict
    optimizer: dict[str, Any] | None  # the optimizer's state dict (None: not saved)
    scheduler: dict[str, Any] | None  # the learning-rate scheduler's state dict (None: not saved)
    extra: dict[str, Any]  # trainer-specific state: generator states, config JSON, curves
    version: int = CHECKPOINT_VERSION  # the layout version it was written with


class RunRecord(NamedTuple):
    """What the training loop stores next to the weights (`extra`, module docstring)."""

    kind: str  # "pretrain" or "online": which loop wrote it
    model_config: str  # the model's config as JSON text
    settings: dict[str, Any]  # what a resumed run must share (JSON values)
    history: list[dict[str, float]]  # every step's metrics from step 1
    rng: dict[str, Any]  # the global generators' states ({} where none were saved)
    trainer_state: dict[str, Any]  # the trainer's own state (samplers, totals, reference)
    metadata: dict[str, Any]  # what the run was trained on: "logs", online "method" / "reward"


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
    if payload.get("version") not in READABLE_VERSIONS:
        raise ValueError(
            f"{path} has checkpoint version {payload.get('version')!r}, this onerec-lab reads "
            f"versions {READABLE_VERSIONS}: retrain with this version"
        )
    missing = [key for key in ("step", "model", "optimizer", "scheduler", "extra")
               if key not in payload]
    if missing:
        raise ValueError(f"{path} lacks the entries {missing}: {fix}")
    return Checkpoint(path, int(payload["step"]), payload["model"], payload["optimizer"],
                      payload["scheduler"], payload["extra"], int(payload["version"]))


def run_record(checkpoint: Checkpoint) -> RunRecord:
    """The training loop's record in `checkpoint` (a version-1 layout mapped onto version 2);
    a checkpoint without one is a ValueError naming its path."""
    extra = checkpoint.extra
    if checkpoint.version >= 2 and set(RunRecord._fields) <= set(extra):
        return RunRecord(**{name: extra[name] for name in RunRecord._fields})
    if checkpoint.version == 1 and "training_settings" in extra:  # pre-training
        return RunRecord(
            kind="pretrain", model_config=extra["model_config"],
            settings=extra["training_settings"],
            history=[{"losses/ntp": loss} for loss in extra["losses"]], rng=extra["rng"],
            trainer_state={"sampler": extra["sampler"], "totals": extra["totals"]},
            metadata={"logs": extra.get("logs")})
    if checkpoint.version == 1 and {"settings", "history"} <= set(extra):  # an online method
        settings = extra["settings"]
        metadata = {key: value for key, value in extra.items() if key not in V1_ONLINE_KEYS}
        return RunRecord(
            kind="online", model_config=extra["model_config"], settings=settings,
            history=extra["history"], rng={},
            trainer_state={"sampler": extra["ntp_sampler"], "reference": extra["reference"]},
            metadata={"logs": None, **metadata, "method": settings["method"],
                      "reward": settings["reward"]})
    raise ValueError(
        f"{checkpoint.path} holds no training run record (model config, settings, history); "
        "it was not written by an onerec-lab trainer: pass a checkpoint of `onerec-lab "
        "pretrain` or `align`"
    )


def training_metadata(checkpoint: str | Path | Checkpoint) -> dict[str, Any]:
    """What a training checkpoint records of its run, in either version: "logs" (the logged
    sessions' folder it was trained on, None when unknown) and, for an online run, "method",
    "reward" and whatever the caller passed as metadata."""
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = read_checkpoint(checkpoint)
    return {"logs": None, **run_record(checkpoint).metadata}


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
