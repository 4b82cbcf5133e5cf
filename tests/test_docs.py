"""Documentation that runs: every Python and shell example of README.md and rewards/README.md
is executed here, as written, at a tiny size.

Shell commands get tiny options appended (argparse keeps the last value of an option), and
the sizes in Python examples are swapped for tiny ones (`PYTHON_SIZES`); every rule must
still find its text, so an edited example that escapes its tiny size fails here instead of
running for an hour. The examples run in order in one temporary folder, as a reader would
run them (the quickstart's world is reused by the examples after it). A code block whose
first line is `# NAME.py` is a file the reader saves: it is written, not run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.conftest import REPO_ROOT

TINY_WORLD = ("--items 400 --codebook 8 --embedding-steps 20 --log-users 60 --log-requests 4 "
              "--cascade-steps 5 --pretrain-steps 5 --pscore-epochs 1")
TINY_ALIGN = "--steps 1 --users 2 --num-generations 4 --eval-users 2 --eval-requests 1 --candidates 10"
# (pattern a command must match, options appended); the first match wins.
TINY_OPTIONS = (
    (r"^onerec-lab quickstart", f"{TINY_WORLD} --rsft-steps 1 --ecpo-steps 1 "
                                "--num-generations 4 --rl-users 4 --eval-users 4 --eval-requests 2"),
    (r"^onerec-lab align", TINY_ALIGN),
    (r"^onerec-lab reward check --properties", "--examples 5"),
    (r"^onerec-lab reward check", ""),
    (r"^onerec-lab reward fit", "--epochs 1 --pareto-steps 5"),
    (r"^onerec-lab simulate", "--users 30 --requests 3 --items 400"),
    (r"^torchrun .* -- pretrain", "--steps 2 --batch-size 4 --logging-steps 1"),
    (r"^torchrun .* -- align", TINY_ALIGN),
)
# Commands the suite runs elsewhere, or cannot run inside itself, and why.
RUN_ELSEWHERE = (
    (r"^python3 -m venv", "installs into a fresh virtualenv: .ci/run runs README's test "
                          "command verbatim on a clean clone, and it installs what the "
                          "quickstart command installs"),
    (r"^onerec-lab bench alignment", "tests/test_align_bench.py runs this very command "
                                     "(readme_bench_command) with its smoke study"),
)
PYTHON_SIZES = (  # (text in an example, its tiny size)
    ("WorldConfig()", "WorldConfig(items=400, codebook=8, embedding_steps=20, log_users=60, "
                      "log_requests=4, cascade_steps=5, pretrain_steps=5, pscore_epochs=1)"),
    ("EvaluationConfig(users=200)", "EvaluationConfig(users=4, max_requests=2)"),
    ("max_steps=60", "max_steps=1, users_per_step=2, num_generations=4"),
)
# What rewards/README.md's fragments leave to the reader, from the world built before them.
REWARDS_PREAMBLE = """
import numpy as np
from onerec_lab.experiment import open_world

world = open_world("runs/quickstart")
model, catalog, codec = world.pscore, world.catalog, world.pretrained.codec
slates, observation = world.logs.slates[:8], world.logs.contexts(np.arange(8))
"""


class Block(NamedTuple):
    """A fenced code block of a markdown file."""

    language: str
    text: str
    line: int  # where it starts, for failure messages


def code_blocks(path: Path) -> list[Block]:
    blocks, language, lines, start = [], None, [], 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```") and language is None:
            language, lines, start = line[3:].strip(), [], number
        elif line.startswith("```"):
            blocks.append(Block(language, "\n".join(lines) + "\n", start))
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


def commands(block: Block) -> list[str]:
    """The shell commands of a block, one per line (comments dropped)."""
    return [line.split("  #")[0].strip() for line in block.text.splitlines()
            if line.strip() and not line.startswith("#")]


def readme_bench_command() -> list[str]:
    """README's `onerec-lab bench alignment` command, as argv (run by test_align_bench)."""
    found = [command for block in code_blocks(REPO_ROOT / "README.md") if block.language == "bash"
             for command in commands(block) if command.startswith("onerec-lab bench alignment")]
    assert len(found) == 1, found
    return shlex.split(found[0])


def plugin_file() -> str:
    """README's `my_plugin.py`."""
    files = [block.text for block in code_blocks(REPO_ROOT / "README.md")
             if block.text.startswith("# my_plugin.py")]
    assert len(files) == 1
    return files[0]


def argv(command: str) -> list[str]:
    """A README command with its tiny options, run by this Python."""
    for pattern, _ in RUN_ELSEWHERE:
        if re.search(pattern, command):
            return []
    rules = [options for pattern, options in TINY_OPTIONS if re.search(pattern, command)]
    assert rules, f"no tiny size for the README command {command!r}: add a TINY_OPTIONS rule"
    words = shlex.split(command) + shlex.split(rules[0])
    if words[0] == "onerec-lab":
        return [sys.executable, "-m", "onerec_lab.cli", *words[1:]]
    if words[0] == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", *words[1:]]
    raise AssertionError(f"README command {command!r} runs neither onerec-lab nor torchrun")


def tiny(text: str) -> str:
    for example, size in PYTHON_SIZES:
        text = text.replace(example, size)
    return text


def run(args: list[str], folder: Path, what: str) -> str:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run(args, cwd=folder, env=environment, capture_output=True,
                               text=True, timeout=900, check=False)
    assert completed.returncode == 0, f"{what} failed:\n{completed.stderr[-3000:]}"
    return completed.stdout


def run_markdown(path: Path, folder: Path, preamble: str = "") -> dict[str, str]:
    """Run every example of `path` in order in `folder`; what each printed, by example
    (a command, or `path:line` of a Python example)."""
    ran: dict[str, str] = {}
    python = []
    for block in code_blocks(path):
        where = f"{path.name}:{block.line}"
        if block.language == "python" and (name := re.match(r"# (\w+\.py)\n", block.text)):
            (folder / name.group(1)).write_text(block.text)
        elif block.language == "python":
            python.append(tiny(block.text))
            if not preamble:  # README's examples are whole scripts: run each now
                script = folder / f"example_{block.line}.py"
                script.write_text(python.pop())
                ran[where] = run([sys.executable, str(script)], folder, where)
        elif block.language == "bash":
            for command in commands(block):
                args = argv(command)
                if args:
                    ran[command] = run(args, folder, f"{where}: {command}")
    if preamble:  # fragments of one session, after the names they leave to the reader
        script = folder / f"{path.stem}_examples.py"
        script.write_text(preamble + "\n".join(python))
        run([sys.executable, str(script)], folder, f"{path.name}'s Python examples")
    return ran


def test_every_tiny_size_rule_still_finds_its_text() -> None:
    texts = [block.text for path in (REPO_ROOT / "README.md", REPO_ROOT / "rewards" / "README.md")
             for block in code_blocks(path)]
    for example, _ in PYTHON_SIZES:
        assert any(example in text for text in texts), f"no example holds {example!r} any more"
    every = [command for text in texts for command in commands(Block("bash", text, 0))]
    for pattern, _ in TINY_OPTIONS + RUN_ELSEWHERE:
        assert any(re.search(pattern, command) for command in every), pattern


@pytest.mark.heavy
def test_the_readmes_examples_run(tmp_path: Path) -> None:
    ran = run_markdown(REPO_ROOT / "README.md", tmp_path)
    assert any(example.startswith("onerec-lab quickstart") for example in ran)
    api = [output for output in ran.values() if output.startswith("pre-trained")]
    assert len(api) == 1 and "pscore + 0.1*novelty + 0.5*format: true watch time" in api[0]
    # the plugin's reward and method, from a file outside the package
    novelty = json.loads((tmp_path / "runs" / "novelty" / "align.json").read_text())
    assert novelty["reward"] == "pscore + 0.1*novelty + 0.5*format"
    assert "rewards/novelty" in novelty["history"][-1]
    assert json.loads((tmp_path / "runs" / "my_grpo" / "align.json").read_text())[
        "method"] == "my_grpo"
    # "Testing your reward": the contract held on the quickstart world (the command exits 0
    # only then), and the user's one-line test passes under pytest
    assert any("reward check --properties" in example for example in ran)
    checked = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "test_my_reward.py", "--reward-examples", "10"],
                             cwd=tmp_path, capture_output=True,
                             text=True, timeout=600, check=False,
                             env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert checked.returncode == 0 and "1 passed" in checked.stdout, checked.stdout[-2000:]
    run_markdown(REPO_ROOT / "rewards" / "README.md", tmp_path, REWARDS_PREAMBLE)


def test_every_test_the_guarantees_cite_exists() -> None:
    """README's Guarantees name the tests behind each promise: every one must exist (a
    renamed or deleted test would leave a promise unbacked)."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    tests = "".join(path.read_text() for path in (REPO_ROOT / "tests").rglob("test_*.py"))
    cited = re.findall(r"`(?:tests/[\w/]+\.py::)?(test_\w+)`", section)
    files = re.findall(r"`(tests/[\w/]+\.py)", section)
    cases = re.findall(r"`([a-z]+(?:-[a-z]+)+)`", section)
    assert len(cited) >= 8 and len(cases) >= 5
    assert [name for name in cited if f"def {name}(" not in tests] == []
    assert [path for path in files if not (REPO_ROOT / path).is_file()] == []
    table = (REPO_ROOT / "tests" / "bad_inputs" / "test_commands.py").read_text()
    assert [case for case in cases if f'Case("{case}"' not in table] == []


def test_the_property_table_lists_every_property_and_only_real_ones() -> None:
    """rewards/README.md's property table: at least 40 rows, one per property; each kit row
    names a check of `rewards.testing`, each test row a test that exists, and every test of
    the two property files and every kit check has its row."""
    from rewards import testing

    section = (REPO_ROOT / "rewards" / "README.md").read_text().split("## Properties", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]  # no header
    cited = [re.findall(r"`([\w<>]+)`", row.rsplit("|", 2)[1]) for row in rows]
    assert len(rows) >= 40 and all(len(names) == 1 for names in cited), rows
    names = [found[0] for found in cited]
    assert len(set(names)) == len(names)
    files = ("test_reward_properties.py", "test_reward_laws.py")
    defined = {name for file in files for name in
               re.findall(r"^def (test_\w+)\(", (REPO_ROOT / "tests" / file).read_text(), re.M)}
    tests = {name for name in names if name.startswith("test_")}
    assert tests == defined, (sorted(tests - defined), sorted(defined - tests))
    kit = {function.__name__ for function in testing.CONTRACT} | {
        testing.slot_order_invariance.__name__, "monotone_in_<fields>", "bounds_<low>_<high>"}
    assert set(names) - tests == kit
