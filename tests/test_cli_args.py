"""The argparse-from-dataclass helper behind every `onerec-lab` command."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

import pytest

from onerec_lab.args import add_dataclass_arguments, build_from_namespace, field_comments


@dataclass
class ExampleArgs:
    steps: int = 10  # how many steps to run
    rate: float = 0.5  # a rate
    name: str | None = None  # an optional name
    sizes: tuple[int, ...] = (1, 2)  # one size per level
    mode: Literal["beam", "sampling"] = "beam"  # how to roll out
    verbose: bool = False  # print more

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


def parse(argv: list[str]) -> ExampleArgs:
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, ExampleArgs)
    return build_from_namespace(ExampleArgs, parser.parse_args(argv))


def test_defaults_and_every_kind_of_option() -> None:
    assert parse([]) == ExampleArgs()
    parsed = parse(
        ["--steps", "3", "--rate", "0.1", "--name", "x", "--sizes", "4", "5", "6",
         "--mode", "sampling", "--verbose"]
    )
    assert parsed == ExampleArgs(3, 0.1, "x", (4, 5, 6), "sampling", True)


def test_comments_become_help_and_validation_runs() -> None:
    assert field_comments(ExampleArgs)["sizes"] == "one size per level"
    with pytest.raises(ValueError, match="steps must be >= 1"):
        parse(["--steps", "0"])
    with pytest.raises(SystemExit):
        parse(["--mode", "greedy"])


@dataclass
class WrappedArgs:
    """A field whose comment runs over two lines, then a field without one."""

    width: int = 3  # how wide the thing is,
    # in cells
    depth: int = 2


def test_a_comment_continued_below_its_field_joins_its_help() -> None:
    comments = field_comments(WrappedArgs)
    assert comments == {"width": "how wide the thing is, in cells"}


@dataclass
class DerivedArgs(ExampleArgs):
    rate: float = 0.7  # a rate, overridden
    extra: int = 1  # only here


def test_inherited_fields_keep_their_comments() -> None:
    comments = field_comments(DerivedArgs)
    assert comments["steps"] == "how many steps to run"  # written in the base class
    assert comments["rate"] == "a rate, overridden" and comments["extra"] == "only here"
