"""Pass@K generation time per user: beam search and sampling with the encoder run once.

    python -m benchmarks.generation [--preset full|smoke] [--threads N] [--users B] [--repeats R]

Writes `generation<suffix>.md` and `.json` under `--results` (suffix "" for the full preset,
"_smoke" for the smoke one). For K = 8, 64 and 512 items
per user, the wall time of `policies.generation.beam_search` and `sample` on a batch of B
users, divided by B. Both encode each user's context once and share its cross-attention
keys/values among the user's K beams or samples (`_start`); decoding is trie-constrained to
legal codes (the codec), as when ranking or rolling out. The encoder's own share is timed
apart (`decoder_memory`: encode + cross-attention keys/values on the same batch).

The reference, "re-encode per candidate", is what generation costs without that sharing:
each of the K candidates is its own one-sample request, so its context goes through the
encoder again (the K copies run in chunks of at most `naive_chunk` rows, one user at a time).

Data and models as in `benchmarks.pretrain`: contexts of logged sessions of the popularity
policy with all four pathways at the report's lengths (up to 405 encoder tokens), random
codes at each preset's codebook sizes over a 5,000-item catalog, untrained weights (the time
of a forward pass does not depend on what the weights have learned). fp32, eval mode,
`torch.no_grad`. Each figure is the fastest of `repeats` runs: other jobs share the cores.

Letters used in shape comments: B users, K candidates per user.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from benchmarks.pretrain import ITEMS, MEASURED_PRESETS, preset_policy
from benchmarks.study import command_line, progress, study_main, with_preset, write_report
from envs.logging_policies import PopularPolicy
from envs.logs import collect_sessions
from onerec_lab.experiment.machine import hardware_description
from onerec_lab.experiment.world import make_catalog
from policies.encoder import Context
from policies.generation import beam_search, sample
from policies.onerec import OneRecPolicy
from trainers.pretrain_data import LoggedExamples

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class GenerationPreset:
    """Sizes of one run of the benchmark (each an option of `GenerationBenchArgs` too)."""

    users: int  # B: users per generation call
    candidates: tuple[int, ...]  # K: items per user
    presets: tuple[str, ...]  # model shapes (benchmarks.pretrain's)
    repeats: int  # timed runs per figure after one untimed warm-up


PRESETS = {
    "full": GenerationPreset(users=8, candidates=(8, 64, 512), presets=MEASURED_PRESETS,
                             repeats=3),
    "smoke": GenerationPreset(users=2, candidates=(8, 64), presets=("tiny",), repeats=1),
}


@dataclass
class GenerationBenchArgs:
    """Arguments of `python -m benchmarks.generation`."""

    preset: Literal["full", "smoke"] = "full"  # full: the measured benchmark; smoke: the tiny
    # shape, K = 8 and 64, 2 users, 1 repeat
    results: str = str(RESULTS)  # where generation*.md / .json are written
    json: bool = False  # print the result as one JSON object
    threads: int = 1  # torch intra-op threads (1: the machine's cores are shared)
    users: int | None = None  # B: users per generation call; time per user = call time / B
    # (None: the preset's)
    candidates: tuple[int, ...] | None = None  # K: items per user, the Pass@K (None:
    # the preset's)
    presets: tuple[str, ...] | None = None  # model shapes, benchmarks.pretrain's (None: the
    # preset's)
    repeats: int | None = None  # timed runs per figure after one untimed warm-up; the fastest
    # counts (None: the preset's)
    naive_chunk: int = 64  # re-encode reference: candidate rows per encoder call
    naive: bool = True  # also time the re-encode-per-candidate reference
    seed: int = 0  # seeds the logged sessions and the samples (codes, weights: seed 0)

    def __post_init__(self) -> None:
        for name in ("threads", "users", "repeats", "naive_chunk"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.candidates is not None and (not self.candidates or min(self.candidates) < 1):
            raise ValueError(f"--candidates must be positive K values, got {self.candidates}")


def fastest_seconds(run: Callable[[], Any], repeats: int) -> float:
    """Wall time of the fastest of `repeats` calls, after one untimed warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def repeat_rows(context: Context, copies: int) -> Context:
    """Every user's context `copies` times in a row: (B, ...) -> (B copies, ...)."""
    return Context(*(None if value is None else value.repeat_interleave(copies, dim=0)
                     for value in dataclasses.astuple(context)))


def reencode_per_candidate(
    policy: OneRecPolicy, user: Context, candidates: int, chunk: int, seed: int
) -> None:
    """The reference: K one-sample requests for one user, each encoding the context again."""
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, candidates, chunk):
        copies = repeat_rows(user, min(chunk, candidates - start))
        sample(policy, copies, 1, generator=generator, constraint=policy.codec)


def measure_preset(preset: str, examples: LoggedExamples, args: GenerationBenchArgs
                   ) -> list[dict[str, Any]]:
    """Per-user times of beam search, sampling, the encoder and the reference at each K."""
    policy = preset_policy(preset, examples.logs).eval()
    context, _ = examples.examples(np.arange(args.users))  # B users' contexts
    first_user, _ = examples.examples(np.arange(1))
    tokens = sum(int((value >= 0).sum()) for value in (
        context.short_term_items, context.positive_items, context.lifelong_items)
    ) / args.users + 1  # + the static token

    def encode() -> None:
        with torch.no_grad():
            policy.decoder_memory(context)

    encoder_seconds = fastest_seconds(encode, args.repeats) / args.users
    rows = []
    for candidates in args.candidates:
        progress(f"{preset}: K = {candidates}")
        generator = torch.Generator().manual_seed(args.seed)
        row = {
            "preset": preset, "K": candidates, "users": args.users,
            "parameters": sum(parameter.numel() for parameter in policy.parameters()),
            "codebook_sizes": list(policy.config.codebook_sizes),
            "context_tokens_per_user": tokens, "encoder_s_per_user": encoder_seconds,
            "beam_s_per_user": fastest_seconds(
                partial(beam_search, policy, context, candidates, policy.codec),
                args.repeats) / args.users,
            "sample_s_per_user": fastest_seconds(
                partial(sample, policy, context, candidates, generator=generator,
                        constraint=policy.codec),
                args.repeats) / args.users,
        }
        if args.naive:
            row["reencode_s_per_user"] = fastest_seconds(
                partial(reencode_per_candidate, policy, first_user, candidates,
                        args.naive_chunk, args.seed),
                1 if candidates >= 512 else args.repeats)
        rows.append(row)
    return rows


def milliseconds(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1e3:,.1f}"


def report(command: str, args: GenerationBenchArgs, rows: list[dict[str, Any]],
           load: tuple[float, float]) -> list[str]:
    """The markdown of generation.md."""
    lines = [
        "# Pass@K generation time per user (CPU)", "", f"Command: `{command}`", "",
        f"Machine: {hardware_description()}, Python {platform.python_version()}; "
        f"{os.cpu_count()} cores shared with other jobs (load average {load[0]:.1f} at the "
        f"start, {load[1]:.1f} at the end).", "",
        f"Batch: B = {args.users} users per call; a figure is the call's wall time / B, the "
        f"fastest of {args.repeats} timed runs after a warm-up. Contexts: logged sessions of "
        f"the popularity policy, all four pathways (mean context tokens per user in the "
        f"table), {ITEMS:,}-item catalog, random codes at the preset's codebook sizes, "
        "untrained weights, fp32, eval mode. Decoding is trie-constrained to legal codes. "
        "Beam search and sampling encode each user once and share the cross-attention "
        "keys/values among its K candidates; the encoder column is that one encoding "
        "(encoder + cross-attention keys/values). Re-encode per candidate: K one-sample "
        f"requests for one user (B = 1), the context encoded again for each (in chunks of "
        f"{args.naive_chunk} rows){'; timed once at K = 512' if 512 in args.candidates else ''}.",
        "",
        "| preset | parameters | codebooks | context tokens | K | encoder once (ms) "
        "| **beam search (ms)** | **sampling (ms)** | re-encode per candidate (ms) "
        "| re-encode / sampling |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        naive = row.get("reencode_s_per_user")
        ratio = "" if naive is None else f"{naive / row['sample_s_per_user']:.1f}x"
        lines.append(
            f"| {row['preset']} | {row['parameters'] / 1e6:.2f} M "
            f"| {' x '.join(map(str, row['codebook_sizes']))} "
            f"| {row['context_tokens_per_user']:.0f} | {row['K']} "
            f"| {milliseconds(row['encoder_s_per_user'])} "
            f"| **{milliseconds(row['beam_s_per_user'])}** "
            f"| **{milliseconds(row['sample_s_per_user'])}** | {milliseconds(naive)} | {ratio} |"
        )
    return lines


def run(args: GenerationBenchArgs) -> dict[str, Any]:
    """The benchmark at `args`; writes its report and returns its figures and the report's
    path."""
    command = command_line("benchmarks.generation", args)
    args = with_preset(args, PRESETS)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    catalog = make_catalog(ITEMS, args.seed)
    logs = collect_sessions(PopularPolicy(catalog), catalog, max(args.users, 8), 10,
                            seed=args.seed, policy_name="popular")
    examples = LoggedExamples(logs)
    rows = [row for preset in args.presets for row in measure_preset(preset, examples, args)]
    lines = report(command, args, rows, (load_start, os.getloadavg()[0]))
    result = {"command": command, "hardware": hardware_description(),
              "arguments": dataclasses.asdict(args), "results": rows}
    path = write_report(args.results, "generation", args.preset, result,
                        "\n".join(lines) + "\n")
    return {"rows": rows, "results": str(path)}


def main(argv: list[str] | None = None) -> int:
    return study_main("benchmarks.generation", __doc__.splitlines()[0], GenerationBenchArgs, run,
                      argv)


if __name__ == "__main__":
    sys.exit(main())
