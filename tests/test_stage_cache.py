"""Stages cached under fingerprints: reused when nothing changed, rebuilt (and why) otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onerec_lab.experiment.cache import Manifest, Stage, fingerprint


class Builds:
    """A stage builder that writes its output file and counts its calls."""

    def __init__(self, output: Path) -> None:
        self.output, self.calls = output, 0

    def __call__(self) -> dict[str, int]:
        self.calls += 1
        self.output.write_text(f"build {self.calls}")
        return {"calls": self.calls}


def stage(name: str, output: Path, build: Builds, inputs: dict[str, str] | None = None,
          **settings: object) -> Stage:
    return Stage(name, settings, inputs or {}, [output], build)


def test_same_settings_reuse_and_a_change_rebuilds_with_the_reason(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path / "world.json")
    build = Builds(tmp_path / "a.txt")
    record, event = manifest.run(stage("a", build.output, build, size=3))
    assert event.action == "built" and record.complete and record.report == {"calls": 1}

    again = Manifest(tmp_path / "world.json")  # a new process reads the manifest back
    record, event = again.run(stage("a", build.output, build, size=3))
    assert event.action == "reused" and build.calls == 1 and record.report == {"calls": 1}

    record, event = again.run(stage("a", build.output, build, size=4))
    assert event.action == "rebuilt" and build.calls == 2
    assert event.reason == "size 3 -> 4" and "size 3 -> 4" in event.describe()


def test_a_changed_input_reaches_the_stages_that_read_it_only(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path / "world.json")
    first, second, third = (Builds(tmp_path / f"{name}.txt") for name in "abc")

    def run_all(size: int) -> list[str]:
        a, _ = manifest.run(stage("a", first.output, first, size=size))
        b, _ = manifest.run(stage("b", second.output, second, seed=0))
        _, event = manifest.run(stage("c", third.output, third, {"a": a.fingerprint,
                                                                  "b": b.fingerprint}))
        return [first.calls, second.calls, third.calls, event.action]

    assert run_all(1) == [1, 1, 1, "built"]
    assert run_all(1) == [1, 1, 1, "reused"]
    assert run_all(2) == [2, 1, 2, "rebuilt"]  # b does not read a: kept
    assert manifest.records["c"].inputs["a"] == manifest.records["a"].fingerprint


def test_missing_outputs_and_interrupted_builds_are_built_again(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path / "world.json")
    build = Builds(tmp_path / "a.txt")
    manifest.run(stage("a", build.output, build))
    build.output.unlink()
    _, event = manifest.run(stage("a", build.output, build))
    assert event.action == "rebuilt" and "a.txt" in event.reason and build.output.is_file()

    def killed() -> dict[str, int]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        manifest.run(stage("b", tmp_path / "b.txt", killed))
    assert not Manifest(tmp_path / "world.json").records["b"].complete
    resumed = Builds(tmp_path / "b.txt")
    _, event = Manifest(tmp_path / "world.json").run(stage("b", resumed.output, resumed))
    assert event.action == "resumed" and resumed.calls == 1


def test_stale_outputs_are_cleared_before_a_rebuild(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "checkpoint.pt").write_text("from an older world")
    manifest = Manifest(tmp_path / "world.json")
    seen = []

    def build() -> dict[str, int]:
        seen.append(sorted(path.name for path in folder.glob("*")) if folder.exists() else [])
        folder.mkdir(exist_ok=True)
        return {}

    _, event = manifest.run(Stage("run", {}, {}, [folder], build))
    assert event.reason == "no record of how its files were built" and seen == [[]]


def test_a_foreign_or_damaged_manifest_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "world.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable stage manifest"):
        Manifest(path)
    path.write_text(json.dumps({"format": "something/else", "stages": {}}))
    with pytest.raises(ValueError, match="not an onerec-lab stage manifest"):
        Manifest(path)
    path.write_text(json.dumps({"items": 400, "seed": 0}))  # a study world's old marker
    assert Manifest(path).records == {}


def test_fingerprints_depend_on_settings_inputs_and_version_only() -> None:
    base = fingerprint("a", 1, {"x": 1, "y": 2}, {"b": "f"})
    assert base == fingerprint("a", 1, {"y": 2, "x": 1}, {"b": "f"})  # order does not matter
    assert len({base, fingerprint("a", 2, {"x": 1, "y": 2}, {"b": "f"}),
                fingerprint("a", 1, {"x": 1, "y": 3}, {"b": "f"}),
                fingerprint("a", 1, {"x": 1, "y": 2}, {"b": "g"})}) == 4
