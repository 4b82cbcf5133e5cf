"""Which stage a long job is in: a spinner per stage on a terminal, plain lines elsewhere.

On a terminal each stage gets a rich spinner that ends as "done (12.3 s)" or "reused";
when stderr is a log file or a CI console, each stage prints one plain line when it starts
and one when it ends (training loops add their own lines every few steps), so a log shows
where a job is. `quiet` prints nothing (`--json` runs).
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


@dataclass
class StageLine:
    """The end of a stage's line: set `outcome` (e.g. "reused ...") to replace "done"."""

    outcome: str | None = None


class StageProgress:
    """Announces the stages of the job `name` (module docstring)."""

    def __init__(self, name: str, quiet: bool = False) -> None:
        self.name = name
        console = Console(stderr=True)
        self.live = not quiet and console.is_terminal
        self.plain = not quiet and not console.is_terminal
        self.display = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                TimeElapsedColumn(), console=console, disable=not self.live)
        self.seconds: dict[str, float] = {}  # stage title -> wall time

    @property
    def inner_progress(self) -> bool:
        """Whether the loops inside a stage may print their own progress: plain lines off a
        terminal, never a second live display on one."""
        return self.plain

    def __enter__(self) -> StageProgress:
        self.display.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.display.__exit__(*exc)

    def note(self, text: str) -> None:
        """A line of its own (e.g. why a stage was rebuilt)."""
        if self.live:
            self.display.console.print(f"  {text}")
        elif self.plain:
            print(f"{self.name}: {text}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def stage(self, title: str) -> Iterator[StageLine]:
        """Run a stage under its line; what it prints to stdout is swallowed (the report
        speaks at the end)."""
        line = StageLine()
        task = self.display.add_task(title, total=None)
        if self.plain:
            print(f"{self.name}: {title} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            yield line
        self.seconds[title] = round(time.perf_counter() - started, 2)
        outcome = line.outcome or f"done ({self.seconds[title]:.1f} s)"
        self.display.update(task, description=f"{title} [green]{outcome}[/]")
        self.display.stop_task(task)
        if self.plain:
            print(f"{self.name}: {title}: {outcome}", file=sys.stderr, flush=True)
