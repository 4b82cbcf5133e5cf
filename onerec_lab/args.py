"""Command-line arguments generated from a dataclass.

Each command owns one `@dataclass` of arguments; this module turns it into an argparse
parser. The help text of a field is the comment written after it in the class body, so the
dataclass stays the single place that documents an option. A field that holds a config
dataclass (a trainer's config, a world's sizes) adds one option per field of that config,
so a config is declared once, where it is used, and every field of it is settable; the
field's metadata may hide fields the command sets itself, give aliases and a flag prefix.
A tuple field with metadata `repeatable` collects every use of its flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, NamedTuple

# Fields that name where a command writes: checked before the command runs (an empty path,
# a file where a folder goes, an unwritable place). A field whose metadata says
# {"output": "file"} names a file.
OUTPUT_FIELDS = ("out", "results")

_FIELD_COMMENT = re.compile(r"^\s*(\w+)\s*:[^#]*#\s*(.+)$")


def field_comments(cls: type) -> dict[str, str]:
    """Map each field name of a dataclass to the comment written after it, in the class or
    in the dataclass it inherits the field from (a subclass's own comment wins)."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            comments.update(_own_comments(klass))
    return comments


def _own_comments(cls: type) -> dict[str, str]:
    """The field comments written in `cls`'s own body."""
    comments: dict[str, str] = {}
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return comments
    last: str | None = None  # the field whose comment a "# ..." line right below continues
    for line in source.splitlines():
        match = _FIELD_COMMENT.match(line)
        stripped = line.strip()
        if match:
            last = match.group(1)
            comments[last] = match.group(2).strip()
        elif last is not None and stripped.startswith("#"):
            comments[last] += " " + stripped.lstrip("#").strip()
        else:
            last = None
    return comments


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); anything else -> (annotation, False)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


class Nested(NamedTuple):
    """How a field that holds a config dataclass becomes options: each field of `cls` is an
    option of its own, except the `hidden` ones (set by the command) and the `fixed` ones
    (values the command imposes); `aliases` give extra flags (field name -> "--flag")."""

    cls: type
    hidden: frozenset[str] = frozenset()
    fixed: Mapping[str, Any] = {}
    aliases: Mapping[str, str] = {}
    prefix: str = ""  # put before every flag: "pareto-" makes --steps --pareto-steps


def nested_options(cls: type, types: Mapping[str, type] | None = None,
                   fixed: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Nested]:
    """The fields of `cls` that hold a config dataclass, as `Nested` (field metadata may
    hold "hidden" and "aliases"); `types` replaces a field's class (e.g. the chosen
    method's config) and `fixed` adds values it imposes."""
    hints = typing.get_type_hints(cls)
    found = {}
    for field in dataclasses.fields(cls):
        nested_cls = (types or {}).get(field.name, _unwrap_optional(hints[field.name])[0])
        if isinstance(nested_cls, type) and dataclasses.is_dataclass(nested_cls):
            imposed = dict((fixed or {}).get(field.name, {}))
            hidden = frozenset(field.metadata.get("hidden", ())) | frozenset(imposed)
            found[field.name] = Nested(nested_cls, hidden, imposed,
                                       dict(field.metadata.get("aliases", {})),
                                       field.metadata.get("prefix", ""))
    return found


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type,
                            nested: Mapping[str, Nested] | None = None) -> None:
    """Add one `--field-name` option per field of `cls` (a dataclass); a field holding a
    config dataclass (`nested_options`) adds one option per field of that config."""
    nested = nested_options(cls) if nested is None else nested
    for field in dataclasses.fields(cls):
        if field.name in nested:
            options = nested[field.name]
            for inner in dataclasses.fields(options.cls):
                if inner.name not in options.hidden:
                    _add_option(parser, options.cls, inner, f"{field.name}.{inner.name}",
                                options.aliases.get(inner.name), options.prefix)
        else:
            _add_option(parser, cls, field, field.name)


def _add_option(parser: argparse.ArgumentParser, cls: type, field: dataclasses.Field,
                dest: str, alias: str | None = None, prefix: str = "") -> None:
    hints = typing.get_type_hints(cls)
    flags = ["--" + prefix + field.name.replace("_", "-"), *([alias] if alias else [])]
    annotation, optional = _unwrap_optional(hints[field.name])
    if field.default is not dataclasses.MISSING:
        default = field.default
    elif field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    else:
        default = None
    help_text = field_comments(cls).get(field.name, "").replace("%", "%%")  # argparse formats it
    if annotation is bool:
        parser.add_argument(
            *flags, dest=dest, action=argparse.BooleanOptionalAction,
            default=default, help=help_text,
        )
        return
    kwargs: dict[str, Any] = {"dest": dest, "default": default, "help": help_text}
    if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
        kwargs["required"] = True
    origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        element = typing.get_args(annotation)[0]
        kwargs.update(nargs="+", type=element)
        if field.metadata.get("repeatable"):  # --plugin a --plugin b: both, not the last
            kwargs.update(action="extend", default=list(default or ()))
    elif annotation in (int, float, str):
        kwargs["type"] = annotation
    elif typing.get_origin(annotation) is typing.Literal:
        choices = typing.get_args(annotation)
        kwargs.update(choices=choices, type=type(choices[0]))
    else:
        raise TypeError(
            f"field {cls.__name__}.{field.name} has type {annotation!r}, which the command "
            "line cannot parse; use int, float, str, bool, a Literal, a tuple or X | None"
        )
    if (optional or "." in dest) and "type" in kwargs and "choices" not in kwargs:
        kwargs["metavar"] = field.name.upper()  # not the nested dest "training.MAX_STEPS"
    parser.add_argument(*flags, **kwargs)


def build_from_namespace(cls: type, namespace: argparse.Namespace,
                         nested: Mapping[str, Nested] | None = None) -> Any:
    """Instantiate the dataclass `cls` (and its nested configs) from the parsed options;
    runs their validation."""
    nested = nested_options(cls) if nested is None else nested
    values = {}
    for field in dataclasses.fields(cls):
        if field.name in nested:
            options = nested[field.name]
            inner = {name.name: _value(namespace, f"{field.name}.{name.name}")
                     for name in dataclasses.fields(options.cls)
                     if name.name not in options.hidden}
            values[field.name] = options.cls(**inner, **options.fixed)
        else:
            values[field.name] = _value(namespace, field.name)
        if field.name in OUTPUT_FIELDS:  # refused before any work, not after it
            from envs.files import check_output  # gymnasium and numpy: not for --help

            check_output(values[field.name], _flag(field.name),
                         field.metadata.get("output", "folder"))
    return cls(**values)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _value(namespace: argparse.Namespace, dest: str) -> Any:
    value = getattr(namespace, dest)
    return tuple(value) if isinstance(value, list) else value
