"""One training-loop skeleton for pre-training and the online alignment methods.

A trainer is a `TrainingTask`: it says how to take one step (its loss goes through
`TrainingLoop.update`) and what that step's metrics are, what it keeps besides the weights,
and what a resumed run must share with its checkpoint. `run_training` does the rest, the
same for every trainer:

- the training device and torchrun's process group (`trainers.runtime`), the global random
  generators (dropout) seeded by seed + rank, the caller's own state kept;
- AdamW (`build_optimizer`) with warm-up + cosine decay, and `update(loss)`: backward, the
  gradients averaged over ranks (unless DistributedDataParallel did it in backward), their
  norm clipped to `max_grad_norm` (0 = off), the optimizer and scheduler step, then the MoE
  load counts summed over ranks and the routing biases moved (`update_routing_balance`);
- metrics: each step's record waits in a window; at every `logging_steps`, `save_steps` and
  the last step the window is reduced over ranks (the mean, the largest for a chart named
  `*_max`), appended to the history and, on rank 0 with `output_dir`, written to TensorBoard
  (`output_dir/tensorboard`) as one point per chart: the mean over the window's steps, the
  largest for `*_max` (`reduce_records`), next to the task's window scalars (tokens/s);
  hyper-parameters as text at the start, events past the checkpoint dropped on resume;
- progress on rank 0 (`ProgressReport`): rich's bar when stderr is a terminal, plain lines
  otherwise (a log file, CI);
- checkpoints (`output_dir/checkpoint.pt`, rank 0, atomic, every `save_steps` and at the end)
  in the `trainers.checkpoint.RunRecord` layout, and resume: a checkpoint of another kind,
  model, item tables or settings is refused, saying what differs;
- divergence: `update` notes a loss that is not finite before its backward pass (on the
  device, no host sync); at every window's end (where the metrics are read, so the device
  is synchronised anyway) those notes and the weights' finiteness are checked, summed over
  ranks, and a run that diverged stops with
  `TrainingDiverged` (which step, what, the last finite checkpoint). A checkpoint is never
  saved from weights that are not finite (`save_checkpoint` refuses them too), so the
  file on disk stays the last finite one; the policy in memory is left as it diverged;
- interrupts: during `run_training` (in the main thread) SIGINT and SIGTERM set a flag; the
  loop finishes the step it is in, ends the window, saves a checkpoint (with `output_dir`)
  and raises `TrainingInterrupted` (`trainers.guards`); rerunning the same command resumes
  from it exactly. A
  second signal raises KeyboardInterrupt at once (the atomic save keeps the previous file),
  except under torchrun: its agent forwards the terminal's Ctrl-C, so each worker gets it
  twice, and the agent kills the workers itself after its shutdown timeout (30 s by
  default: a step and a save must fit in it). Under torchrun the flag is all-reduced (MAX,
  over a gloo group: no device sync) after every step, so all ranks stop at the same step
  whichever got the signal. The previous handlers are restored when the run ends; in
  another thread than the main one none is installed (Ctrl-C behaves as without the loop).

Letters used in shape comments: N steps in a window, M metrics, K floating tensors.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from policies.config import OneRecConfig
from policies.onerec import OneRecPolicy, build_policy
from trainers.checkpoint import (  # CHECKPOINT_FILE: also taken from here (pretrain, layout)
    CHECKPOINT_FILE,
    Checkpoint,
    RunRecord,
    check_shapes,
    config_differences,
    finite_flags,
    first_nonfinite,
    read_checkpoint,
    restore_checkpoint,
    run_record,
    save_checkpoint,
)
from trainers.guards import (
    STOP_SIGNALS,
    TORCHRUN_VARIABLE,
    StopSignals,
    TrainingDiverged,
    TrainingInterrupted,
)
from trainers.runtime import (
    MAX_SUFFIX,
    average_gradients,
    backend_for,
    process_group,
    reduce_across_ranks,
    rng_state,
    seeded_global_rng,
    set_rng_state,
    training_device,
)
from trainers.schedule import warmup_cosine_schedule

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

TENSORBOARD_DIR = "tensorboard"
# Buffers that hold the catalog (item -> codes, side features), not learned weights.
CATALOG_TABLES = "encoder.items.item_"
# What each checkpoint kind is called in errors.
KIND_NAMES = {"pretrain": "pre-training", "online": "an online alignment run"}
# A step's metrics: scalar tensors (on the training device) or floats, by TensorBoard tag.
Metrics = Mapping[str, Tensor | float]


class LoopConfig(Protocol):
    """The fields of a trainer's config the loop reads (`PretrainConfig`, `OnlineConfig`)."""

    learning_rate: float  # AdamW peak step size
    weight_decay: float  # AdamW decay of matrices and embeddings
    warmup_steps: int  # linear warm-up steps of the learning rate
    max_steps: int  # the run's last step, counted from step 0 when resuming
    max_grad_norm: float  # clip the gradient norm to this; 0 = off
    logging_steps: int  # reduce the window, write TensorBoard, update progress every this many
    save_steps: int  # checkpoint every this many steps (and at the end)
    seed: int  # the global generators get seed + rank
    output_dir: str | None  # checkpoint + TensorBoard folder, resumed from; None = no files
    device: str | None  # None: cuda:LOCAL_RANK when CUDA is available, else cpu
    progress: bool  # progress on rank 0 (a bar on a terminal, plain lines otherwise)


@dataclass
class TrainingResult:
    """What a run of the loop reports."""

    history: list[dict[str, float]]  # every step's metrics from step 1 (reduced over ranks)
    steps: int  # steps done in total
    resumed_from_step: int  # the checkpoint's step this run started from (0: a fresh run)
    train_seconds: float  # wall time of this run's steps (checkpoint writes excluded)
    world_size: int  # data-parallel processes
    checkpoint: str | None  # path of the last checkpoint written (None without output_dir)


class Update(NamedTuple):
    """What one optimizer step reports."""

    grad_norm: Tensor  # () the gradient norm before clipping
    balance: Tensor | None  # (MoE layers,) max / mean expert load; None for a dense model


class TrainingTask(ABC):
    """What a trainer tells the loop; the loop calls these on every rank."""

    kind: str  # "pretrain" or "online": the checkpoint's kind, a resume must match it
    label: str  # the progress name ("pretrain", "ecpo", ...)

    @abstractmethod
    def start(self, loop: TrainingLoop) -> None:
        """Set up for a run on `loop` (its device, ranks, policy), before any resume; what
        must be released at the end goes on `loop.cleanup`."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """What a resumed run must share with its checkpoint (JSON values; the loop adds the
        world size)."""

    @abstractmethod
    def hyperparameters(self) -> Mapping[str, Any]:
        """The rows of TensorBoard's hyper-parameter table."""

    @abstractmethod
    def run_metadata(self) -> dict[str, Any]:
        """What the checkpoint records of the run's inputs, never compared: "logs", ..."""

    @abstractmethod
    def step(self, step: int, loop: TrainingLoop) -> Metrics:
        """Take step `step` (1-based), its optimizer steps through `loop.update`; this rank's
        metrics of it."""

    def window_scalars(self, seconds: float) -> dict[str, float]:
        """Figures of a whole window that took `seconds` (e.g. tokens/s), written next to the
        reduced records; a collective where it needs one."""
        return {}

    @abstractmethod
    def progress_text(self, record: Mapping[str, float], window: Mapping[str, float]) -> str:
        """A step's progress figures from its reduced record and its window's scalars."""

    @abstractmethod
    def trainer_state(self) -> dict[str, Any]:
        """What the task keeps besides the weights (`RunRecord.trainer_state`)."""

    @abstractmethod
    def restore(self, state: dict[str, Any]) -> None:
        """Continue from what `trainer_state` returned."""


def build_optimizer(policy: nn.Module, learning_rate: float,
                    weight_decay: float) -> torch.optim.AdamW:
    """AdamW; matrices and embeddings decay, vectors (norm scales, biases) do not."""
    parameters = [p for p in policy.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in parameters if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=learning_rate)


def config_json(config: OneRecConfig) -> dict[str, Any]:
    """The config as plain JSON values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def load_policy(path: str | Path, device: torch.device | str = "cpu") -> OneRecPolicy:
    """The policy a training checkpoint (or its run folder) holds: its config, weights and
    item codes, written by pre-training or an online method, in either checkpoint version.

    The model is built on the meta device first (no memory) and every shape compared with
    the checkpoint's tensors, so a file whose config asks for a model it does not hold (a
    huge one) is refused before anything is allocated."""
    checkpoint = read_checkpoint(path)
    config, skeleton = _model_from_config(checkpoint)
    check_shapes(checkpoint, skeleton.state_dict())
    policy = build_policy(config, seed=0)
    restore_checkpoint(checkpoint, policy)
    return policy.to(device)


def _model_from_config(checkpoint: Checkpoint) -> tuple[OneRecConfig, OneRecPolicy]:
    """The checkpoint's model config and its model on the meta device; a config that does
    not build is a ValueError naming the file."""
    text = run_record(checkpoint).model_config
    try:
        config = OneRecConfig(**json.loads(text))
        return config, build_policy(config, seed=0, device="meta")
    except (TypeError, ValueError, RuntimeError) as error:  # JSON, fields, sizes
        cause = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"{checkpoint.path} has a malformed model config ({type(error).__name__}: "
            f"{cause}); pass a checkpoint written by `onerec-lab pretrain` or `align`"
        ) from error


def reduce_records(records: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Several records (a step's updates, a window's steps) as one: each metric's mean over
    the records that hold a number for it, the largest for a `*_max` chart (NaN: none do)."""
    reduced = {}
    for name in dict.fromkeys(name for record in records for name in record):
        values = np.array([record[name] for record in records if name in record],
                          dtype=np.float64)
        values = values[~np.isnan(values)]
        if values.size == 0:
            reduced[name] = float("nan")
        else:
            reduced[name] = float(values.max() if name.endswith(MAX_SUFFIX) else values.mean())
    return reduced


def check_resumable(checkpoint: Checkpoint, record: RunRecord, kind: str, policy: OneRecPolicy,
                    settings: Mapping[str, Any]) -> None:
    """A checkpoint of another kind of run, model, catalog tables or settings is a ValueError
    saying what differs and how to fix it."""
    path = checkpoint.path
    if record.kind != kind:
        raise ValueError(
            f"{path} is a checkpoint of {KIND_NAMES.get(record.kind, record.kind)}, not of "
            f"{KIND_NAMES.get(kind, kind)}: pass another output folder (the policy to start "
            "from is an input, not the output folder)"
        )
    model_differences = config_differences(json.loads(record.model_config),
                                           config_json(policy.config))
    if model_differences:
        raise ValueError(
            f"{path} was saved from another model ({'; '.join(model_differences[:4])}); "
            "resume with the preset and codec it was trained with, or pass another output "
            "folder to train this model from scratch"
        )
    # The item -> codes and side-feature tables: the checkpoint's would silently replace them.
    tables = [name for name, value in policy.state_dict().items()
              if name.startswith(CATALOG_TABLES) and (name not in checkpoint.model or not
                                                      torch.equal(checkpoint.model[name],
                                                                  value.cpu()))]
    if tables:
        raise ValueError(
            f"{path} was trained with other item tables ({', '.join(tables)} differ): resume "
            "with the codec and catalog it was trained with (its folder keeps the codec), or "
            "pass another output folder"
        )
    setting_differences = config_differences(record.settings, settings)
    if setting_differences:
        raise ValueError(
            f"{path} was trained with other settings ({'; '.join(setting_differences)}); "
            "resume with the same ones (only max_steps may change), or pass another output "
            "folder"
        )


class ProgressReport:
    """Progress on rank 0: rich's bar when stderr is a terminal; otherwise plain lines on
    stderr ("pretrain: step 300/600, loss 2.1034, 36,000 tokens/s") for the first step, then
    every max(logging_steps, ceil(max_steps / 10)) steps and the last one."""

    def __init__(self, label: str, max_steps: int, start_step: int, logging_steps: int,
                 enabled: bool) -> None:
        console = Console(stderr=True)
        self.label, self.max_steps, self.first_step = label, max_steps, start_step + 1
        self.lines = enabled and not console.is_terminal
        self.every = max(logging_steps, math.ceil(max_steps / 10))
        self.bar = Progress(
            TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"), console=console,
            disable=not (enabled and console.is_terminal),
        )
        self.task = self.bar.add_task(label, total=max_steps, completed=start_step, status="")

    def __enter__(self) -> ProgressReport:
        self.bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bar.stop()

    def advance(self) -> None:
        self.bar.advance(self.task)

    def show(self, step: int, text: str) -> None:
        """Step `step`'s figures: the bar's status, or a line when the step is due for one."""
        self.bar.update(self.task, status=text)
        due = step == self.first_step or step % self.every == 0 or step == self.max_steps
        if self.lines and due:
            print(f"{self.label}: step {step}/{self.max_steps}, {text}", file=sys.stderr,
                  flush=True)


def run_training(policy: OneRecPolicy, config: LoopConfig, task: TrainingTask,
                 min_lr_rate: float) -> TrainingResult:
    """Train `policy` in place (moved to the training device) by `task`'s steps; resumes
    from `config.output_dir` when it holds a checkpoint. The learning rate decays to
    `min_lr_rate` x its peak (1: constant after the warm-up)."""
    device = training_device(config)
    signals = StopSignals(repeat_raises=TORCHRUN_VARIABLE not in os.environ)
    with signals, process_group(backend_for(device)) as (rank, world_size):
        # Dropout draws from the global generators: seeded, differently on each rank.
        with seeded_global_rng(config.seed + rank, device), ExitStack() as cleanup:
            loop = TrainingLoop(policy, config, device, rank, world_size, min_lr_rate, cleanup,
                                signals)
            task.start(loop)
            return loop.run(task)


class TrainingLoop:
    """The skeleton (module docstring): what a task's step calls, and the loop around it."""

    def __init__(self, policy: OneRecPolicy, config: LoopConfig, device: torch.device,
                 rank: int, world_size: int, min_lr_rate: float, cleanup: ExitStack,
                 signals: StopSignals | None = None) -> None:
        """`cleanup` is released when the run ends, also on an error (simulators, ...);
        `signals` says when an interrupt asked to stop (None: nothing does). With several
        ranks this is a collective (the stop flag's gloo group)."""
        self.policy, self.config, self.cleanup = policy, config, cleanup
        self.device, self.rank, self.world_size = device, rank, world_size
        self.signals = StopSignals() if signals is None else signals
        policy.to(device).train()
        self.optimizer = build_optimizer(policy, config.learning_rate, config.weight_decay)
        self.scheduler = warmup_cosine_schedule(self.optimizer, config.warmup_steps,
                                                config.max_steps, min_lr_rate)
        self.path = Path(config.output_dir) / CHECKPOINT_FILE if config.output_dir else None
        self.saved_step: int | None = None  # the step of the checkpoint on disk (None: none)
        self.ddp = False  # whether DistributedDataParallel averages the gradients
        # The step's losses that were not finite, summed (0: none; NaN or +-inf: some).
        self.nonfinite_loss = torch.zeros((), dtype=torch.float64, device=device)
        # The stop flag crosses ranks on the CPU: a gloo group beside NCCL's.
        self.stop_group = None if world_size == 1 or dist.get_backend() == "gloo" \
            else dist.new_group(backend="gloo")

    def data_parallel(self, module: nn.Module, find_unused_parameters: bool) -> nn.Module:
        """`module` wrapped in DistributedDataParallel under torchrun (it then averages the
        gradients during backward), else `module` itself."""
        if self.world_size == 1:
            return module
        self.ddp = True
        return DistributedDataParallel(module, find_unused_parameters=find_unused_parameters)

    def update(self, loss: Tensor) -> Update:
        """One optimizer step on `loss` (module docstring)."""
        policy = self.policy
        value = loss.detach().to(self.device, torch.float64).reshape(())
        # Noted before backward, read at the window's end (`_check_finite`): no sync here.
        self.nonfinite_loss += torch.where(torch.isfinite(value), 0.0, value)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.world_size > 1 and not self.ddp:
            average_gradients(policy, self.world_size)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            policy.parameters(), self.config.max_grad_norm or float("inf"))
        self.optimizer.step()
        self.scheduler.step()
        if self.world_size > 1:
            for layer in policy.moe_layers():
                torch.distributed.all_reduce(layer.pending_counts)
        return Update(grad_norm, policy.update_routing_balance())

    def run(self, task: TrainingTask) -> TrainingResult:
        """Steps from the checkpoint's (or 1) to `max_steps`, with metrics and checkpoints."""
        config = self.config
        settings = {**task.settings(), "world_size": self.world_size}
        history: list[dict[str, float]] = []
        start_step = 0
        if self.path is not None and self.path.exists():
            checkpoint = read_checkpoint(self.path)
            record = run_record(checkpoint)
            check_resumable(checkpoint, record, task.kind, self.policy, settings)
            restore_checkpoint(checkpoint, self.policy, self.optimizer, self.scheduler)
            task.restore(record.trainer_state)
            if record.rng:  # version-1 online checkpoints hold none (they had no dropout)
                set_rng_state(record.rng, self.device)
            history, start_step = list(record.history), checkpoint.step
            self.saved_step = start_step
        writes = self.rank == 0 and self.path is not None
        progress = ProgressReport(task.label, config.max_steps, start_step, config.logging_steps,
                                  config.progress and self.rank == 0)
        window: list[tuple[int, Metrics]] = []  # (step, this rank's metrics) since the last write
        nonfinite_losses: list[Tensor] = []  # each window step's `nonfinite_loss`
        seconds = 0.0  # this run's training time
        with ExitStack() as closing:
            closing.enter_context(progress)
            writer = self._writer(closing, task, start_step) if writes else None
            stop = self._stop_signal()  # one received while setting up
            if stop is not None:
                raise self._interrupted(start_step, stop)
            window_start = time.perf_counter()
            for step in range(start_step + 1, config.max_steps + 1):
                self.nonfinite_loss = torch.zeros((), dtype=torch.float64, device=self.device)
                metrics = task.step(step, self)
                window.append((step, {**metrics,
                                      "charts/learning_rate": self.scheduler.get_last_lr()[0]}))
                nonfinite_losses.append(self.nonfinite_loss)
                progress.advance()
                stop = self._stop_signal()
                save = step % config.save_steps == 0 or step == config.max_steps or stop is not None
                if save or step % config.logging_steps == 0:
                    window_seconds = time.perf_counter() - window_start
                    seconds += window_seconds
                    records = self._reduce(window)
                    history.extend(records)
                    scalars = task.window_scalars(window_seconds)
                    if writer is not None:
                        for name, value in {**reduce_records(records), **scalars}.items():
                            writer.add_scalar(name, value, step)
                    for (record_step, _), record in zip(window, records, strict=True):
                        progress.show(record_step, task.progress_text(record, scalars))
                    self._check_finite([record_step for record_step, _ in window],
                                       nonfinite_losses)
                    window.clear()
                    nonfinite_losses.clear()
                    window_start = time.perf_counter()
                if self.path is not None and save:
                    saving_started = time.perf_counter()
                    if writes:
                        save_checkpoint(self.path, self.policy, self.optimizer, self.scheduler,
                                        step, self._record(task, settings, history)._asdict())
                    self.saved_step = step
                    window_start += time.perf_counter() - saving_started  # not training time
                if stop is not None:
                    raise self._interrupted(step, stop)
        return TrainingResult(history, max(start_step, config.max_steps), start_step, seconds,
                              self.world_size, None if self.path is None else str(self.path))

    def _stop_signal(self) -> str | None:
        """The name of the signal that asked this run to stop, on any rank (None: none); with
        several ranks a collective (an all-reduce on the CPU), so all stop at one step."""
        received = self.signals.received
        if self.world_size == 1:
            return received
        names = [number.name for number in STOP_SIGNALS]
        code = torch.tensor([0 if received is None else names.index(received) + 1])
        dist.all_reduce(code, op=dist.ReduceOp.MAX, group=self.stop_group)
        return None if int(code) == 0 else names[int(code) - 1]

    def _check_finite(self, steps: Sequence[int], nonfinite_losses: Sequence[Tensor]) -> None:
        """TrainingDiverged when a loss of the window's `steps` or a weight is not finite on
        any rank (a collective with several ranks; one host sync)."""
        _, finite = finite_flags(self.policy.state_dict())
        weights = torch.zeros((), device=self.device) if finite is None else (~finite).any()
        flags = torch.cat([torch.stack(list(nonfinite_losses)),
                           weights.to(torch.float64).reshape(1)])  # (N + 1,)
        if self.world_size > 1:
            dist.all_reduce(flags)  # a NaN or an infinity on one rank reaches all
        values = flags.cpu().tolist()
        for step, value in zip(steps, values[:-1], strict=True):
            if value != 0:  # NaN too
                raise self._diverged(step, f"loss is {value}")
        if values[-1] != 0:
            where = first_nonfinite(self.policy.state_dict()) or "on another rank"
            raise self._diverged(steps[-1], f"the weights are not finite ({where})")

    def _diverged(self, step: int, cause: str) -> TrainingDiverged:
        rate = f"{self.config.learning_rate:g}".replace("e+", "e")
        if self.saved_step is not None:
            kept = f"the last finite checkpoint is kept at {self.path} (step {self.saved_step})"
        elif self.path is not None:
            kept = f"no checkpoint was saved (one is saved every {self.config.save_steps} steps)"
        else:
            kept = "nothing was saved (no output folder)"
        return TrainingDiverged(
            f"training diverged at step {step}: {cause} (learning rate {rate} too high?); "
            f"{kept}; lower --learning-rate or raise --warmup-steps",
            step, self.path if self.saved_step is not None else None, self.saved_step)

    def _interrupted(self, step: int, signal_name: str) -> TrainingInterrupted:
        if self.saved_step is not None:
            outcome = f"; checkpoint saved to {self.path}: rerun the same command to resume"
        elif self.path is not None:
            outcome = " before its first step: rerun the same command to start it"
        else:
            outcome = "; nothing was saved (no output folder)"
        return TrainingInterrupted(f"interrupted at step {step} by {signal_name}{outcome}", step,
                                   self.path if self.saved_step is not None else None,
                                   signal_name)

    def _writer(self, closing: ExitStack, task: TrainingTask, start_step: int) -> SummaryWriter:
        """TensorBoard's writer, the hyper-parameters written; a resumed run drops the events
        the interrupted one wrote after its checkpoint."""
        from torch.utils.tensorboard import SummaryWriter  # imports TensorBoard: only when used

        writer = closing.enter_context(SummaryWriter(
            str(Path(self.config.output_dir) / TENSORBOARD_DIR),
            purge_step=start_step + 1 if start_step else None))
        rows = [f"| {name} | {value} |" for name, value in
                {**task.hyperparameters(), "world_size": self.world_size}.items()]
        writer.add_text("hyperparameters", "\n".join(["| setting | value |", "|---|---|", *rows]),
                        start_step)
        return writer

    def _reduce(self, window: Sequence[tuple[int, Metrics]]) -> list[dict[str, float]]:
        """The window's records, each metric reduced over ranks (a collective)."""
        names = list(dict.fromkeys(name for _, metrics in window for name in metrics))
        values = torch.stack([torch.stack([
            torch.as_tensor(metrics.get(name, float("nan")), dtype=torch.float64,
                            device=self.device).reshape(())
            for name in names]) for _, metrics in window])  # (N, M)
        rows = reduce_across_ranks(values, names, self.world_size).cpu().tolist()
        return [{name: value for name, value in zip(names, row, strict=True) if name in metrics}
                for (_, metrics), row in zip(window, rows, strict=True)]

    def _record(self, task: TrainingTask, settings: dict[str, Any],
                history: list[dict[str, float]]) -> RunRecord:
        return RunRecord(
            kind=task.kind, model_config=json.dumps(config_json(self.policy.config)),
            settings=settings, history=history, rng=rng_state(self.device),
            trainer_state=task.trainer_state(), metadata=task.run_metadata())
