"""Shared test fixtures: the location of ../shared/data and offline settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded at test time
# One intra-op thread per test process: pytest-xdist already runs one process per core, and
# two threads per process on a loaded 2-core machine spend their time waiting on each other.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def shared_data(relative: str) -> Path:
    """Path of a file under ../shared/data, or skip the test when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is absent: the real datasets live in ../shared/data beside the repo")
    return path


@pytest.fixture(scope="module")
def logs():
    """Small logged sessions of the popular policy (`tests.test_pretrain.small_logs`)."""
    from tests.test_pretrain import small_logs

    return small_logs()


@pytest.fixture(scope="module")
def codec():
    """A random codec over those logs' catalog (`tests.test_pretrain.random_codec`)."""
    from tests.test_pretrain import random_codec

    return random_codec()


def torchrun_ranks(script: str, folder: Path, world_size: int, timeout: int) -> tuple[Path, Path,
                                                                                        list]:
    """Run `script` (a test module whose `__main__` trains one rank on small logs and saves
    `rank<r>.pt` = {"state", "world_size", ...} into its output folder) under torchrun with
    `world_size` gloo processes, check that every rank ended with the same weights and that
    rank 0 wrote the checkpoint; (the logs folder, the output folder, each rank's dict)."""
    import torch

    from tests.test_pretrain import small_logs

    logs_dir, out = folder / "logs", folder / "out"
    small_logs().save(logs_dir)
    out.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={world_size}", script, str(out), str(logs_dir)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run(command, env=environment, capture_output=True, text=True,
                               timeout=timeout, check=False)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    ranks = [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(world_size)]
    assert [rank["world_size"] for rank in ranks] == [world_size] * world_size
    # Each rank trained on its own shard, yet all end with the very same weights: the
    # gradients (and the MoE load counts) were averaged before every step.
    first = ranks[0]["state"]
    assert all(torch.equal(first[key], rank["state"][key]) for rank in ranks for key in first)
    assert (out / "checkpoint.pt").is_file() and (out / "tensorboard").is_dir()
    return logs_dir, out, ranks


def run_study(module: str, *options: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m benchmarks.<module> OPTIONS` from the repository, one torch thread; it must
    succeed (its stderr is the failure message)."""
    completed = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *options],
                               cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                               capture_output=True, text=True, timeout=timeout, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed
