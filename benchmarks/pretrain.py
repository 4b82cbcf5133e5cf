"""Pre-training throughput on the CPU: tokens per second of `trainers.pretrain`.

    python -m benchmarks.pretrain [--preset full|smoke] [--threads N] [--steps N] [--batch-size N]

Writes `pretrain<suffix>.md` and `.json` under `--results` (suffix "" for the full preset,
"_smoke" for the smoke one). Tokens are what the model
processes per example: encoder context tokens (one static token plus every non-padding
item of the short-term, positive and lifelong pathways: at most 1 + 20 + 256 + 128 = 405,
the report's context) and decoder tokens (the L teacher-forced codes of the target item).
Both parts are reported, per second of training-step wall time (forward, backward, gradient
clipping, AdamW, MoE balance update; no checkpoint or TensorBoard writes).

Data: sessions of the popularity logging policy over a 5,000-item synthetic catalog, with
all four pathways at the report's lengths. Codes are random at each preset's codebook sizes
(tiny 3 x 64, 0.015B 3 x 8192): throughput does not depend on what the codes mean, and a
5,000-item catalog cannot fill 8,192-code books by k-means.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from benchmarks.study import command_line, study_main, with_preset, write_report
from envs.logging_policies import PopularPolicy
from envs.logs import LoggedSessions, collect_sessions
from onerec_lab.experiment.machine import hardware_description
from onerec_lab.experiment.pretraining import logged_model_settings
from onerec_lab.experiment.world import make_catalog
from policies.codec import SemanticIdCodec
from policies.config import PRESETS as MODEL_PRESETS
from policies.config import config_for
from policies.onerec import OneRecPolicy, build_policy
from trainers.pretrain import PretrainConfig, pretrain
from trainers.pretrain_data import LoggedExamples

RESULTS = Path(__file__).resolve().parent / "results"
MEASURED_PRESETS = ("tiny", "0.015B")
ITEMS = 5_000
WARMUP_STEPS = 2  # untimed steps first: allocator and thread-pool start-up are not throughput


@dataclass(frozen=True)
class PretrainPreset:
    """Sizes of one run of the benchmark (each an option of `PretrainBenchArgs` too)."""

    steps: int  # timed optimizer steps per model preset
    batch_size: int  # examples per step
    users: int  # logged sessions of the popularity policy (the examples' pool)


PRESETS = {
    "full": PretrainPreset(steps=20, batch_size=64, users=256),
    "smoke": PretrainPreset(steps=3, batch_size=8, users=32),
}


@dataclass
class PretrainBenchArgs:
    """Arguments of `python -m benchmarks.pretrain`."""

    preset: Literal["full", "smoke"] = "full"  # full: the measured benchmark; smoke: 3 steps
    # of 8 examples
    results: str = str(RESULTS)  # where pretrain*.md / .json are written
    json: bool = False  # print the result as one JSON object
    threads: int = 1  # torch intra-op threads (1: the machine's cores are shared)
    steps: int | None = None  # timed optimizer steps per model preset (None: the preset's)
    batch_size: int | None = None  # examples per step (None: the preset's)
    users: int | None = None  # logged sessions of the popularity policy (None: the preset's)


def random_codec(codebook_sizes: tuple[int, ...], num_items: int, seed: int) -> SemanticIdCodec:
    """Random codes at the given sizes; a shared code goes to its lowest item ("owner")."""
    generator = torch.Generator().manual_seed(seed)
    codes = torch.stack([torch.randint(size, (num_items,), generator=generator)
                         for size in codebook_sizes], dim=1)  # (N, L)
    return SemanticIdCodec(codes, codebook_sizes, collision_policy="owner")


def preset_policy(preset: str, logs: LoggedSessions) -> OneRecPolicy:
    """The preset shaped for the logs (pathway lengths, side features), random codes."""
    overrides, item_features = logged_model_settings(logs)
    codec = random_codec(MODEL_PRESETS[preset].codebook_sizes, ITEMS, seed=0)
    config = config_for(preset, num_items=ITEMS, codebook_sizes=codec.codebook_sizes,
                        **overrides)
    policy = build_policy(config, seed=0)
    policy.set_item_codes(codec.item_codes)
    policy.set_item_features(**item_features)
    return policy


def measure(preset: str, logs: LoggedSessions, steps: int, batch_size: int) -> dict:
    """Throughput of `steps` timed steps after WARMUP_STEPS untimed ones."""
    examples = LoggedExamples(logs)
    settings = {"per_device_train_batch_size": batch_size, "progress": False, "device": "cpu"}
    pretrain(preset_policy(preset, logs), examples,
             PretrainConfig(max_steps=WARMUP_STEPS, **settings))
    policy = preset_policy(preset, logs)
    cpu_started = time.process_time()
    result = pretrain(policy, examples, PretrainConfig(max_steps=steps, **settings))
    cpu_seconds = time.process_time() - cpu_started
    levels = policy.config.num_levels
    return {
        "preset": preset,
        "parameters": sum(parameter.numel() for parameter in policy.parameters()),
        "codebook_sizes": list(policy.config.codebook_sizes),
        "batch_size": batch_size,
        "steps": steps,
        "context_tokens_per_example": result.encoder_tokens_per_s / result.decoder_tokens_per_s
        * levels,
        "encoder_tokens_per_s": result.encoder_tokens_per_s,
        "decoder_tokens_per_s": result.decoder_tokens_per_s,
        "tokens_per_s": result.tokens_per_s,
        # CPU time is steadier than wall time when other jobs share the cores.
        "tokens_per_cpu_s": result.tokens_per_s * result.train_seconds / cpu_seconds,
        "examples_per_s": result.decoder_tokens_per_s / levels,
        "seconds_per_step": result.train_seconds / steps,
        "initial_loss": result.initial_loss,
        "final_loss": result.final_loss,
    }


def run(args: PretrainBenchArgs) -> dict[str, Any]:
    """The benchmark at `args`; writes its report and returns its figures and the report's
    path."""
    command = command_line("benchmarks.pretrain", args)
    args = with_preset(args, PRESETS)
    torch.set_num_threads(args.threads)
    catalog = make_catalog(ITEMS, 0)
    logs = collect_sessions(PopularPolicy(catalog), catalog, args.users, 10, seed=0,
                            policy_name="popular")
    rows = [measure(preset, logs, args.steps, args.batch_size) for preset in MEASURED_PRESETS]
    lines = [
        "# Pre-training throughput (CPU)", "", f"Command: `{command}`", "",
        f"Machine: {hardware_description()}, Python {platform.python_version()}.", "",
        "Tokens/s = (encoder context tokens + decoder tokens) processed per second of "
        "training-step wall time (forward, backward, gradient clipping, AdamW, MoE balance "
        "update). Encoder context tokens per example: one static token plus every non-padding "
        "item of the short-term (<= 20), positive (<= 256) and lifelong (<= 128) pathways, "
        "405 at most, the report's context length. Decoder tokens per example: the L = 3 "
        "teacher-forced codes of the target item. fp32 (bf16 autocast is for CUDA).", "",
        f"Data: {logs.num_sessions} sessions of the popularity policy over a {ITEMS:,}-item "
        f"synthetic catalog, {LoggedExamples(logs).num_examples:,} high-quality exposures "
        "(long view, like, follow or forward; no hate). Random codes at each preset's "
        "codebook sizes; creator, leaf-category and duration side features on. "
        f"{WARMUP_STEPS} untimed warm-up steps, then {args.steps} timed steps of {args.batch_size} "
        "examples.", "",
        "| preset | parameters | codebooks | context tokens / example | encoder tokens/s "
        "| decoder tokens/s | **tokens/s** | tokens / CPU-s | examples/s | s / step |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(f"| {row['preset']} | {row['parameters'] / 1e6:.2f} M "
          f"| {' x '.join(map(str, row['codebook_sizes']))} "
          f"| {row['context_tokens_per_example']:.0f} | {row['encoder_tokens_per_s']:,.0f} "
          f"| {row['decoder_tokens_per_s']:,.0f} | **{row['tokens_per_s']:,.0f}** "
          f"| {row['tokens_per_cpu_s']:,.0f} | {row['examples_per_s']:,.1f} "
          f"| {row['seconds_per_step']:.2f} |" for row in rows),
        "",
        "Almost all of a step is the encoder: it processes ~135 times more tokens per "
        "example than the decoder (405 against 3). Other jobs share these cores: tokens per "
        "CPU-second (the measured run's process CPU time, data preparation included) is the "
        "steadier figure; wall-clock rates vary between runs with the load.",
    ]
    result = {"command": command, "hardware": hardware_description(), "threads": args.threads,
              "sessions": logs.num_sessions, "warmup_steps": WARMUP_STEPS, "results": rows}
    report = write_report(args.results, "pretrain", args.preset, result,
                          "\n".join(lines) + "\n")
    return {"rows": rows, "results": str(report)}


def main(argv: list[str] | None = None) -> int:
    return study_main("benchmarks.pretrain", __doc__.splitlines()[0], PretrainBenchArgs, run,
                      argv)


if __name__ == "__main__":
    sys.exit(main())
