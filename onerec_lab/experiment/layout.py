"""Where every file of a world and of a run lives: the names are declared here, once.

A world folder (`build_world`, `onerec-lab quickstart --out DIR`):

    DIR/world.json                    the manifest: each stage's settings and fingerprint
    DIR/logs/sessions.npz             the logged sessions and their catalog (envs.logs)
    DIR/logs/codec.safetensors        the semantic IDs      (policies.codec)
    DIR/logs/pscore/                  the fitted P-score    (rewards.pscore)
    DIR/cascade.pt                    the logging policy    (policies.cascade)
    DIR/pretrained/checkpoint.pt      the pre-trained OneRec, with its TensorBoard run

A run folder (`align`, `pretrain`, ...): `checkpoint.pt`, `tensorboard/`, and the run's
report (`align.json`, `align.md`, ...). The codec sits beside the logs because `pretrain`
finds a logs folder's codec there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from envs.logs import SESSIONS_FILE
from trainers.pretrain import CHECKPOINT_FILE, TENSORBOARD_DIR

CODEC_FILE = "codec.safetensors"
MANIFEST_FILE = "world.json"
PSCORE_FOLDER = "pscore"  # beside the logs: where `reward fit` is told to write


@dataclass(frozen=True)
class RunLayout:
    """The files of one training run (pre-training or alignment) in `folder`."""

    folder: Path

    @property
    def checkpoint(self) -> Path:
        return self.folder / CHECKPOINT_FILE

    @property
    def tensorboard(self) -> Path:
        return self.folder / TENSORBOARD_DIR

    @property
    def codec(self) -> Path:
        """A codec the run built itself (pre-training without a logs folder's codec)."""
        return self.folder / CODEC_FILE

    def report(self, name: str, suffix: str) -> Path:
        """`name.suffix`, e.g. report("align", "json") -> align.json."""
        return self.folder / f"{name}.{suffix}"


@dataclass(frozen=True)
class WorldLayout:
    """The files of one world in `folder` (module docstring)."""

    folder: Path

    @property
    def manifest(self) -> Path:
        return self.folder / MANIFEST_FILE

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    @property
    def sessions(self) -> Path:
        return self.logs / SESSIONS_FILE


    @property
    def codec(self) -> Path:
        return self.logs / CODEC_FILE

    @property
    def pscore(self) -> Path:
        return self.logs / PSCORE_FOLDER

    @property
    def cascade(self) -> Path:
        return self.folder / "cascade.pt"

    @property
    def pretrained(self) -> RunLayout:
        return RunLayout(self.folder / "pretrained")

    def run(self, name: str) -> RunLayout:
        """A run trained in this world, e.g. run("ecpo") -> DIR/ecpo/."""
        return RunLayout(self.folder / name)
