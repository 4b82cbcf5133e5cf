"""Data-parallel pre-training: `torchrun` with two gloo processes on the CPU.

The test launches this very file under torchrun; each process runs `worker` (the
`__main__` block) and saves its final weights and curve, which the test then compares.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from envs.logs import LoggedSessions
from policies.onerec import OneRecPolicy
from tests.conftest import torchrun_ranks
from tests.test_pretrain import random_codec, small_policy
from trainers.checkpoint import read_checkpoint, run_record
from trainers.pretrain import CHECKPOINT_FILE, PretrainConfig, pretrain
from trainers.pretrain_data import LoggedExamples

STEPS = 5
PER_RANK_BATCH = 4
WORLD_SIZE = 2


def _job(logs_dir: Path, batch_size: int) -> tuple[OneRecPolicy, LoggedExamples, PretrainConfig]:
    """The same policy, data and settings in every process (and in the single-process run)."""
    config = PretrainConfig(max_steps=STEPS, per_device_train_batch_size=batch_size,
                            warmup_steps=1, learning_rate=3e-3, logging_steps=2)
    return small_policy(random_codec()), LoggedExamples(LoggedSessions.load(logs_dir)), config


def worker(out: Path, logs_dir: Path) -> None:
    """One torchrun process: train, then save this rank's weights and curve."""
    torch.set_num_threads(1)
    policy, data, config = _job(logs_dir, PER_RANK_BATCH)
    config.output_dir = str(out)
    result = pretrain(policy, data, config)
    torch.save({"state": policy.state_dict(), "losses": result.losses,
                "world_size": result.world_size}, out / f"rank{os.environ['RANK']}.pt")


@pytest.mark.heavy
def test_two_gloo_processes_average_their_gradients(tmp_path: Path) -> None:
    logs_dir, out, ranks = torchrun_ranks(__file__, tmp_path, WORLD_SIZE, timeout=120)
    record = run_record(read_checkpoint(out / CHECKPOINT_FILE))
    assert record.settings["world_size"] == WORLD_SIZE
    assert [step["losses/ntp"] for step in record.history] == ranks[0]["losses"]

    # The two shards together are the batch one process draws with twice the batch size.
    policy, data, config = _job(logs_dir, WORLD_SIZE * PER_RANK_BATCH)
    single = pretrain(policy, data, config)
    assert ranks[0]["losses"] == pytest.approx(single.losses, abs=1e-5)
    for key, value in policy.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][key], value, atol=1e-4, rtol=1e-3)


if __name__ == "__main__":
    worker(Path(sys.argv[1]), Path(sys.argv[2]))
