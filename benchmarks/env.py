"""Simulator benchmark: throughput, memory and behaviour realism.

    python -m benchmarks.env [--preset full|smoke] [--results DIR]

Writes `env<suffix>.md` and `.json` under `--results` (suffix "" for the full preset, "_smoke"
for the smoke one):
- impressions/s of the native vector env (1,024 users, slates of 10, all four pathways,
  autoresets included) against Gymnasium's SyncVectorEnv over single `OneRecSession` envs
  on the same users and slates, and the speedup;
- the days env's (`OneRec/Days-v0`) cost per impression against the session env's, same run;
- peak memory with 10,000 concurrent users;
- realism: under the popularity policy, the simulated impressions that got a like or a hate
  (the same selection as KuaiRand's explicit-feedback subset) against the subset: how
  each behaviour differs between liked and hated items, and the sign of the correlations.

Letters used in shape comments: M impressions.
"""

from __future__ import annotations

import csv
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from benchmarks.env_throughput import MAX_REQUESTS, BenchEnvArgs
from benchmarks.env_throughput import run as bench_env
from benchmarks.study import command_line, study_main, write_report
from envs.days_env import OneRecDaysVectorEnv
from envs.logging_policies import PopularPolicy
from envs.logs import collect_sessions, summarise
from envs.response import ResponseConfig
from envs.session_env import OneRecSession
from envs.simulator import SessionConfig
from envs.spec import FEEDBACK_FIELDS
from envs.users import PopulationConfig
from envs.vector_env import OneRecVectorEnv
from onerec_lab.experiment.world import make_catalog

RESULTS = Path(__file__).resolve().parent / "results"
LIKEHATE = (Path(__file__).resolve().parents[2] / "shared" / "data" / "kuairand-likehate"
            / "processed_standard_kcore_15.csv")
BINARY = ("click", "long_view", "follow", "comment", "forward")
CORRELATED = ("click", "long_view", "follow", "comment", "forward", "like", "watch_ratio")
NO_RELATION = 0.01  # |correlation| below this in 33k rows is no relation: its sign is noise


@dataclass(frozen=True)
class EnvPreset:
    """Sizes of one run of the benchmark."""

    users: int  # concurrent users of the throughput runs and of the CPU-cost breakdown
    steps: int  # timed requests of the native env, the reference and the one-reset-thread run
    short_history_steps: int  # timed requests of the run with a 500-impression warm history
    memory_users: int  # concurrent users of the memory measure
    new_user_repeats: int  # new users drawn one after another in one `OneRecSession`
    realism_users: int  # popularity-policy sessions of the realism comparison


PRESETS = {
    "full": EnvPreset(users=1024, steps=50, short_history_steps=30, memory_users=10_000,
                      new_user_repeats=30, realism_users=4000),
    "smoke": EnvPreset(users=64, steps=5, short_history_steps=5, memory_users=256,
                       new_user_repeats=5, realism_users=200),
}


@dataclass
class EnvBenchArgs:
    """Arguments of `python -m benchmarks.env`."""

    preset: Literal["full", "smoke"] = "full"  # full: the measured benchmark; smoke: small
    # sizes (timings not comparable)
    results: str = str(RESULTS)  # where env*.md / .json are written
    json: bool = False  # print the result as one JSON object


def relations(columns: dict[str, np.ndarray]) -> dict[str, object]:
    """Liked-versus-hated statistics of like-or-hate impressions.

    columns: `like` (M,) 0/1 (1 = liked, 0 = hated), the BINARY behaviours, `watch_ratio`
    and `duration_s` (M,). Returns per-group rates and medians, and the correlation matrix
    of CORRELATED as nested dicts.
    """
    liked = columns["like"] == 1
    stats: dict[str, object] = {"impressions": int(liked.size), "liked_share": float(liked.mean())}
    for name in BINARY:
        stats[name] = (float(columns[name][liked].mean()), float(columns[name][~liked].mean()))
    for name in ("watch_ratio", "duration_s"):
        stats[f"median_{name}"] = (float(np.median(columns[name][liked])),
                                   float(np.median(columns[name][~liked])))
    clicked = columns["click"] == 1
    stats["long_view_if_click"] = (float(columns["long_view"][liked & clicked].mean()),
                                   float(columns["long_view"][~liked & clicked].mean()))
    matrix = np.corrcoef(np.stack([columns[name].astype(np.float64) for name in CORRELATED]))
    stats["correlation"] = {a: {b: float(matrix[i, j]) for j, b in enumerate(CORRELATED)}
                            for i, a in enumerate(CORRELATED)}
    return stats


def kuairand_columns(path: Path) -> dict[str, np.ndarray]:
    """The subset's rows with a known duration, as `relations` columns."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    rows = [row for row in rows if float(row["duration_ms"]) > 0]

    def column(name: str) -> np.ndarray:
        return np.asarray([float(row[name]) for row in rows])

    duration = column("duration_ms") / 1000.0
    return {
        "like": column("label"), "click": column("is_click"), "long_view": column("long_view"),
        "follow": column("is_follow"), "comment": column("is_comment"),
        "forward": column("is_forward"),
        "watch_ratio": np.minimum(column("play_time_ms") / 1000.0 / duration, 3.0),
        "duration_s": duration,
    }


def simulated_columns(users: int, requests: int, seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """Popularity-policy sessions, restricted to liked or hated impressions."""
    catalog = make_catalog(5000, seed)
    logs = collect_sessions(PopularPolicy(catalog), catalog, users, requests, seed,
                            policy_name="popular")
    shown = logs.shown
    feedback = logs.feedback[shown]  # (M, F)
    items = logs.slates[shown]
    index = {name: FEEDBACK_FIELDS.index(name) for name in FEEDBACK_FIELDS}
    selected = (feedback[:, index["like"]] == 1) | (feedback[:, index["hate"]] == 1)
    columns = {name: feedback[selected, index[name]] for name in
               ("like", *BINARY, "watch_ratio")}
    columns["duration_s"] = catalog.duration_s[items[selected]].astype(np.float64)
    return columns, summarise(logs)


def _direction(pair: tuple[float, float]) -> str:
    liked, hated = pair
    return "liked > hated" if liked > hated else "liked < hated" if liked < hated else "equal"


def realism_markdown(real: dict, simulated: dict) -> list[str]:
    lines = [
        "| statistic (liked vs hated) | KuaiRand liked | KuaiRand hated | simulated liked "
        "| simulated hated | same direction |",
        "|---|---|---|---|---|---|",
    ]
    names = [*BINARY, "long_view_if_click", "median_watch_ratio", "median_duration_s"]
    for name in names:
        kr, sim = real[name], simulated[name]
        same = "yes" if _direction(kr) == _direction(sim) else "**no**"
        lines.append(f"| {name} | {kr[0]:.4f} | {kr[1]:.4f} | {sim[0]:.4f} | {sim[1]:.4f} "
                     f"| {same} |")
    lines += ["", "| correlation (like-or-hate impressions) | KuaiRand | simulated | same sign |",
              "|---|---|---|---|"]
    for i, a in enumerate(CORRELATED):
        for b in CORRELATED[i + 1:]:
            kr, sim = real["correlation"][a][b], simulated["correlation"][a][b]
            if abs(kr) < NO_RELATION:
                same = "n/a (KuaiRand ~ 0)"
            else:
                same = "yes" if np.sign(kr) == np.sign(sim) else "**no**"
            lines.append(f"| {a} ~ {b} | {kr:+.3f} | {sim:+.3f} | {same} |")
    return lines


def _native_rate(users: int, steps: int, warm_history: int, reset_threads: int) -> dict:
    """Native vector env throughput with another warm history or number of reset threads."""
    catalog = make_catalog(5000, 0)
    config = SessionConfig(population=PopulationConfig(warm_history=warm_history),
                           reset_threads=reset_threads)
    env = OneRecVectorEnv(num_envs=users, max_episode_steps=MAX_REQUESTS, catalog=catalog,
                          config=config)
    env.reset(seed=0)
    policy, rng = PopularPolicy(catalog), np.random.default_rng(0)
    slates = [policy.act({"static": np.zeros((users, 1))}, rng) for _ in range(steps)]
    wall, cpu = time.perf_counter(), time.process_time()
    impressions = sum(int(env.step(slate)[4]["shown"].sum()) for slate in slates)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    env.close()
    return {"users": users, "steps": steps, "warm_history": warm_history,
            "reset_threads": reset_threads, "impressions_per_s": impressions / wall,
            "impressions_per_cpu_s": impressions / cpu}


def days_against_sessions(users: int, steps: int) -> dict[str, float]:
    """Impressions per CPU-second of the days vector env (`OneRec/Days-v0`, 7-day episodes)
    and of the session vector env on the same users and popularity slates, one after the
    other in this run, and the days env's cost per impression relative to the session env's
    (the target: at most 1.5)."""
    catalog = make_catalog(5000, 0)
    policy, rng = PopularPolicy(catalog), np.random.default_rng(0)
    slates = [policy.act({"static": np.zeros((users, 1))}, rng) for _ in range(steps)]
    rates = {}
    for name, env in (("session", OneRecVectorEnv(num_envs=users, catalog=catalog,
                                                  max_episode_steps=MAX_REQUESTS)),
                      ("days", OneRecDaysVectorEnv(num_envs=users, catalog=catalog))):
        env.reset(seed=0)
        cpu = time.process_time()
        impressions = sum(int(env.step(slate)[4]["shown"].sum()) for slate in slates)
        rates[name] = impressions / (time.process_time() - cpu)
        env.close()
    return {"users": users, "steps": steps, "session_impressions_per_cpu_s": rates["session"],
            "days_impressions_per_cpu_s": rates["days"],
            "days_cost_per_impression_ratio": rates["session"] / rates["days"]}


def cost_breakdown(users: int, repeats: int) -> dict[str, float]:
    """CPU milliseconds of the two kinds of work: a request (no session ends) and a new user,
    in the native env (batched) and in one `OneRecSession`."""
    catalog = make_catalog(5000, 0)
    patient = ResponseConfig(initial_patience=(1e9,) * 4, patience_cap=1e9)  # nobody leaves
    native = OneRecVectorEnv(num_envs=users, max_episode_steps=10**6, catalog=catalog,
                             config=SessionConfig(response=patient))
    native.reset(seed=0)
    slates = np.random.default_rng(0).integers(0, catalog.num_items, size=(10, users, 10))
    cpu = time.process_time()
    for slate in slates:
        native.step(slate)
    request_ms = (time.process_time() - cpu) / len(slates) * 1000
    fresh = np.arange(min(users, 128))
    cpu = time.process_time()
    native.simulator.reset(fresh)
    new_user_ms = (time.process_time() - cpu) / fresh.size * 1000
    native.close()
    single = OneRecSession(catalog=catalog, config=SessionConfig(response=patient))
    single.reset(seed=0)
    cpu = time.process_time()
    for seed in range(repeats):
        single.reset(seed=seed)
    single_new_user_ms = (time.process_time() - cpu) / repeats * 1000
    cpu = time.process_time()
    for slate in slates[:, 0]:
        single.step(slate)
    single_request_ms = (time.process_time() - cpu) / len(slates) * 1000
    return {"native_request_ms_per_user": request_ms / users,
            "native_new_user_ms": new_user_ms,
            "single_request_ms": single_request_ms, "single_new_user_ms": single_new_user_ms}


def run(args: EnvBenchArgs) -> dict[str, Any]:
    """The benchmark at `args`; writes its report and returns its figures and the report's
    path."""
    command = command_line("benchmarks.env", args)
    preset = PRESETS[args.preset]
    first_started = time.perf_counter()  # numba compiles the kernels once per machine (cached)
    first = OneRecVectorEnv(num_envs=2, catalog=make_catalog(5000, 0))
    first.reset(seed=0)
    first.close()
    first_env_seconds = time.perf_counter() - first_started
    load_before = os.getloadavg()[0]  # other engineers' jobs share this machine
    bench = bench_env(BenchEnvArgs(users=preset.users, steps=preset.steps,
                                   reference_steps=preset.steps,
                                   memory_users=preset.memory_users))
    load_after = os.getloadavg()[0]
    threads = SessionConfig().reset_threads
    one_thread = _native_rate(users=preset.users, steps=preset.steps, warm_history=2000,
                              reset_threads=1)
    short_history = _native_rate(users=preset.users, steps=preset.short_history_steps,
                                 warm_history=500, reset_threads=threads)
    costs = cost_breakdown(preset.users, preset.new_user_repeats)
    days = days_against_sessions(preset.users, preset.steps)
    simulated, summary = simulated_columns(preset.realism_users, 20, seed=0)
    sim_relations = relations(simulated)
    real_relations = relations(kuairand_columns(LIKEHATE)) if LIKEHATE.is_file() else None

    memory = bench["memory"]
    lines = [
        "# Simulator benchmark", "", f"Command: `{command}`", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared), "
        f"Python {platform.python_version()}, numpy {np.__version__}. One-minute load average "
        f"{load_before:.1f} before the throughput runs and {load_after:.1f} after them: other "
        "jobs shared the cores, so wall-clock rates are low and noisy; CPU time is the "
        "steadier measure.", "",
        "## Throughput (all four pathways in every observation, autoresets included)", "",
        "| env | users | slate | timed requests | impressions/s |", "|---|---|---|---|---|",
        f"| native `OneRecVectorEnv` | {bench['users']} | {bench['slate']} | {bench['steps']} "
        f"| {bench['impressions_per_s']:,.0f} |",
        f"| native, same requests as the reference | {bench['users']} | {bench['slate']} "
        f"| {bench['reference_steps']} | {bench['native_impressions_per_s_same_steps']:,.0f} |",
        f"| `SyncVectorEnv` of `OneRecSession` (reference) | {bench['users']} | "
        f"{bench['slate']} | {bench['reference_steps']} "
        f"| {bench['reference_impressions_per_s']:,.0f} |",
        f"| native, one reset thread (new users drawn between requests) | "
        f"{one_thread['users']} | {bench['slate']} | {one_thread['steps']} "
        f"| {one_thread['impressions_per_s']:,.0f} |",
        f"| native, warm history of 500 (not 2,000) impressions | {short_history['users']} "
        f"| {bench['slate']} | {short_history['steps']} "
        f"| {short_history['impressions_per_s']:,.0f} |", "",
        f"Days env (`OneRec/Days-v0`, 7-day episodes, sessions of at most 20 requests, the "
        f"return model after each): {days['days_impressions_per_cpu_s']:,.0f} impressions per "
        f"CPU-second against the session env's {days['session_impressions_per_cpu_s']:,.0f} "
        f"on the same {days['users']} users and {days['steps']} popularity slates, measured "
        f"one after the other: a cost per impression of "
        f"**{days['days_cost_per_impression_ratio']:.2f}x** the session env's (target: at most "
        "1.5x). A returning user keeps its state, so the days env draws far fewer new users "
        "(a warm history and its lifelong k-means each) than the session env, whose users all "
        "are new after 20 requests.", "",
        f"The native env draws new users in `SessionConfig.reset_threads` = {threads} threads "
        "while the main thread answers the request (numpy and the compiled lifelong k-means "
        "release the GIL); the reference's envs hold one user each and draw it in the main "
        "thread, one env after another. With one reset thread the native env runs "
        f"{one_thread['impressions_per_cpu_s']:,.0f} impressions per CPU-second "
        f"({one_thread['impressions_per_cpu_s'] / bench['reference_cpu_impressions_per_s']:.1f}"
        "x the reference's).", "",
        f"Speedup (same users, same requests): **{bench['speedup']:.1f}x** in wall time, "
        f"**{bench['speedup_cpu']:.1f}x** in CPU time (other jobs share these cores; CPU time "
        f"is the steadier measure). Impressions per CPU-second: native "
        f"{bench['native_cpu_impressions_per_s']:,.0f}, reference "
        f"{bench['reference_cpu_impressions_per_s']:,.0f}. Sessions ending per "
        f"request (each restart draws a user with a 2,000-impression warm history and its "
        f"lifelong k-means): {bench['native_sessions_ended_per_step']:.1f}. Reset of all users: "
        f"native {bench['native_reset_seconds']:.1f} s, reference "
        f"{bench['reference_reset_seconds']:.1f} s (timed after a first env of two users, "
        f"{first_env_seconds:.1f} s: numba compiles the simulator's kernels once per machine "
        "and loads them from its cache afterwards).", "",
        "CPU cost of the two kinds of work (ms of CPU time; a new user is a profile, a "
        "2,000-impression warm history and the hierarchical k-means of its lifelong pathway):",
        "",
        "| work | native vector env (batched) | one `OneRecSession` |", "|---|---|---|",
        f"| a request, per user | {costs['native_request_ms_per_user']:.4f} "
        f"| {costs['single_request_ms']:.3f} |",
        f"| a new user | {costs['native_new_user_ms']:.2f} | {costs['single_new_user_ms']:.2f} |",
        "",
        "## Memory", "",
        f"{memory['users']:,} concurrent users (build, reset, two requests): peak traced "
        f"{memory['peak_traced_mib']:,.0f} MiB, held afterwards {memory['held_mib']:,.0f} MiB; "
        f"process peak RSS {memory['process_peak_rss_mib']:,.0f} MiB.", "",
        "## Behaviour realism (popularity policy)", "",
        f"Simulated: {summary['sessions']:,} sessions of at most 20 requests, "
        f"{summary['impressions']:,} impressions, mean session length "
        f"{summary['mean_session_length']:.1f} requests, leave rate {summary['leave_rate']:.2f}, "
        f"mean watch time {summary['mean_watch_time']:.1f} s per impression.", "",
        "| behaviour | rate per impression |", "|---|---|",
        *[f"| {name} | {rate:.4f} |" for name, rate in summary["behaviour_rates"].items()], "",
        "KuaiRand's explicit-feedback subset keeps only liked or hated impressions, so only "
        "relations are compared, on the same selection of simulated impressions "
        f"({sim_relations['impressions']:,} of them, liked share "
        f"{sim_relations['liked_share']:.2f}; KuaiRand: "
        + (f"{real_relations['impressions']:,}, liked share {real_relations['liked_share']:.2f})."
           if real_relations else "absent)."), "",
    ]
    if real_relations:
        lines += realism_markdown(real_relations, sim_relations)
    else:
        lines.append(f"{LIKEHATE} is absent: no KuaiRand comparison.")
    result = {
        "command": command, "load_average": {"before": load_before, "after": load_after},
        "first_env_seconds": first_env_seconds,
        "throughput": {k: v for k, v in bench.items() if k != "memory"},
        "memory": memory, "reset_threads": threads, "one_reset_thread": one_thread,
        "short_warm_history": short_history, "cpu_costs": costs, "days_env": days,
        "simulated_summary": summary, "simulated_relations": sim_relations,
        "kuairand_relations": real_relations,
    }
    report = write_report(args.results, "env", args.preset, result, "\n".join(lines) + "\n")
    return {**result, "results": str(report)}


def main(argv: list[str] | None = None) -> int:
    return study_main("benchmarks.env", __doc__.splitlines()[0], EnvBenchArgs, run, argv)


if __name__ == "__main__":
    sys.exit(main())
