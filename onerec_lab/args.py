"""Command-line arguments generated from a dataclass.

Each command owns one `@dataclass` of arguments; this module turns it into an argparse
parser. The help text of a field is the comment written after it in the class body, so the
dataclass stays the single place that documents an option.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from typing import Any

_FIELD_COMMENT = re.compile(r"^\s*(\w+)\s*:[^#]*#\s*(.+)$")


def field_comments(cls: type) -> dict[str, str]:
    """Map each field name of a dataclass to the comment written after it."""
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


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one `--field-name` option per field of `cls` (a dataclass)."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        annotation, optional = _unwrap_optional(hints[field.name])
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = None
        help_text = comments.get(field.name, "")
        if annotation is bool:
            parser.add_argument(
                flag, dest=field.name, action=argparse.BooleanOptionalAction,
                default=default, help=help_text,
            )
            continue
        kwargs: dict[str, Any] = {"dest": field.name, "default": default, "help": help_text}
        if default is dataclasses.MISSING or (
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        ):
            kwargs["required"] = True
        origin = typing.get_origin(annotation)
        if origin in (tuple, list):
            element = typing.get_args(annotation)[0]
            kwargs.update(nargs="+", type=element)
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
        if optional and "type" in kwargs:
            kwargs["metavar"] = field.name.upper()
        parser.add_argument(flag, **kwargs)


def build_from_namespace(cls: type, namespace: argparse.Namespace) -> Any:
    """Instantiate the dataclass `cls` from the parsed options (runs its validation)."""
    values = {}
    for field in dataclasses.fields(cls):
        value = getattr(namespace, field.name)
        if isinstance(value, list):
            value = tuple(value)
        values[field.name] = value
    return cls(**values)
