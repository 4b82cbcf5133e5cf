"""Where a training run runs: its device, its process group, its random state, its ranks.

Every trainer needs the same plumbing before its first step and between ranks:

- `training_device`: `config.device`, else this rank's GPU (LOCAL_RANK), else the CPU;
- `process_group`: under `torchrun` (RANK / WORLD_SIZE set) join the process group (NCCL on
  CUDA, gloo on CPU) and leave it at the end; one process otherwise;
- `seeded_global_rng`: dropout draws from torch's global generators, so a run seeds them
  (differently on each rank) and hands the caller its own state back afterwards;
  `rng_state` / `set_rng_state` carry them through checkpoints;
- `average_gradients` and `reduce_across_ranks`: what crosses ranks besides DDP's own
  gradient averaging: gradients of a model DDP does not wrap, and metrics (the mean, or the
  largest for a chart named `*_max`).

Letters used in shape comments: N records (steps), M metrics.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn

# A chart whose name ends so claims the largest value: over updates, steps and ranks alike.
MAX_SUFFIX = "_max"


class DeviceConfig(Protocol):
    """What `training_device` reads of a trainer's config."""

    device: str | None  # None: cuda:LOCAL_RANK when CUDA is available, else cpu


def process_rank() -> int:
    """This process's rank under torchrun (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


@contextmanager
def process_group(backend: str) -> Iterator[tuple[int, int]]:
    """(rank, world size); joins torchrun's process group and leaves it on exit."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield 0, 1
        return
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend)
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        if created:
            dist.destroy_process_group()


def training_device(config: DeviceConfig) -> torch.device:
    """The training device (`config.device`, else this rank's GPU, else the CPU), with an
    explicit index on CUDA."""
    if config.device is not None:
        device = torch.device(config.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    else:
        device = torch.device("cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def backend_for(device: torch.device) -> str:
    """The process-group backend of a device: NCCL on CUDA, gloo elsewhere."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global generators (CPU and `device`'s CUDA one) with `seed` for the body;
    the caller's states are restored on exit."""
    cuda_devices = [device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.random.default_generator.manual_seed(seed)
        for index in cuda_devices:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def rng_state(device: torch.device) -> dict[str, Tensor]:
    """The global generators dropout draws from (the CPU one and this device's CUDA one)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Tensor], device: torch.device) -> None:
    """Restore what `rng_state` returned (a CUDA state only on a CUDA device)."""
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def average_gradients(module: nn.Module, world_size: int) -> None:
    """All-reduce every gradient to the mean over ranks (a missing one counts as zeros)."""
    for parameter in module.parameters():
        if parameter.requires_grad:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            dist.all_reduce(parameter.grad)
            parameter.grad /= world_size


def reduce_across_ranks(values: Tensor, names: Sequence[str], world_size: int) -> Tensor:
    """values (N, M): metric `names[m]` of N steps on this rank -> the same on every rank: the
    mean over ranks, the largest for a `*_max` name. A collective: every rank calls it."""
    if world_size == 1:
        return values
    largest = torch.tensor([name.endswith(MAX_SUFFIX) for name in names], device=values.device)
    summed, maxima = values.clone(), values.clone()
    dist.all_reduce(summed)
    dist.all_reduce(maxima, op=dist.ReduceOp.MAX)
    return torch.where(largest, maxima, summed / world_size)  # (N, M)
