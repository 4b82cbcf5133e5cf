"""Every command fed bad input: a one-line error naming the input, exit 2, no file touched.

Each case is a command line with placeholders for the lab's files (`lab.py`: worlds A and B
of different catalogs, damaged and foreign files). The command runs in this process
(`onerec_lab.cli.main`); the case asserts the exit code, that stderr's last line is the
command's one-line error and matches `match` (which names the offending input), that no
traceback was printed, and that every file of the lab is byte-identical afterwards.
"""

from __future__ import annotations

import importlib
import re
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest

from onerec_lab.cli import main
from tests.bad_inputs.lab import build_damaged, build_world, snapshot

SPEC_NESTING = "(" * 400 + "format" + ")" * 400


class Case(NamedTuple):
    name: str
    argv: str  # the options after `onerec-lab`, with {placeholders} (split on spaces)
    match: str  # a regex the error line must contain (it names the input)
    code: int = 2


CASES = [
    # the command line itself
    Case("unknown-command", "frobnicate", r"usage: onerec-lab COMMAND"),
    Case("unknown-option", "simulate --frobnicate 1", r"unrecognized arguments: --frobnicate"),
    # simulate
    Case("simulate-users-zero", "simulate --users 0", r"--users must be >= 1, got 0"),
    Case("simulate-users-negative", "simulate --users -5", r"--users must be >= 1, got -5"),
    Case("simulate-users-huge", "simulate --users 2147483648 --out {tmp}/x",
         r"simulating 2147483648 users .* needs about .* of memory.*lower --users"),
    Case("simulate-items-huge", "simulate --items 100000000000 --users 1",
         r"needs about .* of memory"),
    Case("simulate-items-zero", "simulate --items 0", r"--items must be >= 1, got 0"),
    Case("simulate-requests-text", "simulate --requests ten", r"--requests: invalid int value: 'ten'"),
    Case("simulate-policy-unknown", "simulate --policy best", r"--policy: invalid choice: 'best'"),
    Case("simulate-slate-zero", "simulate --slate-size 0", r"--slate-size must be >= 1"),
    Case("simulate-batch-zero", "simulate --batch-size 0", r"--batch-size must be >= 1"),
    Case("simulate-out-empty", "simulate --users 2 --out=", r"--out is empty"),
    Case("simulate-out-file", "simulate --users 2 --out {bad}/notes.txt",
         r"--out .*notes.txt is a file, not a folder"),
    Case("simulate-out-unwritable", "simulate --users 2 --out /proc/onerec/logs",
         r"--out /proc/onerec/logs is not writable"),
    Case("simulate-kuairand-missing", "simulate --users 2 --kuairand {tmp}/nowhere",
         r"nowhere"),
    # tokenize
    Case("tokenize-items-below-codebook", "tokenize --items 1", r"items \(1\) must be >= codebook"),
    Case("tokenize-codebook-zero", "tokenize --codebook 0", r"codebook must be >= 1"),
    Case("tokenize-out-folder", "tokenize --items 300 --out {tmp}",
         r"--out .* is a folder, not a file"),
    Case("tokenize-out-empty", "tokenize --items 300 --out=", r"--out is empty"),
    Case("tokenize-data-missing", "tokenize --data {tmp}/Beauty.txt", r"Beauty.txt does not exist"),
    Case("tokenize-data-folder", "tokenize --data {tmp}", r"is a folder; pass the Beauty.txt"),
    Case("tokenize-data-malformed", "tokenize --data {bad}/malformed.txt", r"malformed.txt:2: "),
    # pretrain
    Case("pretrain-no-data", "pretrain --out {tmp}/p", r"give exactly one of --logs"),
    Case("pretrain-two-data", "pretrain --out {tmp}/p --logs {A_logs} --data {bad}/malformed.txt",
         r"give exactly one of --logs"),
    Case("pretrain-out-empty", "pretrain --out= --logs {A_logs}", r"--out is empty"),
    Case("pretrain-out-file", "pretrain --out {bad}/notes.txt --logs {A_logs}",
         r"notes.txt is a file, not a folder"),
    Case("pretrain-preset-unknown", "pretrain --out {tmp}/p --logs {A_logs} --preset 7B",
         r"unknown preset '7B'"),
    Case("pretrain-logs-missing", "pretrain --out {tmp}/p --logs {tmp}/nowhere", r"nowhere"),
    Case("pretrain-logs-empty-folder", "pretrain --out {tmp}/p --logs {bad}/empty_folder",
         r"empty_folder"),
    Case("pretrain-logs-truncated", "pretrain --out {tmp}/p --logs {bad}/truncated_logs",
         r"truncated_logs/sessions.npz is not a readable"),
    Case("pretrain-logs-foreign", "pretrain --out {tmp}/p --logs {bad}/foreign_logs",
         r"foreign_logs/sessions.npz is not a readable"),
    Case("pretrain-codec-other-catalog", "pretrain --out {tmp}/p --logs {A_logs} --codec {B_codec}",
         r"codec .*B/logs/codec.safetensors was built for another catalog"),
    Case("pretrain-codec-missing", "pretrain --out {tmp}/p --logs {A_logs} --codec {tmp}/c",
         r"codec .*/c does not exist"),
    Case("pretrain-codec-garbage", "pretrain --out {tmp}/p --logs {A_logs} --codec {bad}/garbage.pt",
         r"garbage.pt is not a readable"),
    Case("pretrain-steps-zero", "pretrain --out {tmp}/p --logs {A_logs} --max-steps 0",
         r"max_steps must be >= 1"),
    Case("pretrain-data-folder", "pretrain --out {tmp}/p --data {tmp}", r"is a folder"),
    Case("pretrain-resume-other-logs", "pretrain --out {A_pretrained} --logs {B_logs} --max-steps 3",
         r"another catalog|other"),
    Case("pretrain-diverges", "pretrain --out {tmp}/p --logs {A_logs} --max-steps 3 "
         "--learning-rate 1e12 --warmup-steps 0 --per-device-train-batch-size 4",
         r"diverged at step"),
    Case("pretrain-learning-rate-nan", "pretrain --out {tmp}/p --logs {A_logs} --learning-rate nan",
         r"learning_rate"),
    # reward fit
    Case("fit-logs-missing", "reward fit --logs {tmp}/nowhere --out {tmp}/f", r"nowhere"),
    Case("fit-out-empty", "reward fit --logs {A_logs} --out=", r"--out is empty"),
    Case("fit-out-file", "reward fit --logs {A_logs} --out {A_codec}",
         r"codec.safetensors is a file, not a folder"),
    Case("fit-epochs-zero", "reward fit --logs {A_logs} --out {tmp}/f --epochs 0",
         r"epochs must be >= 1"),
    Case("fit-logs-truncated", "reward fit --logs {bad}/truncated_logs --out {tmp}/f",
         r"truncated_logs/sessions.npz is not a readable"),
    # reward check
    Case("check-spec-empty", "reward check --logs {A_logs} --spec=", r"empty reward spec"),
    Case("check-spec-nan", "reward check --logs {A_logs} --spec nan*format",
         r"nan is not a weight"),
    Case("check-spec-dangling", "reward check --logs {A_logs} --spec pscore+",
         r"found the end of the spec"),
    Case("check-spec-unknown", "reward check --logs {A_logs} --spec happiness",
         r"happiness"),
    Case("check-spec-product", "reward check --logs {A_logs} --spec pscore*format",
         r"cannot multiply two rewards"),
    Case("check-spec-deep", "reward check --logs {A_logs} --spec " + SPEC_NESTING,
         r"nest|deep"),
    Case("check-spec-resource", "reward check --logs {A_logs} --spec business(format,catalog=1)",
         r"catalog"),
    Case("check-pscore-other-catalog", "reward check --logs {A_logs} --spec pscore "
         "--pscore {B_pscore}", r"B/logs/pscore.* in another world"),
    Case("check-pscore-truncated", "reward check --logs {A_logs} --spec pscore "
         "--pscore {bad}/truncated_pscore", r"truncated_pscore.*not a readable"),
    Case("check-pscore-pickle", "reward check --logs {A_logs} --spec pscore "
         "--pscore {bad}/pickle_pscore", r"pickle_pscore.*not a readable"),
    Case("check-pscore-unknown-key", "reward check --logs {A_logs} --spec pscore "
         "--pscore {bad}/unknown_key_pscore", r"unknown_key_pscore.*surprise"),
    Case("check-pscore-missing", "reward check --logs {A_logs} --spec pscore "
         "--pscore {tmp}/nowhere", r"nowhere"),
    Case("check-batch-zero", "reward check --logs {A_logs} --spec format --batch-size 0",
         r"--batch-size must be >= 1"),
    Case("check-plugin-missing", "reward check --logs {A_logs} --spec format "
         "--plugin {tmp}/plugin.py", r"plugin .*plugin.py does not exist"),
    Case("check-plugin-broken", "reward check --logs {A_logs} --spec format "
         "--plugin {bad}/broken_plugin.py", r"broken_plugin.py.*line 1"),
    # evaluate
    Case("evaluate-policy-missing", "evaluate --policy {tmp}/ckpt.pt --users 2",
         r"--policy '.*ckpt.pt' is neither a checkpoint"),
    Case("evaluate-baseline-no-logs", "evaluate --policy popular --users 2",
         r"--policy popular needs --logs"),
    Case("evaluate-other-world", "evaluate --policy {A_ckpt} --logs {B_logs} --users 2",
         r"checkpoint.pt was trained in another world"),
    Case("evaluate-other-world-by-record", "evaluate --policy {B_pretrained} --logs {A_logs} "
         "--users 2", r"was trained in another world"),
    Case("evaluate-truncated", "evaluate --policy {bad}/truncated.pt --users 2",
         r"truncated.pt is not a readable"),
    Case("evaluate-empty-file", "evaluate --policy {bad}/empty.pt --users 2",
         r"empty.pt is not a readable"),
    Case("evaluate-garbage", "evaluate --policy {bad}/garbage.pt --users 2",
         r"garbage.pt is not a readable"),
    Case("evaluate-pickle", "evaluate --policy {bad}/pickle.pt --users 2", r"pickle.pt"),
    Case("evaluate-text-file", "evaluate --policy {bad}/notes.txt --users 2", r"notes.txt"),
    Case("evaluate-sessions-file", "evaluate --policy {A_logs}/sessions.npz --users 2",
         r"sessions.npz is a logged-sessions file"),
    Case("evaluate-nan-weights", "evaluate --policy {bad}/nan.pt --logs {A_logs} --users 2",
         r"nan.pt.*not finite|nan.pt.*non-finite"),
    Case("evaluate-huge-config", "evaluate --policy {bad}/huge.pt --logs {A_logs} --users 2",
         r"huge.pt"),
    Case("evaluate-folder-without-checkpoint", "evaluate --policy {bad}/empty_folder --users 2",
         r"empty_folder is a folder without checkpoint.pt"),
    Case("evaluate-users-zero", "evaluate --policy popular --logs {A_logs} --users 0",
         r"--users must be >= 1"),
    Case("evaluate-out-file", "evaluate --policy popular --logs {A_logs} --out {bad}/notes.txt",
         r"notes.txt is a file, not a folder"),
    Case("evaluate-reward-product", "evaluate --policy popular --logs {A_logs} "
         "--reward pscore*pscore", r"cannot multiply two rewards"),
    Case("evaluate-no-cascade", "evaluate --policy cascade --logs {A_logs} --users 2",
         r"has no cascade"),
    Case("evaluate-cascade-missing", "evaluate --policy cascade:{tmp}/c.pt --logs {A_logs} "
         "--users 2", r"c.pt"),
    Case("evaluate-pscore-other-catalog", "evaluate --policy popular --logs {A_logs} --users 2 "
         "--pscore {B_pscore}", r"B/logs/pscore.* in another world"),
    # align
    Case("align-method-unknown", "align --policy {A_ckpt} --out {tmp}/a --method ppo",
         r"ppo"),
    Case("align-policy-missing", "align --policy {tmp}/ckpt.pt --out {tmp}/a",
         r"ckpt.pt does not exist"),
    Case("align-other-world", "align --policy {A_ckpt} --logs {B_logs} --out {tmp}/a",
         r"checkpoint.pt was trained in another world"),
    Case("align-out-empty", "align --policy {A_ckpt} --out=", r"--out is empty"),
    Case("align-out-file", "align --policy {A_ckpt} --out {bad}/notes.txt",
         r"notes.txt is a file, not a folder"),
    Case("align-truth-in-proxy", "align --policy {A_ckpt} --out {tmp}/a --reward oracle",
         r"reads the simulator's truth"),
    Case("align-steps-zero", "align --policy {A_ckpt} --out {tmp}/a --steps 0",
         r"max_steps must be >= 1"),
    Case("align-sessions-file", "align --policy {A_logs}/sessions.npz --out {tmp}/a",
         r"sessions.npz is a logged-sessions file"),
    Case("align-truncated", "align --policy {bad}/truncated.pt --out {tmp}/a",
         r"truncated.pt is not a readable"),
    Case("align-learning-rate-negative", "align --policy {A_ckpt} --out {tmp}/a "
         "--learning-rate -1", r"learning_rate"),
    Case("align-pscore-other-catalog", "align --policy {A_ckpt} --out {tmp}/a --steps 1 "
         "--pscore {B_pscore} --eval-users 1", r"B/logs/pscore.* in another world"),
    Case("align-resume-other-start", "align --policy {A_aligned} --out {A_aligned}",
         r"continues a run that started from another policy"),
    Case("align-resume-other-logs", "align --policy {B_ckpt} --logs {B_logs} --out {A_aligned}",
         r"trained in another world"),
    # evaluate-offline
    Case("offline-data-missing", "evaluate-offline --data {tmp}/Beauty.txt",
         r"Beauty.txt does not exist"),
    Case("offline-data-folder", "evaluate-offline --data {tmp}", r"is a folder"),
    Case("offline-data-malformed", "evaluate-offline --data {bad}/malformed.txt",
         r"malformed.txt:2: "),
    Case("offline-model-unknown", "evaluate-offline --model bert4rec", r"--model: invalid choice"),
    # quickstart
    Case("quickstart-out-empty", "quickstart --out=", r"--out is empty"),
    Case("quickstart-out-file", "quickstart --out {bad}/notes.txt",
         r"notes.txt is a file, not a folder"),
    Case("quickstart-items-below-codebook", "quickstart --out {tmp}/q --items 10",
         r"items \(10\) must be at least twice codebook"),
    Case("quickstart-log-users-zero", "quickstart --out {tmp}/q --log-users 0",
         r"log_users must be >= 1"),
    Case("quickstart-items-huge", "quickstart --out {tmp}/q --items 100000000000 --codebook 2",
         r"needs about .* of memory"),
    # benchmarks on the command line
    Case("bench-env-users-zero", "bench env --users 0", r"users"),
    Case("bench-alignment-preset", "bench alignment --preset huge", r"--preset: invalid choice"),
    Case("bench-alignment-results-file", "bench alignment --preset smoke --results "
         "{bad}/notes.txt", r"--results .*notes.txt is a file, not a folder"),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lab")
    a, b = build_world(root / "A", 1), build_world(root / "B", 2)
    aligned = root / "A" / "aligned"
    code = main(["align", "--policy", str(a.pretrained.checkpoint), "--out", str(aligned),
                 "--steps", "1", "--users", "2", "--num-generations", "4", "--eval-users", "1",
                 "--eval-requests", "1", "--candidates", "10", "--json"])
    assert code == 0
    (root / "cwd").mkdir()
    (root / "cwd" / "popular").write_text("a file named like a baseline\n")
    return {"root": root, "bad": build_damaged(root / "bad", a), "A_logs": a.logs,
            "A_ckpt": a.pretrained.checkpoint, "A_pretrained": a.pretrained.folder,
            "A_codec": a.codec, "A_aligned": aligned, "B_logs": b.logs,
            "B_ckpt": b.pretrained.checkpoint, "B_pretrained": b.pretrained.folder,
            "B_codec": b.codec, "B_pscore": b.pscore}


def test_the_table_is_large_and_named_once() -> None:
    assert len(CASES) >= 80
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_clear_line(case: Case, lab: dict[str, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(lab["root"] / "cwd")
    argv = [part.format(tmp=tmp_path, **lab) for part in case.argv.split(" ")]
    before = snapshot(lab["root"])
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    errors = capsys.readouterr().err
    assert code == case.code, errors
    assert "Traceback" not in errors
    if case.name == "unknown-command":  # the answer is the list of commands
        assert re.search(case.match, errors), errors
    else:
        last = errors.strip().splitlines()[-1] if errors.strip() else ""
        assert last.startswith("onerec-lab "), errors
        assert re.search(case.match, last), errors
    assert snapshot(lab["root"]) == before


def test_new_logs_over_old_leave_the_old_codec_and_pscore_which_are_then_refused(
        lab: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`simulate --out OLD_LOGS` with another catalog keeps the folder's codec and P-score
    (never deleted) and says so; `pretrain` and `reward check` then refuse them, naming them."""
    logs = tmp_path / "logs"
    shutil.copytree(lab["A_logs"], logs)
    kept = snapshot(logs / "pscore") | {"codec": snapshot(logs)["codec.safetensors"]}
    assert main(["simulate", "--users", "3", "--requests", "2", "--items", "400",
                 "--catalog-seed", "7", "--out", str(logs), "--json"]) == 0
    note = capsys.readouterr().err
    assert "codec.safetensors, pscore/ of another catalog" in note
    assert snapshot(logs / "pscore") | {"codec": snapshot(logs)["codec.safetensors"]} == kept
    assert main(["pretrain", "--logs", str(logs), "--out", str(tmp_path / "p")]) == 2
    assert "codec.safetensors was built for another catalog" in capsys.readouterr().err
    assert main(["reward", "check", "--logs", str(logs), "--spec", "pscore"]) == 2
    assert re.search(r"logs/pscore was fitted in another world \(catalog \w+\) than the logs",
                     capsys.readouterr().err)
    assert not (tmp_path / "p" / "checkpoint.pt").exists()


@pytest.mark.parametrize("study", ["hacking", "ablations", "stability", "legality", "codebook",
                                   "scaling", "speed", "env", "tokenizer", "pscore"])
def test_a_study_answers_bad_input_in_one_line_too(study: str, lab: dict[str, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m benchmarks.<study>` shares the command line's error handling."""
    module = importlib.import_module(f"benchmarks.{study}")
    before = snapshot(lab["root"])
    assert module.main(["--results", str(lab["bad"] / "notes.txt")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == [f"python -m benchmarks.{study}: error: --results "
                      f"{lab['bad'] / 'notes.txt'} is a file, not a folder; give a folder path"]
    assert snapshot(lab["root"]) == before
