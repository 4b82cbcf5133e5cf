"""A small lab on disk for the bad-input suite: two worlds (catalogs A and B of the same
size), each with logs, a codec, a P-score and a pre-trained policy (`WorldLayout`'s files);
and damaged or foreign files beside them. Built once per test module (seconds)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from envs.catalog import CatalogConfig, generate_synthetic_catalog
from envs.logging_policies import PopularPolicy
from envs.logs import SESSIONS_FILE, LoggedSessions, collect_sessions
from onerec_lab.experiment.layout import WorldLayout
from rewards import ParetoConfig, PScoreTrainConfig, fit_pscore, save_pscore
from rewards.pscore import WEIGHTS_FILE
from tests.test_pretrain import ITEMS, SESSIONS, random_codec, small_policy
from trainers.pretrain import PretrainConfig, pretrain
from trainers.pretrain_data import LoggedExamples

QUICK_FIT = PScoreTrainConfig(epochs=1, pareto=ParetoConfig(steps=2))


def build_world(folder: Path, catalog_seed: int) -> WorldLayout:
    """Logs of the popular policy over a 400-item catalog of `catalog_seed`, a random codec
    and a quick P-score beside them, and a policy pre-trained for two steps."""
    catalog = generate_synthetic_catalog(CatalogConfig(num_items=ITEMS, num_creators=40),
                                         seed=catalog_seed)
    world = WorldLayout(folder)
    collect_sessions(PopularPolicy(catalog, pool_size=200), catalog, num_users=40,
                     max_requests=4, seed=0, config=SESSIONS).save(world.logs)
    logs = LoggedSessions.load(world.logs)
    codec = random_codec(seed=catalog_seed)
    codec.catalog_fingerprint = logs.catalog_fingerprint
    codec.save(world.codec)
    fit = fit_pscore(logs, logs.catalog, QUICK_FIT)
    save_pscore(fit.model, world.pscore, fit.report, logs.catalog_fingerprint)
    pretrain(small_policy(codec), LoggedExamples(logs),
             PretrainConfig(max_steps=2, per_device_train_batch_size=4, warmup_steps=1,
                            output_dir=str(world.pretrained.folder), progress=False))
    return world


def build_damaged(folder: Path, world: WorldLayout) -> Path:
    """Damaged and foreign files in `folder` (the names the suite's cases use)."""
    checkpoint = world.pretrained.checkpoint.read_bytes()
    sessions = (world.logs / SESSIONS_FILE).read_bytes()
    pscore = (world.pscore / WEIGHTS_FILE).read_bytes()
    raw: dict[str, bytes] = {
        "truncated.pt": checkpoint[: len(checkpoint) // 3],
        "garbage.pt": bytes(range(256)) * 8,
        "empty.pt": b"",
        "notes.txt": b"not a checkpoint\n",
        "malformed.txt": b"1 2 3 4\n2 five 6 7\n",
        "broken_plugin.py": b"def register(:\n",
        f"truncated_logs/{SESSIONS_FILE}": sessions[: len(sessions) // 2],
        f"foreign_logs/{SESSIONS_FILE}": b"PK not really a zip",
        f"truncated_pscore/{WEIGHTS_FILE}": pscore[: len(pscore) // 2],
    }
    for name, payload in raw.items():
        _write(folder / name, lambda path, payload=payload: path.write_bytes(payload))
    (folder / "empty_folder").mkdir()
    saved = {
        "pickle.pt": {"payload": Exploit()},
        f"pickle_pscore/{WEIGHTS_FILE}": {"payload": Exploit()},
        "nan.pt": _edited(world.pretrained.checkpoint, _nan_weights),
        "huge.pt": _edited(world.pretrained.checkpoint, _huge_config),
        f"unknown_key_pscore/{WEIGHTS_FILE}": _edited(world.pscore / WEIGHTS_FILE, _unknown_key),
    }
    for name, payload in saved.items():
        _write(folder / name, lambda path, payload=payload: torch.save(payload, path))
    return folder


def _write(path: Path, write: Callable[[Path], Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path)


def _edited(path: Path, edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    payload = torch.load(path, weights_only=True)
    edit(payload)
    return payload


def _nan_weights(payload: dict[str, Any]) -> None:
    model = payload["model"]
    first = next(key for key, value in model.items() if value.is_floating_point())
    model[first] = torch.full_like(model[first], float("nan"))


def _huge_config(payload: dict[str, Any]) -> None:
    config = json.loads(payload["extra"]["model_config"])
    payload["extra"]["model_config"] = json.dumps({**config, "d_model": 1_000_000,
                                                   "num_items": 10**9})


def _unknown_key(payload: dict[str, Any]) -> None:
    payload["config"] = payload["config"].replace("{", '{"surprise": 1, ', 1)


class Exploit:
    """An object a safe load must refuse to build."""

    def __reduce__(self):
        return (print, ("this must never run",))


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` -> the sha256 of its bytes."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}
