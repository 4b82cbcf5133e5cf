"""Data-parallel RL: `torchrun` with two gloo processes on the CPU.

The test launches this very file under torchrun; each process runs `worker` (the `__main__`
block): ECPO on its own shard of users, gradients all-reduced. Both ranks must end with the
same weights, equal to one process training on both shards at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from envs.logs import LoggedSessions
from tests.conftest import REPO_ROOT
from tests.test_pretrain import SESSIONS, random_codec, small_logs, small_policy
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
    logs_dir, out = tmp_path / "logs", tmp_path / "out"
    small_logs().save(logs_dir)
    out.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={WORLD_SIZE}", __file__, str(out), str(logs_dir)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run(command, env=environment, capture_output=True, text=True,
                               timeout=300, check=False)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]

    ranks = [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]
    assert [rank["world_size"] for rank in ranks] == [WORLD_SIZE] * WORLD_SIZE
    first, second = ranks[0]["state"], ranks[1]["state"]
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert ranks[0]["history"] == ranks[1]["history"]  # metrics are averaged over ranks
    assert (out / CHECKPOINT_FILE).is_file() and (out / "tensorboard").is_dir()

    # The two shards together are what one process draws with twice the users and examples.
    single = _trainer(logs_dir, world_size=1)
    single.train()
    for key, value in single.policy.state_dict().items():
        torch.testing.assert_close(first[key], value, atol=1e-4, rtol=1e-3)


if __name__ == "__main__":
    worker(Path(sys.argv[1]), Path(sys.argv[2]))
