"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is one file written by `torch.save` and read back with
`torch.load(weights_only=True)` (no arbitrary code runs on load). It holds a format tag and
version, the optimizer step, the model's state dict, the optimizer's and the scheduler's
state dicts, and `extra`: whatever else the trainer needs to resume. Writes are atomic
(`envs.files.atomic_write`), so a run killed while saving leaves the previous checkpoint
intact.

`read_checkpoint` takes the file or its run folder (`FOLDER/checkpoint.pt`, as transformers
takes a model folder). What it refuses is a one-line ValueError naming the file, what is
wrong and a fix that costs no data (`envs.files.unreadable`): a damaged file, another lab
artefact (a logged-sessions file, a codec, a P-score: said by name), another version, and
weights that are not finite (a run that diverged; the training loop never saves one).

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

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from envs.files import atomic_write, unreadable

CHECKPOINT_FILE = "checkpoint.pt"  # a run folder's checkpoint (commands take the folder too)
CHECKPOINT_FORMAT = "onerec-lab/training-checkpoint"
CHECKPOINT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: the layouts before the shared loop, read by run_record
# The version-1 online layout's own keys; it spread the caller's metadata over other keys.
V1_ONLINE_KEYS = ("model_config", "settings", "ntp_sampler", "reference", "history")
# Advice for a checkpoint that cannot be used: none of it costs the user a file.
OTHER_CHECKPOINT = "train into another folder (--out), or pass another checkpoint"
PASS_A_CHECKPOINT = "pass --policy RUN_FOLDER or CHECKPOINT.pt"
# Another lab artefact, by a word of its format tag (an .npz header's `kind`, a safetensors or
# torch file's `format` / `kind`): what an error calls it. Words, not the producers' constants,
# so that this table loads none of those modules and survives a tag's version suffix.
ARTEFACTS = {
    "logged-sessions": "a logged-sessions file (onerec-lab simulate)",
    "catalog": "an item catalog (onerec-lab simulate)",
    "semantic-id-codec": "a semantic-ID codec (onerec-lab tokenize)",
    "pscore": "a P-score (onerec-lab reward fit)",
    "cascade": "a cascade logging policy (a world's logging policy)",
    "npz": "a NumPy archive (.npz)",
    "safetensors": "a safetensors file",
}


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
    """Write a checkpoint to `path` atomically; returns the path. Weights that are not finite
    are a ValueError and leave the file at `path` as it was: no checkpoint of a diverged run.

    `extra` may hold tensors, numbers, strings and lists/dicts of them (what
    `torch.load(weights_only=True)` accepts). Pass the unwrapped model, not a DDP wrapper.
    """
    state = model.state_dict()
    nonfinite = first_nonfinite(state)
    if nonfinite is not None:
        raise ValueError(f"the weights are not finite ({nonfinite}): not saved to {path}, "
                         "which keeps what it held; lower the learning rate")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "step": int(step),
        "model": state,
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "extra": dict(extra),
    }
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`, or the one in a run folder; a missing,
    damaged or foreign file, or weights that are not finite, is a ValueError naming the path
    and the fix (module docstring)."""
    path = checkpoint_file(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip, pickle, refused-object and read errors: unreadable
        foreign = artefact_kind(path, None)
        if foreign is not None:
            raise ValueError(f"{path} is {foreign}, not a checkpoint; {PASS_A_CHECKPOINT}") \
                from error
        raise unreadable(path, "checkpoint", error,
                         f"it may be truncated or corrupt: {OTHER_CHECKPOINT}") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        foreign = artefact_kind(path, payload)
        if foreign is not None:
            raise ValueError(f"{path} is {foreign}, not a checkpoint; {PASS_A_CHECKPOINT}")
        raise ValueError(f"{path} is not an onerec-lab training checkpoint: {PASS_A_CHECKPOINT}")
    if payload.get("version") not in READABLE_VERSIONS:
        raise ValueError(
            f"{path} has checkpoint version {payload.get('version')!r}, this onerec-lab reads "
            f"versions {READABLE_VERSIONS}: retrain with this version"
        )
    missing = [key for key in ("step", "model", "optimizer", "scheduler", "extra")
               if key not in payload]
    if missing or not isinstance(payload["model"], Mapping):
        cause = f"it lacks the entries {missing}" if missing else "its model entry is no state dict"
        raise unreadable(path, "checkpoint", cause, OTHER_CHECKPOINT)
    nonfinite = first_nonfinite(payload["model"])
    if nonfinite is not None:
        raise ValueError(
            f"{path} holds weights that are not finite ({nonfinite}), saved by a run that "
            "diverged: pass another checkpoint, or train again into another folder (--out) "
            "with a lower --learning-rate"
        )
    return Checkpoint(path, int(payload["step"]), payload["model"], payload["optimizer"],
                      payload["scheduler"], payload["extra"], int(payload["version"]))


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint file `path` names: itself, or a run folder's `checkpoint.pt`; a folder
    without one, or a path that does not exist, is a ValueError saying what to pass."""
    path = Path(path)
    if path.is_dir():
        if (path / CHECKPOINT_FILE).is_file():
            return path / CHECKPOINT_FILE
        raise ValueError(
            f"{path} is a folder without {CHECKPOINT_FILE}; pass a run folder written by "
            "`onerec-lab pretrain`/`align`, or the checkpoint file"
        )
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist; train one first or fix the path")
    return path


def artefact_kind(path: Path, payload: object) -> str | None:
    """What another lab artefact at `path` is (`ARTEFACTS`), from `payload` (what a safe
    torch.load returned, if anything: torch reads safetensors files too) or the file's own
    header; None when neither says. Called only for a file that is not a checkpoint: its
    cost is an error's."""
    tag = None
    if isinstance(payload, dict):
        header = payload.get("header")  # a cascade keeps its kind in a JSON header
        tag = payload.get("format") or payload.get("kind") or _json_field(header, "kind")
    if tag is None:
        tag = _npz_kind(path) if zipfile.is_zipfile(path) else _safetensors_format(path)
    if isinstance(tag, str):
        words = [description for word, description in ARTEFACTS.items() if word in tag]
        return words[0] if words else f"a file of format {tag!r}"
    if isinstance(payload, dict):  # a bare state dict: a version-1 P-score by its name
        from rewards.pscore import WEIGHTS_FILE  # the rewards layer: loaded for this error only

        return ARTEFACTS["pscore"] if path.name == WEIGHTS_FILE else None
    return None


def _npz_kind(path: Path) -> str | None:
    """The `kind` in an .npz archive's JSON `__header__` ("npz" without one; None: a zip
    that is no .npz, such as torch's own, or a damaged one)."""
    try:
        with zipfile.ZipFile(path) as archive:
            if not all(name.endswith(".npy") for name in archive.namelist()):
                return None
        with np.load(path, allow_pickle=False) as arrays:
            header = str(arrays["__header__"]) if "__header__" in arrays.files else None
    except Exception:  # a damaged archive: nothing more to say than "unreadable"
        return None
    return _json_field(header, "kind") or "npz"


def _json_field(text: object, key: str) -> str | None:
    """`key` of a JSON object held as text (None: not text, not JSON, no such text field)."""
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    found = value.get(key) if isinstance(value, dict) else None
    return found if isinstance(found, str) else None


def _safetensors_format(path: Path) -> str | None:
    """The `format` a safetensors file's metadata names ("safetensors" without one; None: not
    a safetensors file)."""
    from safetensors import safe_open  # only on the error path

    try:
        with safe_open(str(path), framework="pt") as file:
            return (file.metadata() or {}).get("format") or "safetensors"
    except Exception:  # not a safetensors file (or a damaged one): nothing more to say
        return None


def first_nonfinite(state: Mapping[str, Any]) -> str | None:
    """The name of the first floating tensor of `state` that holds a NaN or an infinity, as
    "NAME (nan)"; None when all are finite (one host sync)."""
    names, finite = finite_flags(state)
    if finite is None or bool(finite.all()):
        return None
    name = names[int((~finite).nonzero()[0])]
    value = state[name]
    return f"{name} holds {'nan' if bool(value.isnan().any()) else 'inf'}"


def finite_flags(state: Mapping[str, Any]) -> tuple[list[str], Tensor | None]:
    """The floating tensors' names in `state` and a (K,) bool tensor on their device: True
    where the tensor is all finite (None: there is none). No host sync."""
    names = [name for name, value in state.items()
             if isinstance(value, Tensor) and value.is_floating_point()]
    if not names:
        return names, None
    return names, torch.stack([torch.isfinite(state[name]).all() for name in names])  # (K,)


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


def check_shapes(checkpoint: Checkpoint, expected: Mapping[str, Tensor]) -> None:
    """The checkpoint's model tensors have the names and shapes of `expected` (the state dict
    of the model its config builds, on the meta device: nothing allocated); else a ValueError
    naming the file and the first key that differs."""
    saved = checkpoint.model
    for name in [*expected, *(name for name in saved if name not in expected)]:
        if name not in saved:
            difference = f"{name} is missing"
        elif name not in expected:
            difference = f"{name} is not a tensor of that model"
        elif not isinstance(saved[name], Tensor) or saved[name].shape != expected[name].shape:
            found = tuple(saved[name].shape) if isinstance(saved[name], Tensor) else \
                type(saved[name]).__name__
            difference = f"{name} is {found}, the model's {tuple(expected[name].shape)}"
        else:
            continue
        raise ValueError(
            f"{checkpoint.path} does not hold the model its config describes ({difference}); "
            "pass a checkpoint written by `onerec-lab pretrain` or `align`"
        )


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Fields whose values differ between two JSON-ready configs, as "name: saved X, now Y"."""
    names = sorted(set(saved) | set(current))
    return [
        f"{name}: checkpoint {saved.get(name)!r}, now {current.get(name)!r}"
        for name in names
        if saved.get(name) != current.get(name)
    ]
