"""`onerec-lab align` and `onerec-lab evaluate` end to end, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from envs.logs import SESSION_COLUMNS, LoggedSessions
from onerec_lab.commands import align as align_command
from onerec_lab.commands.align import AlignArgs, run
from onerec_lab.commands.evaluate import EvaluateArgs
from onerec_lab.experiment import METHODS, AlignResult, Evaluation
from onerec_lab.experiment import method as method_config
from tests.conftest import REPO_ROOT
from tests.test_pretrain import random_codec, small_logs, small_policy
from trainers.pretrain import CHECKPOINT_FILE, PretrainConfig, load_policy, pretrain
from trainers.pretrain_data import LoggedExamples

TINY = ["--steps", "2", "--users", "2", "--num-generations", "4", "--eval-users", "3",
        "--eval-requests", "2", "--candidates", "10"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "onerec_lab.cli", *args], cwd=REPO_ROOT,
                          env=environment, capture_output=True, text=True, timeout=300,
                          check=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A logs folder and a policy pre-trained on it for two steps (its checkpoint records it)."""
    folder = tmp_path_factory.mktemp("world")
    small_logs().save(folder / "logs")
    logs = LoggedSessions.load(folder / "logs")
    pretrain(small_policy(random_codec()), LoggedExamples(logs),
             PretrainConfig(max_steps=2, per_device_train_batch_size=4, warmup_steps=1,
                            output_dir=str(folder / "pretrained"), progress=False))
    return folder / "logs", folder / "pretrained" / CHECKPOINT_FILE


@pytest.mark.heavy
def test_align_prints_the_before_and_after_figures(world: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    _, checkpoint = world
    completed = _cli("align", "--method", "ecpo", "--reward", "pscore + 0.5*format", "--policy",
                     str(checkpoint), "--seed", "0", "--out", str(tmp_path / "run"), "--json",
                     *TINY)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)
    for name in ("proxy_reward", "true_watch_time", "legality"):
        assert isinstance(result[f"{name}_before"], float)
        assert isinstance(result[f"{name}_after"], float)
    assert 0 <= result["legality_after"] <= 1 and result["true_watch_time_before"] > 0
    assert "rewards/pscore" in result["final_metrics"]
    out = tmp_path / "run"
    assert (out / "align.json").is_file() and (out / "align.md").is_file()
    assert (out / "tensorboard").is_dir()
    load_policy(out / CHECKPOINT_FILE)  # the aligned policy is a policy checkpoint

    evaluated = _cli("evaluate", "--policy", str(out / CHECKPOINT_FILE), "--users", "3",
                     "--requests", "2", "--seed", "0", "--json", "--out", str(tmp_path / "eval"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    figures = json.loads(evaluated.stdout)
    assert {"true_watch_time", "session_length", "behaviour_rates", "proxy_reward", "legality",
            "diversity", "coverage"} <= set(figures)
    assert (tmp_path / "eval" / "evaluation.md").is_file()


@pytest.mark.heavy
@pytest.mark.parametrize("method", ["rsft", "dpo", "grpo", "gbpo", "rwsft", "dapo", "sapo",
                                    "feedback_rl"])
def test_every_method_runs_through_the_command(method: str, world: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    _, checkpoint = world
    training = method_config(method).make_config(max_steps=2, users_per_step=2,
                                                 num_generations=4)
    result = run(AlignArgs(policy=str(checkpoint), out=str(tmp_path), method=method,
                           reward="format", training=training, eval_users=2, eval_requests=1,
                           candidates=10, json=True))
    assert result["method"] == method and {"legality_before", "legality_after"} <= set(result)


def test_logged_rsft_and_baselines(world: tuple[Path, Path], tmp_path: Path) -> None:
    logs_dir, checkpoint = world
    training = method_config("rsft_logs").make_config(max_steps=1)
    result = run(AlignArgs(policy=str(checkpoint), out=str(tmp_path), method="rsft_logs",
                           training=training, eval_users=2, eval_requests=1, candidates=10,
                           json=True))
    assert result["resumed_from_step"] == 0 and "losses/ntp" in result["final_metrics"]
    completed = _cli("evaluate", "--policy", "popular", "--logs", str(logs_dir), "--users", "2",
                     "--requests", "1", "--reward", "format", "--json")
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert json.loads(completed.stdout)["legality"] == 1.0


def test_bad_input_is_a_clear_error(world: tuple[Path, Path], tmp_path: Path) -> None:
    _, checkpoint = world
    unknown = _cli("align", "--method", "ppo", "--policy", str(checkpoint), "--out",
                   str(tmp_path))
    assert unknown.returncode == 2 and "unknown method 'ppo'" in unknown.stderr
    assert ("Known methods: rsft, grpo, ecpo, dr_grpo, gbpo, dapo, bnpo, cispo, sapo, "
            "feedback_rl, rwsft, dpo") in unknown.stderr
    with pytest.raises(ValueError, match="unknown method 'ppo'"):
        AlignArgs(policy=str(checkpoint), out=str(tmp_path), method="ppo")
    with pytest.raises(ValueError, match="method 'rsft' takes a RSFTConfig, got a GRPOConfig"):
        AlignArgs(policy=str(checkpoint), out=str(tmp_path), method="rsft",
                  training=method_config("ecpo").make_config())
    single = _cli("align", "--policy", str(checkpoint), "--out", str(tmp_path),
                  "--num-generations", "1", "--json")
    assert single.returncode == 2 and "num_generations must be >= 2" in single.stderr
    assert "Traceback" not in single.stderr
    bad_spec = _cli("align", "--policy", str(checkpoint), "--out", str(tmp_path), "--reward",
                    "pscor")
    assert bad_spec.returncode == 2 and "did you mean 'pscore'" in bad_spec.stderr
    with pytest.raises(ValueError, match="needs --logs"):
        EvaluateArgs(policy="random")
    with pytest.raises(ValueError, match="neither a checkpoint"):
        EvaluateArgs(policy=str(tmp_path / "missing.pt"))


def test_every_field_of_the_methods_config_is_an_option() -> None:
    ecpo = _cli("align", "--help")
    assert ecpo.returncode == 0
    for option in ("--scale-rewards", "--max-grad-norm", "--top-p", "--reward-weights",
                   "--epsilon-high", "--format-selection-k", "--steps", "--max-steps", "--oracle"):
        assert option in ecpo.stdout, option
    rsft = _cli("align", "--method", "rsft", "--help")
    assert "--keep-fraction" in rsft.stdout and "--scale-rewards" not in rsft.stdout
    assert "--loss-type" not in ecpo.stdout  # fixed by the method's name
    listed = " ".join(ecpo.stdout.split())  # the --method help, wrapped by argparse
    built_in = [name for name, entry in METHODS.items()
                if entry.trainer.__module__.startswith("trainers.")]
    assert len(built_in) >= 12 and all(f" {name}," in listed or f" {name} " in listed
                                       for name in built_in), listed


def test_a_proxy_run_may_not_read_the_truth(world: tuple[Path, Path], tmp_path: Path) -> None:
    _, checkpoint = world
    refused = _cli("align", "--policy", str(checkpoint), "--out", str(tmp_path / "proxy"),
                   "--reward", "format + 0.1*oracle", "--json", *TINY)
    assert refused.returncode == 2 and "reads the simulator's truth (oracle)" in refused.stderr
    assert "--oracle" in refused.stderr and not (tmp_path / "proxy").exists()
    declared = _cli("align", "--policy", str(checkpoint), "--out", str(tmp_path / "oracle"),
                    "--reward", "format + 0.1*oracle", "--oracle", "--json", *TINY)
    assert declared.returncode == 0, declared.stderr[-3000:]
    assert json.loads(declared.stdout)["oracle_run"] is True


def test_a_checkpoint_from_another_world_is_not_resumed(world: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    logs_dir, checkpoint = world
    out = tmp_path / "run"
    first = _cli("align", "--policy", str(checkpoint), "--out", str(out), "--reward", "format",
                 "--json", *TINY)
    assert first.returncode == 0, first.stderr[-3000:]
    other = tmp_path / "other_logs"
    logs = LoggedSessions.load(logs_dir)
    rows = logs.columns["session"] < logs.num_sessions // 2
    sessions = np.arange(logs.num_sessions) < logs.num_sessions // 2
    LoggedSessions({name: column[sessions] if name in SESSION_COLUMNS else column[rows]
                    for name, column in logs.columns.items()}, logs.header,
                   _catalog=logs.catalog).save(other)
    again = _cli("align", "--policy", str(checkpoint), "--logs", str(other), "--out", str(out),
                 "--reward", "format", "--json", *TINY)
    assert again.returncode == 2 and "was trained in another world" in again.stderr


def _evaluation(true_watch_time: float, proxy: float, sem: float = 10.0) -> Evaluation:
    return Evaluation(users=100, true_watch_time=true_watch_time, true_watch_time_sem=sem,
                      true_engagement=0.0, session_length=10.0, leave_rate=0.5,
                      behaviour_rates={}, proxy_reward=proxy, legality=1.0, diversity=5.0,
                      coverage=0.1, shown_duration_s=30.0, config={})


@pytest.mark.parametrize(("after", "warned"), [
    ((1724.0, 0.646), True),  # the run: the proxy up, the truth far down
    ((2270.0, 0.646), False),  # down by less than two standard errors: noise
    ((1724.0, 0.620), False),  # both down: a bad run, not hacking
    ((2400.0, 0.646), False),  # both up
])
def test_the_result_says_when_the_proxy_rose_while_the_truth_fell(after, warned) -> None:
    result = AlignResult(method="ecpo", reward="pscore", history=[], steps=1,
                         resumed_from_step=0, seconds=0.0, checkpoint=None, world="w",
                         oracle_run=False, config={}, before=_evaluation(2283.0, 0.628),
                         after=_evaluation(*after))
    assert result.proxy_rose_truth_fell is warned
    assert (result.warning() is not None) is warned
    if warned:
        assert "the proxy rose (0.628 -> 0.646) while the true watch time fell (2283 -> 1724" \
            in result.warning()
    assert AlignResult(**{**result.__dict__, "before": None}).proxy_rose_truth_fell is None


def test_the_command_prints_the_warning(monkeypatch: pytest.MonkeyPatch, capsys,
                                        world: tuple[Path, Path], tmp_path: Path) -> None:
    """`align` says on stderr when the proxy rose while the truth fell."""
    hacked = AlignResult(method="ecpo", reward="pscore", history=[{"rewards/proxy": 0.6}],
                         steps=1, resumed_from_step=0, seconds=0.0, checkpoint=None, world="w",
                         oracle_run=False, config={}, before=_evaluation(2283.0, 0.628),
                         after=_evaluation(1724.0, 0.646))
    monkeypatch.setattr(align_command, "align", lambda *args, **kwargs: hacked)
    _, checkpoint = world
    result = run(AlignArgs(policy=str(checkpoint), out=str(tmp_path), json=True))
    assert result["proxy_rose_truth_fell"] is True
    assert capsys.readouterr().err.startswith("warning: the proxy rose (0.628 -> 0.646)")


def test_evaluate_days_prints_the_long_term_figures(world: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    """`onerec-lab evaluate --policy CKPT --days 2`: the long-term truth of 3 users over 2
    days (sessions of at most 3 requests), with its files; a bad horizon is one clear line."""
    _, checkpoint = world
    completed = _cli("evaluate", "--policy", str(checkpoint), "--days", "2", "--users", "3",
                     "--requests", "3", "--json", "--out", str(tmp_path / "days"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    figures = json.loads(completed.stdout)
    assert figures["users"] == 3 and figures["days"] == 2
    assert figures["sessions"] >= 1 and 1 <= figures["active_days"] <= 3
    assert figures["watch_time"] >= figures["watch_time_per_session"] > 0
    assert 0 <= figures["return_rate"] < 1 and 0 <= figures["next_day_retention"] <= 1
    assert (tmp_path / "days" / "evaluation_days.md").is_file()
    refused = _cli("evaluate", "--policy", str(checkpoint), "--days", "100")
    assert refused.returncode != 0 and "days must be in (0, 62]" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_align_judges_the_long_term_truth_before_and_after(world: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    """`--eval-days 1`: the same 3 users judged over a day before and after the run, beside
    the session figures, in the printed result and in align.md."""
    _, checkpoint = world
    training = method_config("ecpo").make_config(max_steps=1, users_per_step=2,
                                                 num_generations=4)
    result = run(AlignArgs(policy=str(checkpoint), out=str(tmp_path), method="ecpo",
                           reward="format", training=training, eval_users=3, eval_requests=2,
                           candidates=10, eval_days=1.0, json=True))
    for name in ("watch_time", "sessions", "active_days", "next_day_retention"):
        assert result[f"horizon_{name}_before"] >= 0 and result[f"horizon_{name}_after"] >= 0
    assert result["before_days"]["users"] == 3 and result["before_days"]["days"] == 1.0
    assert result["horizon_sessions_before"] >= 1
    assert "Over 1 days (OneRec/Days-v0)" in (tmp_path / "align.md").read_text()
