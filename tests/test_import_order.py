"""Imports only point down the layers: envs <- policies <- rewards <- trainers <- the
experiment layer <- commands, benchmarks (DESIGN.md). Every module's imports are parsed (no
module is run), so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

# Package (or module path prefix) -> its rank; a module may import ranks <= its own.
LAYERS = {
    "envs": 0,
    "policies": 1,
    "rewards": 2,
    "rewards.testing": 4,  # the property kit: checks a plugin's reward, so loads plugins
    "trainers": 3,
    "onerec_lab.experiment": 4,
    "onerec_lab.args": 4,  # the dataclass -> options helper the layer's users share
    "onerec_lab": 4,  # the package's __init__
    "onerec_lab.commands": 5,
    "onerec_lab.cli": 5,
    "benchmarks": 5,
}
COMMANDS = "onerec_lab.commands"


def layer(module: str) -> tuple[str, int] | None:
    """The longest LAYERS prefix of a dotted module name, and its rank (None: not ours)."""
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix, LAYERS[prefix]
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> list[tuple[str, int]]:
    """(module, line) of every absolute import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
    return found


def violations() -> list[str]:
    problems = []
    for package in {prefix.split(".")[0] for prefix in LAYERS}:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            source = module_name(path)
            source_layer = layer(source)
            assert source_layer is not None, source
            for target, line in imported(path):
                target_layer = layer(target)
                if target_layer is None:
                    continue
                where = f"{path.relative_to(REPO_ROOT)}:{line} imports {target}"
                if target_layer[1] > source_layer[1]:
                    problems.append(f"{where}: up the order ({source_layer[0]} is below "
                                    f"{target_layer[0]})")
                elif target_layer[0] == COMMANDS and (
                        source_layer[0] == "benchmarks" or source.startswith(COMMANDS + ".")):
                    problems.append(f"{where}: commands are clients, not libraries")
    return problems


def test_every_import_points_down_the_layers() -> None:
    assert violations() == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The parser and the ranks catch what they must (a check that cannot fail is no check)."""
    path = tmp_path / "bad.py"
    path.write_text("import os\nfrom trainers.online import OnlineTrainer\n"
                    "def f():\n    from onerec_lab.commands import align\n")
    assert imported(path) == [("os", 1), ("trainers.online", 2), ("onerec_lab.commands", 4)]
    assert layer("envs.logs") == ("envs", 0)
    assert layer("onerec_lab.experiment.world") == ("onerec_lab.experiment", 4)
    assert layer("onerec_lab.commands.align") == ("onerec_lab.commands", 5)
    assert layer("torch") is None
