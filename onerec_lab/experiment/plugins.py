"""Plugins: a researcher's own rewards and methods, loaded from outside the package.

A plugin is a Python file or an importable module that registers rewards
(`rewards.register`) and alignment methods (`onerec_lab.experiment.register_method`) when
imported. Three ways in, all loaded by `load_plugins`:

- `--plugin FILE_OR_MODULE` (repeatable) on every command that builds a reward or a method;
- the environment variable ONEREC_LAB_PLUGINS (entries separated by `os.pathsep`, ':' here);
- entry points of installed packages, groups `onerec_lab.rewards` and `onerec_lab.methods`
  (`[project.entry-points."onerec_lab.rewards"] mine = "my_package.rewards"`).

Each plugin is imported once per process. Benchmark worker processes load the same plugins
(`loaded_plugins()` is what they are given). A plugin that fails to import is one clear
error naming the file and the line; a name registered twice is refused by the registry,
naming both origins.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

ENVIRONMENT_VARIABLE = "ONEREC_LAB_PLUGINS"
ENTRY_POINT_GROUPS = ("onerec_lab.rewards", "onerec_lab.methods")

_LOADED: dict[str, ModuleType] = {}  # plugin (resolved path or module name) -> its module
_REQUESTED: list[str] = []  # plugins named by --plugin, in order (for worker processes)
_ENTRY_POINTS_LOADED = False


class PluginError(ValueError):
    """A plugin that could not be loaded; the message names the file and the line."""


def load_plugins(plugins: Iterable[str] = (), environment: bool = True,
                 entry_points: bool = True) -> list[str]:
    """Import `plugins` (files or module names), then those of ONEREC_LAB_PLUGINS and of the
    installed entry points; each at most once per process. Returns the plugins imported by
    this call."""
    global _ENTRY_POINTS_LOADED
    # Registering the built-in methods first lets a plugin's name clash be reported.
    importlib.import_module("onerec_lab.experiment.methods")
    imported = []
    for plugin in plugins:
        imported += _load(plugin)
        if plugin not in _REQUESTED:  # only a plugin that loaded: workers load it too
            _REQUESTED.append(plugin)
    if environment:
        for plugin in filter(None, os.environ.get(ENVIRONMENT_VARIABLE, "").split(os.pathsep)):
            imported += _load(plugin.strip())
    if entry_points and not _ENTRY_POINTS_LOADED:
        _ENTRY_POINTS_LOADED = True
        for group in ENTRY_POINT_GROUPS:
            for entry in importlib.metadata.entry_points(group=group):
                imported += _load(entry.value.split(":")[0], f"entry point {entry.name!r} "
                                                              f"({group})")
    return imported


def plugins_named(options: list[str]) -> list[str]:
    """The plugins a command line names (`--plugin A --plugin B`, or `--plugin A B`)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--plugin", action="extend", nargs="+", default=[])
    return parser.parse_known_args(options)[0].plugin


def load_command_plugins(args_class: type, options: list[str]) -> None:
    """For a command (or study) whose arguments have a `plugin` field: load the plugins its
    command line names, then those of the environment and of installed entry points, before
    its options are built (so a plugin's rewards and methods are known to them)."""
    if "plugin" in {field.name for field in dataclasses.fields(args_class)}:
        load_plugins(plugins_named(options))


def loaded_plugins() -> tuple[str, ...]:
    """The plugins named in this process (--plugin), for a worker process to load too."""
    return tuple(_REQUESTED)


def _key(plugin: str) -> str:
    return str(Path(plugin).resolve()) if _is_file(plugin) else plugin


def _is_file(plugin: str) -> bool:
    return plugin.endswith(".py") or os.sep in plugin


def _load(plugin: str, source: str | None = None) -> list[str]:
    """Import one plugin unless it is loaded already; [plugin] when imported now."""
    key = _key(plugin)
    if key in _LOADED:
        return []
    source = source or f"plugin {plugin}"
    try:
        _LOADED[key] = _import_file(Path(key)) if _is_file(plugin) else importlib.import_module(
            plugin)
    except PluginError:
        raise
    except Exception as error:
        raise PluginError(f"{source} failed to import: {_where(error, key)}"
                          f"{type(error).__name__}: {error}") from error
    return [plugin]


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise PluginError(f"plugin {path} does not exist; pass a Python file or an "
                          "importable module name")
    # The same name in every process, so a worker can unpickle the plugin's classes.
    name = f"onerec_lab_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin {path} is not a Python file; pass a .py file or a module name")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so pickling and dataclasses find the plugin's classes
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _where(error: BaseException, plugin: str) -> str:
    """'FILE, line N: ' of the deepest frame inside the plugin (or of a syntax error)."""
    if isinstance(error, SyntaxError) and error.filename:
        return f"{error.filename}, line {error.lineno}: "
    frames = traceback.extract_tb(error.__traceback__)
    inside = [frame for frame in frames if frame.filename == plugin
              or Path(frame.filename).stem == plugin.rsplit(".", 1)[-1]]
    frame = (inside or frames or [None])[-1]
    return "" if frame is None else f"{frame.filename}, line {frame.lineno}: "
