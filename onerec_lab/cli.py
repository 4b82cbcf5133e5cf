"""`onerec-lab`: the command line of the lab.

Every command is a module under `onerec_lab/commands/` (or a study under `benchmarks/`) with
one arguments dataclass and a function `args -> dict`. The registry below names them;
modules are imported only when their command runs, so `onerec-lab --help` stays fast.

A command whose arguments have a `plugin` field loads the plugins it names, those of
ONEREC_LAB_PLUGINS and those of installed entry points before its options are built
(`onerec_lab.experiment.plugins`), so a plugin's rewards and methods are known to the
options and their help. A command module may define `nested_options(argv) -> dict` to choose
the class of a nested config from the options given (`align` takes the chosen method's),
and `exit_code(result) -> int` to fail on what it found (`reward check --properties`).

Errors (`error_line`): bad input (a ValueError, the lab's error type for it) and a file the
system refuses (OSError) print one line and exit 2; an interrupt exits 130 (a training run
saved its checkpoint first); anything else is a bug and keeps its traceback. Outputs (`--out`,
`--results`) are checked before a command starts (`onerec_lab.args`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from onerec_lab.args import Nested, add_dataclass_arguments, build_from_namespace, nested_options

BAD_INPUT, INTERRUPTED = 2, 130  # exit codes: argparse's for bad options, a shell's for SIGINT
DEBUG_VARIABLE = "ONEREC_LAB_DEBUG"  # set it to see the traceback behind a one-line error


class Command(NamedTuple):
    """Where a command lives: `module.<function>(module.<args_class>(...)) -> dict`."""

    module: str
    args_class: str
    summary: str
    function: str = "run"


# Command path (a tuple of words, e.g. ("bench", "env")) -> where it lives.
COMMANDS: dict[tuple[str, ...], Command] = {
    ("quickstart",): Command(
        "onerec_lab.commands.quickstart", "QuickstartArgs",
        "the main job on the embedded synthetic world, end to end",
    ),
    ("simulate",): Command(
        "onerec_lab.commands.simulate", "SimulateArgs",
        "log sessions of a logging policy (random, popular) in the simulator",
    ),
    ("bench", "env"): Command(
        "benchmarks.env_throughput", "BenchEnvArgs",
        "simulator throughput: native vector env against SyncVectorEnv",
    ),
    ("bench", "alignment"): Command(
        "benchmarks.alignment", "AlignmentBenchArgs",
        "alignment study: strategies x reward designs, proxy against truth, GRPO vs ECPO",
    ),
    ("tokenize",): Command(
        "onerec_lab.commands.tokenize", "TokenizeArgs",
        "learn semantic IDs (residual k-means) for a catalog and report their quality",
    ),
    ("pretrain",): Command(
        "onerec_lab.commands.pretrain", "PretrainArgs",
        "pre-train OneRec by next-token prediction on logged sessions (or Beauty histories)",
    ),
    ("reward", "fit"): Command(
        "onerec_lab.commands.reward", "RewardFitArgs",
        "fit the P-score on logged sessions and search its fusion weights (Pareto)", "run_fit",
    ),
    ("reward", "check"): Command(
        "onerec_lab.commands.reward", "RewardCheckArgs",
        "score logged slates with a reward spec and report the mean of each component",
        "run_check",
    ),
    ("align",): Command(
        "onerec_lab.commands.align", "AlignArgs",
        "post-train OneRec (RSFT, GRPO, ECPO, GBPO, TRL loss types, feedback RL, DPO, ...), "
        "before/after",
    ),
    ("evaluate",): Command(
        "onerec_lab.commands.evaluate", "EvaluateArgs",
        "evaluate a policy (OneRec checkpoint or baseline) in the simulator with the oracle",
    ),
    ("evaluate-offline",): Command(
        "onerec_lab.commands.evaluate_offline", "EvaluateOfflineArgs",
        "train OneRec or SASRec on Amazon Beauty and rank with TIGER's protocol (Recall/NDCG)",
    ),
}


def _load(command: Command) -> tuple[Any, Any]:
    module = importlib.import_module(command.module)
    return getattr(module, command.args_class), getattr(module, command.function)


def _human_printer(command: Command) -> Callable[[dict[str, Any]], None] | None:
    """A command's own readable printout (`print_human(result)`), if it has one."""
    return getattr(importlib.import_module(command.module), "print_human", None)


def usage() -> str:
    """The top-level help: every command with its summary (no command module is imported)."""
    width = max(len(" ".join(path)) for path in COMMANDS)
    lines = [
        "usage: onerec-lab COMMAND [options]   (onerec-lab COMMAND --help for its options)",
        "",
        "An RL environment and alignment lab for OneRec-style generative recommenders.",
        "",
        "commands:",
        *(f"  {' '.join(path):<{width}}  {command.summary}" for path, command in COMMANDS.items()),
    ]
    return "\n".join(lines)


def find_command(argv: list[str]) -> tuple[tuple[str, ...], list[str]] | None:
    """Split argv into the longest command path it starts with and the remaining options."""
    for length in range(min(len(argv), max(map(len, COMMANDS))), 0, -1):
        if tuple(argv[:length]) in COMMANDS:
            return tuple(argv[:length]), argv[length:]
    return None


def nested(path: tuple[str, ...], options: list[str]) -> dict[str, Nested]:
    """The nested configs of a command's arguments (the module may choose their classes)."""
    command = COMMANDS[path]
    args_class, _ = _load(command)
    choose = getattr(importlib.import_module(command.module), "nested_options", None)
    return nested_options(args_class, **(choose(options) if choose else {}))


def build_parser(path: tuple[str, ...], configs: dict[str, Nested] | None = None
                 ) -> argparse.ArgumentParser:
    """The parser of one command; only that command's module is imported."""
    command = COMMANDS[path]
    parser = argparse.ArgumentParser(
        prog="onerec-lab " + " ".join(path), description=command.summary
    )
    args_class, _ = _load(command)
    add_dataclass_arguments(parser, args_class, nested(path, []) if configs is None else configs)
    return parser


def print_result(result: dict[str, Any], as_json: bool) -> None:
    """Print a command's result: one JSON object, or a readable table."""
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=True, header_style="bold")
    table.add_column("field")
    table.add_column("value")
    for key, value in result.items():
        table.add_row(key, json.dumps(value, default=str) if not isinstance(value, str) else value)
    Console().print(table)


def error_line(error: BaseException) -> tuple[str, int] | None:
    """The one-line message and exit code of an error the lab reports without a traceback:
    bad input (ValueError, the lab's error type for it; exit 2), a file the system refused
    (OSError; exit 2), an interrupt (exit 130: a training run saved its checkpoint first).
    None for anything else, a bug, whose traceback is kept."""
    guards = sys.modules.get("trainers.guards")  # loaded by any command that trains
    if guards is not None and isinstance(error, guards.TrainingInterrupted):
        return _one_line(str(error)), INTERRUPTED
    if isinstance(error, KeyboardInterrupt):
        return "interrupted; nothing more was written", INTERRUPTED
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return _one_line(f"{where}{error.strerror or error}"), BAD_INPUT
    if isinstance(error, ValueError):
        return _one_line(str(error)), BAD_INPUT
    return None


def _one_line(message: str) -> str:
    """A message's first line (a reward spec's error draws a caret below it)."""
    lines = [line for line in message.splitlines() if line.strip()]
    return lines[0].strip() if lines else message


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `onerec-lab` console script."""
    argv = sys.argv[1:] if argv is None else argv
    found = find_command(argv)
    if found is None:
        print(usage(), file=sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    path, options = found
    args_class, run = _load(COMMANDS[path])
    try:
        from onerec_lab.experiment.plugins import load_command_plugins  # loads the lab: lazily

        load_command_plugins(args_class, options)
        configs = nested(path, options)
        namespace = build_parser(path, configs).parse_args(options)
        args = build_from_namespace(args_class, namespace, configs)
        result = run(args)
    except (Exception, KeyboardInterrupt) as error:
        reported = error_line(error)
        if reported is None or os.environ.get(DEBUG_VARIABLE):
            raise  # a bug, not bad input: its traceback is what a report needs
        message, code = reported
        print(f"onerec-lab {' '.join(path)}: error: {message}", file=sys.stderr)
        return code
    as_json = getattr(args, "json", False)
    human = _human_printer(COMMANDS[path])
    if human is not None and not as_json:
        human(result)
    else:
        print_result(result, as_json)
    exit_code = getattr(importlib.import_module(COMMANDS[path].module), "exit_code", None)
    return 0 if exit_code is None else exit_code(result)  # e.g. 1: a checked property failed


if __name__ == "__main__":
    sys.exit(main())
