"""Pre-training of the OneRec policy by next-token prediction on logged exposures.

One step: draw a batch (`trainers.pretrain_data.BatchSampler`), teacher-force the target
codes (`OneRecPolicy.ntp_loss`, bf16 autocast on CUDA), then the shared loop's update
(`trainers.loop`: gradient clipping, AdamW with warm-up and cosine decay, the MoE routing
biases moved after every optimizer step).

Logging (rank 0, when `output_dir` is set): TensorBoard under `output_dir/tensorboard` with
`losses/ntp`, `losses/ntp_level_<l>`, `charts/moe_balance` (max / mean expert load, MoE
models only), `charts/grad_norm`, `charts/learning_rate` (each the mean over the steps since
the previous write) and `charts/tokens_per_s` (of those steps), and the hyper-parameters as
text at the start.

Throughput counts tokens the model processes: encoder context tokens (one static token per
user plus every non-padding item of the short-term, positive and lifelong pathways; 405 for
a full context of the report's shape) and decoder tokens (L teacher-forced codes per
example), summed over all ranks, per second of training-step wall time.

Checkpoints (`output_dir/checkpoint.pt`, every `save_steps` and at the end; the loop's
layout, `trainers.checkpoint.RunRecord`) hold the model, AdamW, the scheduler, the global
random state (dropout), every step's metrics, the sampler's generator, the token totals and
the logs' folder (`align` and `evaluate` rebuild the world from it); a run whose
`output_dir` holds a checkpoint resumes from it and continues the same curve, loss for loss.
A run whose loss or weights stop being finite (too high a learning rate) stops with
`TrainingDiverged`, its last finite checkpoint kept; SIGINT / SIGTERM save a checkpoint at
the step boundary and raise `TrainingInterrupted` (`trainers.guards`).

Data parallelism: under `torchrun` (the RANK / WORLD_SIZE variables are set) each process
joins a process group (NCCL on CUDA, gloo on CPU), the policy is wrapped in
DistributedDataParallel, every rank trains on its own slice of the global batch, the MoE
load counts are summed over ranks before the bias update (so every rank moves the same
biases), and only rank 0 writes.

Letters in shape comments: L code levels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from envs.spec import BLANK
from policies.encoder import Context
from policies.onerec import NtpOutput, OneRecPolicy
from trainers.loop import (
    CHECKPOINT_FILE,
    TENSORBOARD_DIR,
    Metrics,
    TrainingLoop,
    TrainingTask,
    load_policy,
    run_training,
)
from trainers.pretrain_data import BatchSampler, ExampleSource
from trainers.runtime import process_rank

# Re-exported: commands and tests take the run folder's names and these helpers from here.
__all__ = ["CHECKPOINT_FILE", "TENSORBOARD_DIR", "NextTokenObjective", "PretrainConfig",
           "PretrainResult", "context_tokens", "load_policy", "pretrain", "process_rank"]

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
    logging_steps: int = 10  # write scalars and update the progress every this many steps
    save_steps: int = 100  # checkpoint every this many steps (and at the end)
    seed: int = 0  # seeds the batch sampler and dropout; the weights are build_policy's seed
    output_dir: str | None = None  # checkpoint + TensorBoard folder, resumed from; None = no files
    device: str | None = None  # None: cuda:LOCAL_RANK when CUDA is available, else cpu
    progress: bool = True  # progress on rank 0: a bar on a terminal, else plain lines on stderr

    def __post_init__(self) -> None:
        for name in ("max_steps", "per_device_train_batch_size", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.learning_rate < math.inf:  # NaN too: it would diverge at step 1
            raise ValueError(f"learning_rate must be > 0 and finite, got {self.learning_rate}")
        for name in ("warmup_steps", "max_grad_norm", "weight_decay"):
            if not getattr(self, name) >= 0:  # NaN too
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


def context_tokens(context: Context) -> int:
    """Encoder input tokens: one static token per user plus every non-padding pathway item."""
    tokens = context.batch_size
    for items in (context.short_term_items, context.positive_items, context.lifelong_items):
        if items is not None:
            tokens += int((items != BLANK).sum())
    return tokens


class NextTokenTask(TrainingTask):
    """Pre-training as the loop's task: one batch, one next-token update per step."""

    kind = label = "pretrain"

    def __init__(self, data: ExampleSource, config: PretrainConfig) -> None:
        self.data, self.config = data, config
        self.totals = {"encoder_tokens": 0, "decoder_tokens": 0, "seconds": 0.0}
        self.window_tokens = torch.zeros(2, dtype=torch.float64)  # encoder, decoder since a write

    def start(self, loop: TrainingLoop) -> None:
        data, config, policy, self.loop = self.data, self.config, loop.policy, loop
        self.sampler = BatchSampler(data, policy.item_codes, config.per_device_train_batch_size,
                                    torch.Generator().manual_seed(config.seed), loop.rank,
                                    loop.world_size)
        # Pathways absent from the data leave their weights without gradients.
        self.objective = loop.data_parallel(NextTokenObjective(policy),
                                            find_unused_parameters=not data.complete_contexts)
        self.bf16 = loop.device.type == "cuda" if config.bf16 is None else config.bf16

    def settings(self) -> dict[str, Any]:
        return {name: getattr(self.config, name) for name in RESUME_SETTINGS}

    def hyperparameters(self) -> Mapping[str, Any]:
        return {**dataclasses.asdict(self.config), **dataclasses.asdict(self.loop.policy.config)}

    def run_metadata(self) -> dict[str, Any]:
        catalog = getattr(self.data, "catalog_fingerprint", None)  # the logs' world, if known
        return {"logs": getattr(self.data, "folder", None),
                **({} if catalog is None else {"catalog": catalog})}

    def step(self, step: int, loop: TrainingLoop) -> Metrics:
        batch = self.sampler.next_batch()
        self.window_tokens += torch.tensor(
            [context_tokens(batch.context), batch.target_codes.numel()], dtype=torch.float64)
        device = loop.device
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            output = self.objective(batch.context.to(device), batch.target_codes.to(device))
        update = loop.update(output.loss)
        metrics: dict[str, Tensor] = {"losses/ntp": output.loss.detach().float()}
        for level, level_loss in enumerate(output.level_losses.float()):  # (L,)
            metrics[f"losses/ntp_level_{level + 1}"] = level_loss
        if update.balance is not None:  # (MoE layers,)
            metrics["charts/moe_balance"] = update.balance.mean()
        metrics["charts/grad_norm"] = update.grad_norm.detach().float()
        return metrics

    def window_scalars(self, seconds: float) -> dict[str, float]:
        """Tokens per second of the window, summed over ranks; the totals grow by it."""
        tokens = self.window_tokens
        if self.loop.world_size > 1:
            tokens = tokens.to(self.loop.device)
            dist.all_reduce(tokens)
            tokens = tokens.cpu()
        self.totals["encoder_tokens"] += int(tokens[0])
        self.totals["decoder_tokens"] += int(tokens[1])
        self.totals["seconds"] += seconds
        tokens_per_s = float(tokens.sum()) / seconds
        self.window_tokens.zero_()
        return {"charts/tokens_per_s": tokens_per_s}

    def progress_text(self, record: Mapping[str, float], window: Mapping[str, float]) -> str:
        return f"loss {record['losses/ntp']:.4f}, {window['charts/tokens_per_s']:,.0f} tokens/s"

    def trainer_state(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict(), "totals": self.totals}

    def restore(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.totals = dict(state["totals"])


def pretrain(policy: OneRecPolicy, data: ExampleSource, config: PretrainConfig) -> PretrainResult:
    """Train `policy` (in place, moved to the training device) by next-token prediction on
    `data`; resumes from `config.output_dir` when it holds a checkpoint."""
    task = NextTokenTask(data, config)
    run = run_training(policy, config, task, min_lr_rate=config.min_lr_rate)
    totals = task.totals
    losses = [record["losses/ntp"] for record in run.history]
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
        steps=run.steps,
        resumed_from_step=run.resumed_from_step,
        train_seconds=totals["seconds"],
        world_size=run.world_size,
        checkpoint=run.checkpoint,
    )
