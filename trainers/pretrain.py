"""Pre-training of the OneRec policy by next-token prediction on logged exposures.

One step: draw a batch (`trainers.pretrain_data.BatchSampler`), teacher-force the target
codes (`OneRecPolicy.ntp_loss`, bf16 autocast on CUDA), clip the gradient norm, take an
AdamW step with warm-up and cosine decay, then move the MoE routing biases
(`update_routing_balance`, loss-free balancing needs it after every optimizer step).

Logging (rank 0, when `output_dir` is set): TensorBoard under `output_dir/tensorboard` with
`losses/ntp`, `losses/ntp_level_<l>`, `charts/moe_balance` (max / mean expert load),
`charts/grad_norm`, `charts/tokens_per_s`, `charts/learning_rate`, each the mean over the
steps since the previous write, and the hyper-parameters as text at the start.

Throughput counts tokens the model processes: encoder context tokens (one static token per
user plus every non-padding item of the short-term, positive and lifelong pathways; 405 for
a full context of the report's shape) and decoder tokens (L teacher-forced codes per
example), summed over all ranks, per second of training-step wall time.

Checkpoints (`output_dir/checkpoint.pt`, every `save_steps` and at the end) hold the model,
AdamW, the scheduler, the sampler's generator, the global random state (dropout), the loss
curve, the configs and the logs' folder (`align` and `evaluate` rebuild the world from it);
a run whose `output_dir` holds a checkpoint resumes from it and continues the same curve,
loss for loss.

Data parallelism: under `torchrun` (the RANK / WORLD_SIZE variables are set) each process
joins a process group (NCCL on CUDA, gloo on CPU), the policy is wrapped in
DistributedDataParallel, every rank trains on its own slice of the global batch, the MoE
load counts are summed over ranks before the bias update (so every rank moves the same
biases), and only rank 0 writes.

Letters in shape comments: L code levels.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from envs.spec import BLANK
from policies.config import OneRecConfig
from policies.encoder import Context
from policies.onerec import NtpOutput, OneRecPolicy, build_policy
from trainers.checkpoint import (
    Checkpoint,
    config_differences,
    read_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from trainers.pretrain_data import BatchSampler, ExampleSource
from trainers.schedule import warmup_cosine_schedule

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

CHECKPOINT_FILE = "checkpoint.pt"
TENSORBOARD_DIR = "tensorboard"
# Buffers that hold the catalog (item -> codes, side features), not learned weights.
CATALOG_TABLES = "encoder.items.item_"
# Settings a resumed run must share with the checkpoint to continue the same curve.
RESUME_SETTINGS = ("learning_rate", "warmup_steps", "per_device_train_batch_size",
                   "max_grad_norm", "weight_decay", "min_lr_rate", "seed")


@dataclass
class PretrainConfig:
    """Hyper-parameters of `pretrain` (names as in TRL / transformers where they exist)."""

    learning_rate: float = 1e-3  # AdamW peak step size (evaluate-offline uses 2e-3 on Beauty)
    warmup_steps: int = 20  # linear warm-up steps: 10% of the default max_steps
    max_steps: int = 200  # optimizer steps of the whole run, counted from step 0 when resuming
    per_device_train_batch_size: int = 64  # examples per step and process (global: x world size)
    max_grad_norm: float = 1.0  # clip the gradient norm to this (transformers' default); 0 = off
    weight_decay: float = 0.01  # AdamW decay of matrices and embeddings (torch's default)
    min_lr_rate: float = 0.1  # cosine decay ends at this share of the peak learning rate
    bf16: bool | None = None  # bfloat16 autocast; None = on CUDA only (CPU autocast is slower)
    logging_steps: int = 10  # write scalars and update the progress text every this many steps
    save_steps: int = 100  # checkpoint every this many steps (and at the end)
    seed: int = 0  # seeds the batch sampler and dropout; the weights are build_policy's seed
    output_dir: str | None = None  # checkpoint + TensorBoard folder, resumed from; None = no files
    device: str | None = None  # None: cuda:LOCAL_RANK when CUDA is available, else cpu
    progress: bool = True  # a progress bar on rank 0 when stderr is a terminal

    def __post_init__(self) -> None:
        for name in ("max_steps", "per_device_train_batch_size", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        for name in ("warmup_steps", "max_grad_norm", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_lr_rate <= 1.0:
            raise ValueError(f"min_lr_rate must be in [0, 1], got {self.min_lr_rate}")


@dataclass
class PretrainResult:
    """What a pre-training run reports; throughput is summed over all ranks."""

    initial_loss: float  # loss of the first step: the untrained model (about ln K)
    final_loss: float  # mean loss of the last min(10, steps) steps
    losses: list[float]  # loss of every step from the first, including steps before a resume
    tokens_per_s: float  # encoder + decoder tokens per second of training steps
    encoder_tokens_per_s: float  # context tokens (static + non-padding pathway items) per second
    decoder_tokens_per_s: float  # teacher-forced code tokens per second
    steps: int  # optimizer steps done in total
    resumed_from_step: int  # the checkpoint's step this run started from (0: a fresh run)
    train_seconds: float  # wall time of the training steps (checkpoint writes excluded)
    world_size: int  # data-parallel processes
    checkpoint: str | None  # path of the last checkpoint written (None without output_dir)


class NextTokenObjective(nn.Module):
    """`policy.ntp_loss` as a forward pass, so DistributedDataParallel can wrap it."""

    def __init__(self, policy: OneRecPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, context: Context, target_codes: Tensor) -> NtpOutput:
        return self.policy.ntp_loss(context, target_codes)


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


def training_device(config: Any) -> torch.device:
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


def context_tokens(context: Context) -> int:
    """Encoder input tokens: one static token per user plus every non-padding pathway item."""
    tokens = context.batch_size
    for items in (context.short_term_items, context.positive_items, context.lifelong_items):
        if items is not None:
            tokens += int((items != BLANK).sum())
    return tokens


def build_optimizer(policy: nn.Module, learning_rate: float,
                    weight_decay: float) -> torch.optim.AdamW:
    """AdamW; matrices and embeddings decay, vectors (norm scales, biases) do not."""
    parameters = [p for p in policy.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in parameters if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=learning_rate)


def _rng_state(device: torch.device) -> dict[str, Tensor]:
    """The global generators dropout draws from (the CPU one and this device's CUDA one)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _training_settings(config: PretrainConfig, world_size: int) -> dict[str, Any]:
    return {**{name: getattr(config, name) for name in RESUME_SETTINGS}, "world_size": world_size}


def _check_resumable(checkpoint: Checkpoint, policy: OneRecPolicy,
                     settings: dict[str, Any]) -> None:
    """A checkpoint of another model, catalog tables or training settings is a ValueError
    saying what differs and how to fix it."""
    path, extra = checkpoint.path, checkpoint.extra
    if "model_config" not in extra or "training_settings" not in extra:
        raise ValueError(
            f"{path} is not a pre-training checkpoint (no model config); pass another output "
            "folder"
        )
    model_differences = config_differences(
        json.loads(extra["model_config"]), config_json(policy.config)
    )
    if model_differences:
        raise ValueError(
            f"{path} was saved from another model ({'; '.join(model_differences[:4])}); "
            "resume with the preset and codec it was trained with, or pass another output "
            "folder to train this model from scratch"
        )
    # The item -> codes and side-feature tables: the checkpoint's would silently replace them.
    tables = [name for name, value in policy.state_dict().items()
              if name.startswith(CATALOG_TABLES) and not torch.equal(
                  checkpoint.model[name], value.cpu())]
    if tables:
        raise ValueError(
            f"{path} was trained with other item tables ({', '.join(tables)} differ): resume "
            "with the codec and catalog it was trained with (its folder keeps the codec), or "
            "pass another output folder"
        )
    setting_differences = config_differences(extra["training_settings"], settings)
    if setting_differences:
        raise ValueError(
            f"{path} was trained with other settings ({'; '.join(setting_differences)}); "
            "resume with the same ones (only max_steps may change), or pass another output "
            "folder"
        )


def config_json(config: OneRecConfig) -> dict[str, Any]:
    """The config as plain JSON values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _hyperparameter_text(config: PretrainConfig, policy: OneRecPolicy, world_size: int) -> str:
    rows = [f"| {name} | {value} |" for name, value in (
        *dataclasses.asdict(config).items(), ("world_size", world_size),
        *dataclasses.asdict(policy.config).items(),
    )]
    return "\n".join(["| setting | value |", "|---|---|", *rows])


def _write_scalars(writer: SummaryWriter, stats: Tensor, tokens_per_s: float,
                   learning_rate: float, step: int) -> None:
    """TensorBoard scalars of a window: stats (steps, 1 + L + 2) = loss, level losses, MoE
    balance (NaN for a dense model), gradient norm; each written as its mean."""
    levels = stats.shape[1] - 3
    mean = stats.mean(0)
    writer.add_scalar("losses/ntp", mean[0].item(), step)
    for level in range(levels):
        writer.add_scalar(f"losses/ntp_level_{level + 1}", mean[1 + level].item(), step)
    if not stats[:, 1 + levels].isnan().all():
        writer.add_scalar("charts/moe_balance", stats[:, 1 + levels].nanmean().item(), step)
    writer.add_scalar("charts/grad_norm", mean[2 + levels].item(), step)
    writer.add_scalar("charts/tokens_per_s", tokens_per_s, step)
    writer.add_scalar("charts/learning_rate", learning_rate, step)


def load_policy(path: str | Path, device: torch.device | str = "cpu") -> OneRecPolicy:
    """The policy a pre-training checkpoint holds (its config, weights and item codes)."""
    checkpoint = read_checkpoint(path)
    if "model_config" not in checkpoint.extra:
        raise ValueError(f"{path} holds no OneRec model config; it is not a pre-training checkpoint")
    config = OneRecConfig(**json.loads(checkpoint.extra["model_config"]))
    policy = build_policy(config, seed=0)
    restore_checkpoint(checkpoint, policy)
    return policy.to(device)


def pretrain(policy: OneRecPolicy, data: ExampleSource, config: PretrainConfig) -> PretrainResult:
    """Train `policy` (in place, moved to the training device) by next-token prediction on
    `data`; resumes from `config.output_dir` when it holds a checkpoint."""
    device = training_device(config)
    with process_group("nccl" if device.type == "cuda" else "gloo") as (rank, world_size):
        cuda_devices = [device.index] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):  # the caller's random state is kept
            # Dropout draws from the global generators: seed them, differently on each rank.
            torch.random.default_generator.manual_seed(config.seed + rank)
            for index in cuda_devices:
                torch.cuda.default_generators[index].manual_seed(config.seed + rank)
            return _train(policy, data, config, device, rank, world_size)


def _train(policy: OneRecPolicy, data: ExampleSource, config: PretrainConfig,
           device: torch.device, rank: int, world_size: int) -> PretrainResult:
    policy.to(device).train()
    optimizer = build_optimizer(policy, config.learning_rate, config.weight_decay)
    scheduler = warmup_cosine_schedule(optimizer, config.warmup_steps, config.max_steps,
                                       config.min_lr_rate)
    sampler = BatchSampler(data, policy.item_codes, config.per_device_train_batch_size,
                           torch.Generator().manual_seed(config.seed), rank, world_size)
    settings = _training_settings(config, world_size)
    checkpoint_path = Path(config.output_dir) / CHECKPOINT_FILE if config.output_dir else None
    losses: list[float] = []
    totals = {"encoder_tokens": 0, "decoder_tokens": 0, "seconds": 0.0}
    start_step = 0
    if checkpoint_path is not None and checkpoint_path.exists():
        checkpoint = read_checkpoint(checkpoint_path)
        _check_resumable(checkpoint, policy, settings)
        restore_checkpoint(checkpoint, policy, optimizer, scheduler)
        sampler.load_state_dict(checkpoint.extra["sampler"])
        _set_rng_state(checkpoint.extra["rng"], device)
        losses = list(checkpoint.extra["losses"])
        totals = dict(checkpoint.extra["totals"])
        start_step = checkpoint.step

    objective: nn.Module = NextTokenObjective(policy)
    if world_size > 1:  # pathways absent from the data leave their weights without gradients
        objective = DistributedDataParallel(
            objective, find_unused_parameters=not data.complete_contexts
        )
    writes = rank == 0 and checkpoint_path is not None
    bf16 = device.type == "cuda" if config.bf16 is None else config.bf16
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("pretrain"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"), console=console,
        disable=not (config.progress and rank == 0 and console.is_terminal),
    )
    task = progress.add_task("pretrain", total=config.max_steps, completed=start_step, status="")
    closing = ExitStack()  # the progress display and the TensorBoard writer
    closing.enter_context(progress)
    writer = None
    if writes:
        from torch.utils.tensorboard import SummaryWriter  # imports TensorBoard: only when used

        # A resumed run drops the events the interrupted one wrote after its checkpoint.
        writer = closing.enter_context(SummaryWriter(
            str(Path(config.output_dir) / TENSORBOARD_DIR),
            purge_step=start_step + 1 if start_step else None,
        ))
        writer.add_text("hyperparameters", _hyperparameter_text(config, policy, world_size),
                        start_step)
    window: list[Tensor] = []  # per step: (1 + L + 2,) loss, level losses, balance, grad norm
    window_tokens = torch.zeros(2, dtype=torch.float64)  # encoder, decoder tokens since a write
    window_start = time.perf_counter()

    def flush(step: int) -> None:
        """Average the window over ranks (tokens: sum), extend the curve, write the scalars."""
        nonlocal window_start
        stats = torch.stack(window).double()  # (steps, 1 + L + 2)
        if world_size > 1:
            stats = stats.to(device)
            dist.all_reduce(stats)
            stats /= world_size
            tokens = window_tokens.to(device)
            dist.all_reduce(tokens)
            window_tokens.copy_(tokens.cpu())
        stats = stats.cpu()
        seconds = time.perf_counter() - window_start
        losses.extend(stats[:, 0].tolist())
        totals["encoder_tokens"] += int(window_tokens[0])
        totals["decoder_tokens"] += int(window_tokens[1])
        totals["seconds"] += seconds
        tokens_per_s = float(window_tokens.sum()) / seconds
        if writer is not None:
            _write_scalars(writer, stats, tokens_per_s, scheduler.get_last_lr()[0], step)
        progress.update(task, status=f"loss {losses[-1]:.4f}  {tokens_per_s:,.0f} tokens/s")
        window.clear()
        window_tokens.zero_()
        window_start = time.perf_counter()

    def save(step: int) -> None:
        nonlocal window_start
        saving_started = time.perf_counter()
        if writes:
            save_checkpoint(checkpoint_path, policy, optimizer, scheduler, step, {
                "model_config": json.dumps(config_json(policy.config)),
                "training_settings": settings,
                "sampler": sampler.state_dict(),
                "rng": _rng_state(device),
                "losses": losses,
                "totals": totals,
                "logs": getattr(data, "folder", None),
            })
        window_start += time.perf_counter() - saving_started  # writes are not training time

    with closing:
        for step in range(start_step + 1, config.max_steps + 1):
            batch = sampler.next_batch()
            window_tokens += torch.tensor(
                [context_tokens(batch.context), batch.target_codes.numel()], dtype=torch.float64
            )
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                output = objective(batch.context.to(device), batch.target_codes.to(device))
            optimizer.zero_grad(set_to_none=True)
            output.loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(
                policy.parameters(), config.max_grad_norm or float("inf")
            )
            optimizer.step()
            scheduler.step()
            if world_size > 1:
                for layer in policy.moe_layers():
                    dist.all_reduce(layer.pending_counts)
            balance = policy.update_routing_balance()  # (MoE layers,) or None
            balance_value = balance.mean() if balance is not None else torch.tensor(float("nan"))
            window.append(torch.cat([
                output.loss.detach().float().view(1), output.level_losses.float(),
                balance_value.to(output.loss.device).view(1), grad_norm.detach().float().view(1),
            ]))
            progress.advance(task)
            last = step == config.max_steps
            if step % config.logging_steps == 0 or step % config.save_steps == 0 or last:
                flush(step)
            if checkpoint_path is not None and (step % config.save_steps == 0 or last):
                save(step)
    tokens = totals["encoder_tokens"] + totals["decoder_tokens"]
    seconds = max(totals["seconds"], 1e-9)
    tail = losses[-min(10, len(losses)):]
    return PretrainResult(
        initial_loss=losses[0],
        final_loss=sum(tail) / len(tail),
        losses=losses,
        tokens_per_s=tokens / seconds,
        encoder_tokens_per_s=totals["encoder_tokens"] / seconds,
        decoder_tokens_per_s=totals["decoder_tokens"] / seconds,
        steps=max(start_step, config.max_steps),
        resumed_from_step=start_step,
        train_seconds=totals["seconds"],
        world_size=world_size,
        checkpoint=str(checkpoint_path) if checkpoint_path is not None else None,
    )
