"""Stages cached under a fingerprint of their inputs and settings: never silently stale.

A folder built stage by stage (a world, a quickstart run) keeps a manifest (`world.json`)
with one record per stage: its settings, the fingerprints of the stages it reads, its own
fingerprint (a hash of all that and of the stage's code version), whether it completed, and
what it reported. Running a stage again:

- same fingerprint, completed, outputs present: reused, and `StageEvent` says so;
- same fingerprint, not completed (a killed build): built again over what is there, so a
  stage that can resume (pre-training) resumes;
- another fingerprint (a setting or an input changed), or no record: its outputs are
  cleared and it is rebuilt, and the event names what changed.

A stage's fingerprint covers its inputs' fingerprints, so a change reaches every stage that
depends on it, and only those.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from envs.files import atomic_write_text

MANIFEST_FORMAT = "onerec-lab/stages"
MANIFEST_VERSION = 1

Action = Literal["built", "reused", "rebuilt", "resumed"]


def fingerprint(stage: str, version: int, settings: Mapping[str, Any],
                inputs: Mapping[str, str]) -> str:
    """A short hash of what a stage's output depends on."""
    text = json.dumps({"stage": stage, "version": version, "settings": settings,
                       "inputs": dict(inputs)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def combined_fingerprint(parts: Sequence[str]) -> str:
    """One hash of several fingerprints (e.g. a world's, from its stages')."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StageRecord:
    """What the manifest remembers of one stage."""

    fingerprint: str
    settings: dict[str, Any]
    inputs: dict[str, str]  # stage read -> its fingerprint at build time
    complete: bool
    report: dict[str, Any] = field(default_factory=dict)  # what the stage returned


@dataclass(frozen=True)
class StageEvent:
    """What happened to a stage on this run, for the progress display and the report."""

    stage: str
    action: Action
    reason: str  # why it was (re)built, or "" when reused
    fingerprint: str
    seconds: float

    @property
    def outcome(self) -> str | None:
        """The end of the stage's progress line: None ("done") for a first build."""
        if self.action == "reused":
            return "reused (same settings and inputs)"
        return None if self.action == "built" else f"{self.action}: {self.reason}"

    def describe(self) -> str:
        if self.action == "reused":
            return f"{self.stage}: reused (fingerprint {self.fingerprint}, same inputs and settings)"
        return f"{self.stage}: {self.action} in {self.seconds:.1f} s ({self.reason})"


@dataclass(frozen=True)
class Stage:
    """A stage to run: its name, code version, settings, inputs, outputs and how to build."""

    name: str
    settings: Mapping[str, Any]  # JSON values: what the build depends on besides its inputs
    inputs: Mapping[str, str]  # stage name -> fingerprint of the stages it reads
    outputs: Sequence[Path]  # files or folders it writes (cleared before a rebuild)
    build: Callable[[], dict[str, Any]]  # builds the outputs; returns its report (JSON)
    version: int = 1  # bump when the stage's code changes what it writes


class Manifest:
    """The stage records of one folder, read from and written to `path` atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, StageRecord] = {}
        if path.is_file():
            self.records = _read(path)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
                   "stages": {name: asdict(record) for name, record in self.records.items()}}
        atomic_write_text(self.path, json.dumps(payload, indent=2, default=str))

    def run(self, stage: Stage) -> tuple[StageRecord, StageEvent]:
        """Reuse `stage` or (re)build it (module docstring); its record and what happened."""
        started = time.perf_counter()
        current = fingerprint(stage.name, stage.version, stage.settings, stage.inputs)
        record = self.records.get(stage.name)
        missing = [path for path in stage.outputs if not path.exists()]
        if record is not None and record.fingerprint == current and record.complete \
                and not missing:
            return record, StageEvent(stage.name, "reused", "", current, 0.0)
        action: Action
        if record is not None and record.fingerprint == current and not record.complete:
            action, reason = "resumed", "its previous build was interrupted"
        elif record is not None and record.fingerprint == current:
            action, reason = "rebuilt", "outputs missing: " + ", ".join(p.name for p in missing)
            _clear(stage.outputs)
        elif record is not None:
            action, reason = "rebuilt", changes(record, stage)
            _clear(stage.outputs)
        elif any(path.exists() for path in stage.outputs):
            action, reason = "rebuilt", "no record of how its files were built"
            _clear(stage.outputs)
        else:
            action, reason = "built", "not built before"
        settings = json.loads(json.dumps(dict(stage.settings), default=str))
        self.records[stage.name] = StageRecord(current, settings, dict(stage.inputs), False)
        self.save()  # an interrupted build is known as such
        report = stage.build()
        record = StageRecord(current, settings, dict(stage.inputs), True,
                             json.loads(json.dumps(report, default=str)))
        self.records[stage.name] = record
        self.save()
        return record, StageEvent(stage.name, action, reason, current,
                                  time.perf_counter() - started)


def changes(record: StageRecord, stage: Stage) -> str:
    """What differs between a stage's record and the stage now, in words."""
    parts = []
    settings = json.loads(json.dumps(dict(stage.settings), default=str))
    for name in sorted(set(record.settings) | set(settings)):
        if record.settings.get(name) != settings.get(name):
            parts.append(f"{name} {record.settings.get(name)!r} -> {settings.get(name)!r}")
    parts += [f"input {name!r} changed" for name in sorted(set(record.inputs) | set(stage.inputs))
              if record.inputs.get(name) != stage.inputs.get(name)]
    return ", ".join(parts) or "its code version changed"


def _clear(outputs: Sequence[Path]) -> None:
    """Remove a stale stage's outputs (files or folders) before it is rebuilt."""
    for path in outputs:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _read(path: Path) -> dict[str, StageRecord]:
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{path} is not a readable stage manifest ({error}); build into another folder, "
            "or move that file away to rebuild this one"
        ) from error
    if isinstance(payload, dict) and "format" not in payload and "stages" not in payload:
        return {}  # the marker of a study world from before manifests: no stage is known
    found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
    if found != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not an onerec-lab stage manifest (found {found!r} where "
                         f"{MANIFEST_FORMAT!r} was expected); build into another folder")
    if payload.get("version") != MANIFEST_VERSION:
        raise ValueError(
            f"{path} has manifest version {payload.get('version')!r}; this onerec-lab reads "
            f"version {MANIFEST_VERSION}: build into another folder"
        )
    try:
        return {name: StageRecord(**record) for name, record in payload["stages"].items()}
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path} has a malformed stage record ({error}); build into another "
                         "folder") from error
