"""Speed of the lab's four loops, each against a reference measured in the same run.

    python -m benchmarks.speed [--preset full|smoke] [--threads N] [--results DIR]

| loop | ours | reference |
|---|---|---|
| simulator | native `OneRecVectorEnv`, impressions/s | gymnasium `SyncVectorEnv` of `OneRecSession` |
| pre-training | OneRec `tiny`, tokens/s of a training step | `torch.nn.Transformer` of the same width, depth, FFN and token counts |
| generation | Pass@K sampling, K items per user with the encoder once, users/s | K one-item requests, each encoding the user again |
| RL | `trainers.grpo` ECPO step on tiny OneRec, completions/s | TRL's `GRPOTrainer` step on the TRL backend (a small Llama over the code words), completions/s |

Every figure is a ratio against its reference in the same process on the same threads, so
a shared, noisy machine moves both sides alike. Writes `speed<suffix>.md`, `.json` and `.png`
under `--results` (suffix "" for the full preset, "_smoke" for the smoke one); the GPU figures (when a GPU was lent) are `benchmarks/gpu_check.py`'s.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from benchmarks.study import command_line, study_main, write_study
from envs.logging_policies import PopularPolicy
from envs.logs import LoggedSessions, collect_sessions
from envs.session_env import OneRecSession
from envs.vector_env import OneRecVectorEnv
from onerec_lab.experiment.world import make_catalog
from policies.generation import sample
from trainers.grpo import GRPOConfig, GRPOTrainer
from trainers.pretrain_data import LoggedExamples

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class SpeedPreset:
    """Sizes of one run of the study."""

    logged_users: int  # sessions of the popularity policy the models read
    simulator_users: int  # concurrent users of the simulator loop
    simulator_requests: int  # requests of each simulator run
    pretraining_steps: int  # timed steps of each pre-training side
    pretraining_batch_size: int  # examples per pre-training step
    generation_users: int  # users of the generation loop, one at a time
    generation_candidates: int  # K samples per user
    rl_steps: int  # RL steps of each side
    rl_users: int  # users per RL step
    rl_group: int  # G completions per user
    repeats: int  # timed runs of our simulator and generation loops; the fastest counts


PRESETS = {
    "full": SpeedPreset(logged_users=400, simulator_users=1024, simulator_requests=20,
                        pretraining_steps=20, pretraining_batch_size=64, generation_users=32,
                        generation_candidates=64, rl_steps=5, rl_users=16, rl_group=16,
                        repeats=3),
    "smoke": SpeedPreset(logged_users=40, simulator_users=64, simulator_requests=3,
                         pretraining_steps=2, pretraining_batch_size=16, generation_users=4,
                         generation_candidates=16, rl_steps=1, rl_users=2, rl_group=4,
                         repeats=1),
}


@dataclass
class SpeedBenchArgs:
    """Arguments of `python -m benchmarks.speed`."""

    preset: Literal["full", "smoke"] = "full"  # full: the measured study; smoke: tiny sizes
    results: str = str(RESULTS)  # where speed*.md / .json / .png are written
    json: bool = False  # print the result as one JSON object
    threads: int = 1  # torch intra-op threads


def _rate(work: float, run: Any, repeats: int) -> float:
    """Best of `repeats` timings of `run()`, as work units per second."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return work / best


def simulator(users: int, requests: int, repeats: int) -> dict[str, Any]:
    """Impressions/s of random slates: the native vector env against SyncVectorEnv."""
    catalog = make_catalog(5_000, 0)
    slate = 10

    def native() -> None:
        env = OneRecVectorEnv(num_envs=users, catalog=catalog)
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        for _ in range(requests):
            env.step(rng.integers(0, catalog.num_items, size=(users, slate)))
        env.close()

    def reference() -> None:
        env = gym.vector.SyncVectorEnv(
            [lambda: OneRecSession(catalog=catalog) for _ in range(users)])
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        for _ in range(requests):
            env.step(rng.integers(0, catalog.num_items, size=(users, slate)))
        env.close()

    impressions = users * requests * slate  # reset included on both sides
    ours, theirs = _rate(impressions, native, repeats), _rate(impressions, reference, 1)
    return {"loop": "simulator", "unit": "impressions/s", "ours": ours, "reference": theirs,
            "setting": f"{users} users, {requests} requests of {slate} random items, reset "
                       "included"}


def _logs(users: int) -> LoggedSessions:
    catalog = make_catalog(5_000, 0)
    return collect_sessions(PopularPolicy(catalog, 10), catalog, users, 10, seed=0,
                            policy_name="popular")


def _policy(logs: LoggedSessions) -> Any:
    from benchmarks.pretrain import preset_policy

    return preset_policy("tiny", logs)


class ReferenceSeq2Seq(nn.Module):
    """`torch.nn.Transformer` with OneRec tiny's width, depth, heads and FFN, over the same
    token counts: the framework's own encoder-decoder as the yardstick of ours."""

    def __init__(self, d_model: int, heads: int, encoder_layers: int, decoder_layers: int,
                 ffn: int, vocab: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        with warnings.catch_warnings():  # "nested tensors are off with norm_first": fine here
            warnings.simplefilter("ignore", UserWarning)
            self.transformer = nn.Transformer(d_model, heads, encoder_layers, decoder_layers,
                                              ffn, dropout=0.0, batch_first=True,
                                              norm_first=True)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(target.shape[1])
        hidden = self.transformer(self.embed(source), self.embed(target), tgt_mask=mask,
                                  tgt_is_causal=True)
        return self.head(hidden)  # (B, T, V)


def pretraining(logs: LoggedSessions, steps: int, batch_size: int) -> dict[str, Any]:
    """Tokens/s of OneRec tiny's pre-training step against nn.Transformer's."""
    from benchmarks.pretrain import measure

    ours = measure("tiny", logs, steps, batch_size)
    config = _policy(logs).config
    context = round(ours["context_tokens_per_example"])
    levels = config.num_levels
    model = ReferenceSeq2Seq(config.d_model, config.num_heads, config.encoder_layers,
                             config.decoder_layers, config.ffn_hidden, max(config.codebook_sizes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    vocab = max(config.codebook_sizes)
    source = torch.randint(vocab, (batch_size, context), generator=generator)
    target = torch.randint(vocab, (batch_size, levels + 1), generator=generator)

    def step() -> None:
        logits = model(source, target[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), target[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    step()  # warm-up
    tokens = batch_size * (context + levels)
    theirs = _rate(tokens * steps, lambda: [step() for _ in range(steps)], 1)
    return {"loop": "pre-training", "unit": "tokens/s", "ours": ours["tokens_per_s"],
            "reference": theirs,
            "setting": f"tiny (d={config.d_model}, {config.encoder_layers}+"
                       f"{config.decoder_layers} layers), batch {batch_size}, {context} context "
                       f"+ {levels} code tokens per example, {steps} steps"}


def generation(logs: LoggedSessions, users: int, candidates: int,
               repeats: int) -> dict[str, Any]:
    """Users/s of Pass@K sampling (K items per user): the encoder once per user against K
    one-item requests that each encode the user again (`benchmarks.generation`'s reference)."""
    from benchmarks.generation import reencode_per_candidate

    policy = _policy(logs).eval()
    examples = LoggedExamples(logs)
    contexts = [examples.examples(np.array([row]))[0] for row in range(users)]

    def ours() -> None:
        generator = torch.Generator().manual_seed(0)
        for context in contexts:
            sample(policy, context, candidates, generator=generator, constraint=policy.codec)

    def reference() -> None:
        for context in contexts:
            reencode_per_candidate(policy, context, candidates, chunk=candidates, seed=0)

    with torch.no_grad():
        ours_rate = _rate(users, ours, repeats)
        theirs = _rate(users, reference, 1)
    return {"loop": "generation", "unit": "users/s", "ours": ours_rate, "reference": theirs,
            "setting": f"tiny, {users} users one at a time, K = {candidates} constrained samples "
                       "each"}


def rl(logs: LoggedSessions, steps: int, users: int, group: int) -> dict[str, Any]:
    """Completions/s of an RL step: our ECPO on tiny OneRec against TRL's GRPOTrainer."""
    from trainers.trl_backend import TRLBackendConfig, train_with_trl

    resources = {"catalog": logs.catalog}
    policy = _policy(logs)
    config = GRPOConfig(loss_type="ecpo", max_steps=steps, users_per_step=users,
                        num_generations=group, progress=False, seed=0)
    trainer = GRPOTrainer(policy, "format", resources, logs.catalog, logs.session_config(),
                          config, LoggedExamples(logs))
    started = time.perf_counter()
    trainer.train()
    ours = steps * users * group / (time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as folder:
        trl_config = TRLBackendConfig(output_dir=folder, max_steps=steps, num_generations=group,
                                      prompts_per_step=users, num_prompts=4 * users * steps)
        started = time.perf_counter()
        train_with_trl(logs, policy.codec, "format", {}, trl_config)
        theirs = steps * users * group / (time.perf_counter() - started)
    return {"loop": "RL", "unit": "completions/s", "ours": ours, "reference": theirs,
            "setting": f"{steps} steps of {users} users x G = {group}, reward `format`; ours: "
                       "tiny OneRec (beam rollouts, encoder once); TRL: 2-layer d=64 Llama "
                       "(sampling, model.generate); set-up included on both sides"}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """One bar per loop: how many times its reference's throughput ours reaches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 3.8))
    names = [f"{row['loop']}\n({row['unit']})" for row in rows]
    ratios = [row["ratio"] for row in rows]
    bars = axis.bar(names, ratios, color="tab:blue")
    axis.bar_label(bars, [f"{ratio:.1f}x" for ratio in ratios])
    axis.axhline(1.0, color="black", linewidth=0.8, label="reference = 1x")
    axis.set_yscale("log")
    axis.set_ylabel("ours / reference (throughput)")
    axis.set_title("Speed of each loop against its reference, same run")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run(args: SpeedBenchArgs) -> dict[str, Any]:
    """The study at `args`; writes its report and returns its figures and the report's path."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    preset = PRESETS[args.preset]
    logs = _logs(preset.logged_users)
    rows = [
        simulator(users=preset.simulator_users, requests=preset.simulator_requests,
                  repeats=preset.repeats),
        pretraining(logs, steps=preset.pretraining_steps,
                    batch_size=preset.pretraining_batch_size),
        generation(logs, users=preset.generation_users,
                   candidates=preset.generation_candidates, repeats=preset.repeats),
        rl(logs, steps=preset.rl_steps, users=preset.rl_users, group=preset.rl_group),
    ]
    for row in rows:
        row["ratio"] = row["ours"] / row["reference"]
    result = {
        "command": command_line("benchmarks.speed", args),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), torch "
                   f"{torch.__version__}, {args.threads} torch thread(s)",
        "load_average": os.getloadavg(),
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    report = write_study(args.results, "speed", args.preset, result,
                         lambda path: plot(rows, path), lambda suffix: markdown(result, suffix))
    return {"rows": rows, "results": str(report)}


def markdown(result: dict[str, Any], suffix: str) -> str:
    """The report: one row per loop, ours against its reference."""
    return "\n".join([
        "# Speed: the lab's loops against their references",
        "",
        f"Command: `{result['command']}` ({result['seconds']:.0f} s; {result['machine']}; "
        f"load average {result['load_average'][0]:.1f} at the end).",
        "",
        "| loop | unit | ours | reference | ratio | setting |",
        "|---|---|---|---|---|---|",
        *[f"| {r['loop']} | {r['unit']} | {r['ours']:,.0f} | {r['reference']:,.0f} | "
          f"{r['ratio']:.1f}x | {r['setting']} |" for r in result["rows"]],
        "",
        "References: the simulator's is gymnasium's SyncVectorEnv over single-user envs; "
        "pre-training's is torch.nn.Transformer at the same shape (random tokens; OneRec's step "
        "also embeds side features and feedback and runs the lifelong compressor); "
        "generation's encodes the user once per item; RL's is "
        "TRL's GRPOTrainer on its nearest model (models differ: see the setting).",
        "",
        f"![speed](speed{suffix}.png)",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    return study_main("benchmarks.speed", __doc__.splitlines()[0], SpeedBenchArgs, run, argv)


if __name__ == "__main__":
    sys.exit(main())
