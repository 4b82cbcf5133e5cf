"""Artefact sets on disk (issue #16): logs + catalog and a P-score's config + weights are each
ONE file, so a writer killed at any step leaves the old set or the new one, never a mix; a
failed write leaves no temporary file; files of older versions still load; damaged P-score
files are one-line errors; the catalog's fingerprint is recorded by every artefact."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.catalog import Catalog, CatalogConfig, generate_synthetic_catalog
from envs.logging_policies import RandomPolicy
from envs.logs import CATALOG_FILE, SESSIONS_FILE, LoggedSessions, collect_sessions
from envs.simulator import SessionConfig
from envs.users import PopulationConfig
from policies.codec import SemanticIdCodec
from rewards.pscore import PScoreConfig, PScoreModel, load_pscore, save_pscore

REPOSITORY = Path(__file__).resolve().parents[1]
TINY = CatalogConfig(num_items=200, num_creators=20)
SESSIONS = SessionConfig(population=PopulationConfig(warm_history=400))
LEGACY_CATALOG_HEADER = {"schema_version": 1, "kind": "catalog"}


def _logs(catalog_seed: int) -> LoggedSessions:
    catalog = generate_synthetic_catalog(TINY, seed=catalog_seed)
    return collect_sessions(RandomPolicy(catalog), catalog, num_users=3, max_requests=2,
                            seed=10 * catalog_seed, config=SESSIONS)


def _pscore(logs: LoggedSessions, seed: int) -> PScoreModel:
    torch.manual_seed(seed)
    config = PScoreConfig.from_catalog(logs.catalog, embed_dim=4, hidden_dim=8, tower_dim=4)
    return PScoreModel(config, logs.catalog)


@pytest.fixture(scope="module")
def old() -> tuple[LoggedSessions, PScoreModel]:
    logs = _logs(0)
    return logs, _pscore(logs, 0)


@pytest.fixture(scope="module")
def new() -> tuple[LoggedSessions, PScoreModel]:
    logs = _logs(1)
    return logs, _pscore(logs, 1)


def _write_set(folder: Path, logs: LoggedSessions, model: PScoreModel) -> None:
    """A world's logs folder as this version writes it: logs/ and logs/pscore/."""
    logs.save(folder / "logs")
    save_pscore(model, folder / "logs" / "pscore", catalog_fingerprint=logs.catalog_fingerprint)


def _write_legacy_logs(folder: Path, logs: LoggedSessions) -> None:
    """Logs as schema version 1 wrote them: catalog.npz beside sessions.npz."""
    folder.mkdir(parents=True, exist_ok=True)
    catalog = logs.catalog
    np.savez(folder / CATALOG_FILE, __header__=np.array(json.dumps(LEGACY_CATALOG_HEADER)),
             **{field.name: getattr(catalog, field.name) for field in fields(catalog)})
    header = {name: value for name, value in logs.header.items()
              if name not in ("catalog", "catalog_fingerprint")}
    np.savez_compressed(folder / SESSIONS_FILE,
                        __header__=np.array(json.dumps({**header, "schema_version": 1})),
                        **logs.columns)


def _write_legacy_pscore(folder: Path, model: PScoreModel) -> None:
    """A P-score as format version 1 wrote it: pscore.json (config) + pscore.pt (state)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "pscore.pt")
    (folder / "pscore.json").write_text(json.dumps({
        "kind": "pscore", "config": asdict(model.config),
        "fusion_weights": model.fusion_weights.tolist(), "report": {},
    }))


def _write_legacy_set(folder: Path, logs: LoggedSessions, model: PScoreModel) -> None:
    _write_legacy_logs(folder / "logs", logs)
    _write_legacy_pscore(folder / "logs" / "pscore", model)


def _same_weights(model: PScoreModel, other: PScoreModel) -> bool:
    state = other.state_dict()
    return all(torch.equal(value, state[name]) for name, value in model.state_dict().items())


def _which_set(folder: Path, sets: dict[str, tuple[LoggedSessions, PScoreModel, str | None]],
               ) -> tuple[str, str]:
    """Which set ("old" or "new") the logs and the P-score in `folder` load as; an
    AssertionError if either is a mix (a catalog of one set with sessions of the other)."""
    logs = LoggedSessions.load(folder / "logs")
    model = load_pscore(folder / "logs" / "pscore")
    logs_set = pscore_set = None
    for name, (expected_logs, expected_model, pscore_fingerprint) in sets.items():
        if logs.catalog_fingerprint == expected_logs.catalog_fingerprint:
            assert np.array_equal(logs.columns["session_seed"],
                                  expected_logs.columns["session_seed"]), "sessions of a mix"
            assert np.array_equal(logs.slates, expected_logs.slates), "sessions of a mix"
            assert logs.catalog.fingerprint() == logs.catalog_fingerprint
            logs_set = name
        if _same_weights(model, expected_model):
            assert model.catalog_fingerprint == pscore_fingerprint, "a P-score of a mix"
            assert model.config == expected_model.config
            pscore_set = name
    assert logs_set is not None and pscore_set is not None, (logs_set, pscore_set)
    return logs_set, pscore_set


# The subprocess: loads the new set once, then for kill_at = 1, 2, ... copies the old set to
# ROOT/kill_at and forks a child that saves the new set there, SIGKILLed just before its
# kill_at-th file-system step (write flush, permission, rename, unlink); the first child that
# finishes ends the loop. Prints which children were killed, as JSON.
KILL_RUNNER = r"""
import json, os, shutil, signal, sys
from pathlib import Path
from envs.logs import LoggedSessions
from rewards.pscore import load_pscore, save_pscore

staging, template, root = map(Path, sys.argv[1:4])
logs = LoggedSessions.load(staging / "logs")
model = load_pscore(staging / "logs" / "pscore")


def arm(kill_at):
    count = 0
    for name in ("fsync", "chmod", "replace", "rename", "unlink", "remove"):
        def step(*args, _real=getattr(os, name), **kwargs):
            nonlocal count
            count += 1
            if count == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return _real(*args, **kwargs)
        setattr(os, name, step)


killed = []
for kill_at in range(1, 200):
    folder = root / str(kill_at)
    shutil.copytree(template, folder)
    sys.stdout.flush()
    child = os.fork()
    if child == 0:
        arm(kill_at)
        logs.save(folder / "logs")
        save_pscore(model, folder / "logs" / "pscore",
                    catalog_fingerprint=logs.catalog_fingerprint)
        os._exit(0)
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        killed.append(True)
        continue
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"the save at kill_at={kill_at} failed with status {status}")
    killed.append(False)
    break
print(json.dumps(killed))
"""


@pytest.mark.parametrize("old_layout", ["current", "legacy"])
def test_a_killed_save_leaves_the_old_set_or_the_new_never_a_mix(
    old_layout: str, old, new, tmp_path: Path
) -> None:
    old_logs, old_model = old
    new_logs, new_model = new
    template, staging, root = tmp_path / "old", tmp_path / "staging", tmp_path / "kills"
    root.mkdir()
    (_write_set if old_layout == "current" else _write_legacy_set)(template, *old)
    _write_set(staging, *new)
    result = subprocess.run([sys.executable, "-c", KILL_RUNNER, str(staging), str(template),
                             str(root)], cwd=REPOSITORY, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    killed = json.loads(result.stdout.strip().splitlines()[-1])
    assert killed[-1] is False and all(killed[:-1]) and len(killed) >= 8  # every step tried
    sets = {
        "old": (old_logs, old_model,
                old_logs.catalog_fingerprint if old_layout == "current" else None),
        "new": (new_logs, new_model, new_logs.catalog_fingerprint),
    }
    seen, temporaries_left = [], 0
    for kill_at in range(1, len(killed) + 1):
        folder = root / str(kill_at)
        seen.append(_which_set(folder, sets))
        temporaries_left += len(list(folder.rglob("*.tmp")))
        _write_set(folder, new_logs, new_model)  # the NEXT save sweeps the killed one's files
        assert list(folder.rglob("*.tmp")) == [], kill_at
        assert not (folder / "logs" / CATALOG_FILE).exists()
        assert not (folder / "logs" / "pscore" / "pscore.json").exists()
        assert _which_set(folder, sets) == ("new", "new")
    # logs are saved first: the folder moves old/old -> new/old -> new/new, in that order
    assert seen[0] == ("old", "old") and seen[-1] == ("new", "new")
    assert set(seen) <= {("old", "old"), ("new", "old"), ("new", "new")} and ("new", "old") in seen
    assert seen == sorted(seen, key=lambda pair: pair.count("new"))
    assert temporaries_left > 0  # some kills did leave a temporary file for the sweep


def _saver(kind: str, old, new):
    """(path of the file, write the old version, write the new version) of one artefact."""
    (old_logs, old_model), (new_logs, new_model) = old, new
    if kind == "logs":
        return (SESSIONS_FILE, lambda folder: old_logs.save(folder),
                lambda folder: new_logs.save(folder))
    if kind == "pscore":
        return ("pscore.pt", lambda folder: save_pscore(old_model, folder),
                lambda folder: save_pscore(new_model, folder))
    if kind == "catalog":
        return ("catalog.npz", lambda folder: old_logs.catalog.save(folder / "catalog.npz"),
                lambda folder: new_logs.catalog.save(folder / "catalog.npz"))
    codes = torch.tensor([[0, 1], [1, 0], [1, 1]])
    return ("codec.safetensors",
            lambda folder: SemanticIdCodec(codes, (2, 2)).save(folder / "codec.safetensors"),
            lambda folder: SemanticIdCodec(codes.flip(0), (2, 2), catalog_fingerprint="f")
            .save(folder / "codec.safetensors"))


@pytest.mark.parametrize("kind", ["logs", "pscore", "catalog", "codec"])
def test_a_full_disk_leaves_the_old_file_and_no_temporary(
    kind: str, old, new, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, write_old, write_new = _saver(kind, old, new)
    write_old(tmp_path)
    before = (tmp_path / name).read_bytes()

    def full_disk(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_new(tmp_path)
    assert (tmp_path / name).read_bytes() == before
    assert list(tmp_path.glob("*.tmp")) == []


@pytest.mark.parametrize(("kind", "module", "function"), [
    ("logs", np, "savez_compressed"), ("catalog", np, "savez"), ("pscore", torch, "save"),
])
def test_a_writer_interrupted_mid_write_leaves_the_old_file_and_no_temporary(
    kind: str, module, function: str, old, new, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name, write_old, write_new = _saver(kind, old, new)
    write_old(tmp_path)
    before = (tmp_path / name).read_bytes()

    def half_then_interrupt(*args, **kwargs) -> None:
        handle = next(arg for arg in args if hasattr(arg, "write"))  # np: first, torch: second
        handle.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(module, function, half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_new(tmp_path)
    assert (tmp_path / name).read_bytes() == before
    assert list(tmp_path.glob("*.tmp")) == []


def test_files_of_older_versions_still_load(old, tmp_path: Path) -> None:
    logs, model = old
    _write_legacy_set(tmp_path, logs, model)
    loaded = LoggedSessions.load(tmp_path / "logs")
    assert loaded.header["schema_version"] == 1
    assert loaded.catalog_fingerprint == logs.catalog.fingerprint()
    assert np.array_equal(loaded.slates, logs.slates)
    assert np.array_equal(loaded.catalog.content, logs.catalog.content)
    for path in (tmp_path / "logs" / "pscore", tmp_path / "logs" / "pscore" / "pscore.pt"):
        pscore = load_pscore(path)
        assert pscore.config == model.config and _same_weights(pscore, model)
        assert pscore.catalog_fingerprint is None
    (tmp_path / "logs" / CATALOG_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=f"{CATALOG_FILE} not found.*schema version 1"):
        _ = LoggedSessions.load(tmp_path / "logs").catalog


def test_saving_over_older_files_replaces_the_whole_set(old, new, tmp_path: Path) -> None:
    _write_legacy_set(tmp_path, *old)
    _write_set(tmp_path, *new)
    assert sorted(path.name for path in (tmp_path / "logs").iterdir()) == ["pscore",
                                                                           SESSIONS_FILE]
    assert sorted(path.name for path in (tmp_path / "logs" / "pscore").iterdir()) == [
        "pscore.pt"]
    loaded = LoggedSessions.load(tmp_path / "logs")
    assert loaded.header["schema_version"] == 2
    assert loaded.catalog_fingerprint == new[0].catalog_fingerprint


class NotAWeight:
    """An object torch's safe loader refuses to build."""


def _damage(kind: str, folder: Path, model: PScoreModel) -> Path:
    """Write a damaged P-score of `kind` into `folder`; returns the file the error names."""
    save_pscore(model, folder)
    weights = folder / "pscore.pt"
    payload = torch.load(weights, weights_only=True)
    config = json.loads(payload["config"])
    if kind == "truncated":
        weights.write_bytes(weights.read_bytes()[:200])
    elif kind == "unknown key":
        torch.save({**payload, "config": json.dumps({**config, "towers": 3})}, weights)
    elif kind == "pickled object":
        torch.save({**payload, "state": NotAWeight()}, weights)
    elif kind == "config bigger than the weights":
        torch.save({**payload, "config": json.dumps({**config, "embed_dim": 64})}, weights)
    elif kind == "config of a huge model":  # 1e12 items: refused before any allocation
        torch.save({**payload, "config": json.dumps({**config, "num_items": 10**12})}, weights)
    elif kind == "legacy config bigger than the weights":
        _write_legacy_pscore(folder, model)
        header = json.loads((folder / "pscore.json").read_text())
        header["config"]["hidden_dim"] = 4096
        (folder / "pscore.json").write_text(json.dumps(header))
    return weights


@pytest.mark.parametrize("kind", [
    "truncated", "unknown key", "pickled object", "config bigger than the weights",
    "config of a huge model", "legacy config bigger than the weights",
])
def test_a_damaged_pscore_is_a_one_line_error_naming_the_file(
    kind: str, old, tmp_path: Path
) -> None:
    file = _damage(kind, tmp_path, old[1])
    with pytest.raises(ValueError) as caught:
        load_pscore(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{file} is not a readable P-score file")
    assert "\n" not in message and "reward fit" in message
    assert "weights_only" not in message and "delete" not in message.lower()


def test_an_embedded_catalog_that_differs_from_its_fingerprint_is_refused(
    old, tmp_path: Path
) -> None:
    path = old[0].save(tmp_path)
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["catalog__quality"] = arrays["catalog__quality"] * 0.5
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=f"{SESSIONS_FILE} is not a readable logged-sessions "
                                         "file.*fingerprint"):
        LoggedSessions.load(tmp_path)


def test_the_catalog_fingerprint_is_its_identity(tmp_path: Path) -> None:
    first, again = generate_synthetic_catalog(TINY, seed=0), generate_synthetic_catalog(TINY, 0)
    other = generate_synthetic_catalog(TINY, seed=1)
    assert first.fingerprint() == again.fingerprint() != other.fingerprint()
    assert len(first.fingerprint()) == 16
    nudged = replace(first, quality=first.quality + np.float32(1e-3))
    assert nudged.fingerprint() != first.fingerprint()
    first.save(tmp_path / "catalog.npz")
    assert Catalog.load(tmp_path / "catalog.npz").fingerprint() == first.fingerprint()


def test_logs_pscore_and_codec_record_the_catalog_fingerprint(old, tmp_path: Path) -> None:
    logs, model = old
    fingerprint = logs.catalog.fingerprint()
    assert logs.catalog_fingerprint == fingerprint
    logs.save(tmp_path / "logs")
    loaded = LoggedSessions.load(tmp_path / "logs")
    assert loaded.header["catalog_fingerprint"] == loaded.catalog_fingerprint == fingerprint
    assert sorted(path.name for path in (tmp_path / "logs").iterdir()) == [SESSIONS_FILE]

    save_pscore(model, tmp_path / "pscore", {"auc": 0.5}, catalog_fingerprint=fingerprint)
    assert load_pscore(tmp_path / "pscore").catalog_fingerprint == fingerprint
    save_pscore(load_pscore(tmp_path / "pscore"), tmp_path / "copy")  # the model carries it
    assert load_pscore(tmp_path / "copy").catalog_fingerprint == fingerprint
    save_pscore(model, tmp_path / "unknown")
    assert load_pscore(tmp_path / "unknown").catalog_fingerprint is None

    codes = torch.tensor([[0, 1], [1, 0], [1, 1]])
    SemanticIdCodec(codes, (2, 2), catalog_fingerprint=fingerprint).save(tmp_path / "a.st")
    assert SemanticIdCodec.load(tmp_path / "a.st").catalog_fingerprint == fingerprint
    SemanticIdCodec(codes, (2, 2)).save(tmp_path / "b.st")  # a file without it: None
    assert SemanticIdCodec.load(tmp_path / "b.st").catalog_fingerprint is None
