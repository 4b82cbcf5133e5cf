"""How a training run stops early: interrupted by a signal, or diverged.

- `StopSignals`: while a run is in `run_training` (in the main thread), the first SIGINT or
  SIGTERM only sets a flag; the loop saves at the next step boundary and raises
  `TrainingInterrupted` (the command line exits 130 with its one line). A second signal
  raises KeyboardInterrupt at once, except under torchrun, whose agent forwards the
  terminal's Ctrl-C to every worker (so it arrives twice) and kills them itself after its
  shutdown timeout.
- `TrainingDiverged`: a loss or weight that is no longer finite; the message names the step
  and the last finite checkpoint kept on disk.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

# The signals that stop a run at the next step boundary, in the order of their flag's code.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Set by torchrun in its workers. Its agent forwards the terminal's Ctrl-C to them, which then
# arrives twice, and it kills them itself after its shutdown timeout: no second-signal escape.
TORCHRUN_VARIABLE = "TORCHELASTIC_RUN_ID"


class TrainingDiverged(ValueError):
    """A run whose loss or weights stopped being finite. `step`: where it was seen;
    `checkpoint` / `checkpoint_step`: the last finite checkpoint on disk (None: none)."""

    def __init__(self, message: str, step: int, checkpoint: Path | None = None,
                 checkpoint_step: int | None = None) -> None:
        super().__init__(message)
        self.step, self.checkpoint, self.checkpoint_step = step, checkpoint, checkpoint_step

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:  # picklable across processes
        return type(self), (str(self), self.step, self.checkpoint, self.checkpoint_step)


class TrainingInterrupted(Exception):
    """A run stopped by SIGINT or SIGTERM at a step boundary. `step`: the last step taken;
    `checkpoint`: where it was saved (None: no output folder, or no step yet)."""

    def __init__(self, message: str, step: int, checkpoint: Path | None = None,
                 signal_name: str = "SIGINT") -> None:
        super().__init__(message)
        self.step, self.checkpoint, self.signal_name = step, checkpoint, signal_name

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:  # picklable across processes
        return type(self), (str(self), self.step, self.checkpoint, self.signal_name)


class StopSignals:
    """While entered (in the main thread only): the first SIGINT or SIGTERM sets `received`
    (its name) for the loop to stop at the next step boundary; a second one raises
    KeyboardInterrupt at once when `repeat_raises`, else is ignored. The previous handlers
    come back on exit."""

    def __init__(self, repeat_raises: bool = True) -> None:
        self.repeat_raises = repeat_raises
        self.received: str | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self.previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        self.previous.clear()

    def _handle(self, number: int, frame: object) -> None:
        name = signal.Signals(number).name
        if self.received is None:
            self.received = name
        elif self.repeat_raises:
            raise KeyboardInterrupt(f"a second {name} while stopping at the step boundary")
