"""Data-parallel RL: `torchrun` with two gloo processes on the CPU.

The test launches this very file under torchrun; each process runs `worker` (the `__main__`
block): ECPO on its own shard of users, gradients all-reduced. Both ranks must end with the
same weights, equal to one process training on both shards at once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from envs.logs import LoggedSessions
from tests.conftest import torchrun_ranks
from tests.test_pretrain import SESSIONS, random_codec, small_policy
from trainers.checkpoint import read_checkpoint, run_record
from trainers.grpo import GRPOConfig, GRPOTrainer
from trainers.pretrain import CHECKPOINT_FILE
from trainers.pretrain_data import LoggedExamples

WORLD_SIZE = 2
USERS = 2  # per rank and step
EXAMPLES = 4  # next-token examples per rank and step
REWARD = "oracle + format"  # the truth needs the simulator: each rank simulates its own users


def _trainer(logs_dir: Path, world_size: int, output_dir: str | None = None) -> GRPOTrainer:
    """The same policy and settings per process; users and next-token examples per process
    are the global batch divided by `world_size`."""
    logs = LoggedSessions.load(logs_dir)
    config = GRPOConfig(max_steps=2, users_per_step=USERS * WORLD_SIZE // world_size,
                        ntp_batch_size=EXAMPLES * WORLD_SIZE // world_size, num_generations=4,
                        learning_rate=3e-3, ntp_weight=0.5, num_iterations=2,
                        output_dir=output_dir, progress=False)
    return GRPOTrainer(small_policy(random_codec()), REWARD, {"catalog": logs.catalog},
                       logs.catalog, SESSIONS, config, LoggedExamples(logs))


def worker(out: Path, logs_dir: Path) -> None:
    """One torchrun process: train, then save this rank's weights and curve."""
    torch.set_num_threads(1)
    trainer = _trainer(logs_dir, WORLD_SIZE, str(out))
    result = trainer.train()
    torch.save({"state": trainer.policy.state_dict(), "world_size": result.world_size,
                "history": result.history}, out / f"rank{os.environ['RANK']}.pt")


@pytest.mark.heavy
def test_two_gloo_processes_average_their_gradients(tmp_path: Path) -> None:
    logs_dir, out, ranks = torchrun_ranks(__file__, tmp_path, WORLD_SIZE, timeout=300)
    assert ranks[0]["history"] == ranks[1]["history"]  # metrics are reduced over ranks
    record = run_record(read_checkpoint(out / CHECKPOINT_FILE))
    assert record.kind == "online" and record.settings["world_size"] == WORLD_SIZE
    assert record.history == ranks[0]["history"]

    # The two shards together are what one process draws with twice the users and examples.
    single = _trainer(logs_dir, world_size=1)
    single.train()
    for key, value in single.policy.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][key], value, atol=1e-4, rtol=1e-3)


if __name__ == "__main__":
    worker(Path(sys.argv[1]), Path(sys.argv[2]))
