"""Shared test fixtures: the location of ../shared/data and offline settings."""

from __future__ import annotations

import os
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
