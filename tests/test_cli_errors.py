"""What the command line makes of an error: one line and an exit code, or a bug's traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from onerec_lab.cli import BAD_INPUT, INTERRUPTED, error_line, main
from trainers.guards import TrainingDiverged, TrainingInterrupted


@pytest.mark.parametrize(("error", "expected"), [
    (TrainingInterrupted("interrupted at step 3 by SIGINT; checkpoint saved to out/c.pt: "
                         "rerun the same command to resume", 3, Path("out/c.pt")),
     ("interrupted at step 3 by SIGINT; checkpoint saved to out/c.pt: rerun the same command "
      "to resume", INTERRUPTED)),
    (KeyboardInterrupt(), ("interrupted; nothing more was written", INTERRUPTED)),
    (TrainingDiverged("training diverged at step 2: loss is nan", 2),
     ("training diverged at step 2: loss is nan", BAD_INPUT)),
    (PermissionError(13, "Permission denied", "/ro/out"), ("/ro/out: Permission denied",
                                                            BAD_INPUT)),
    (ValueError("first line\n  spec\n  ^"), ("first line", BAD_INPUT)),
])
def test_reported_errors_are_one_line_with_their_exit_code(error: BaseException,
                                                           expected: tuple[str, int]) -> None:
    assert error_line(error) == expected


@pytest.mark.parametrize("error", [KeyError("x"), RuntimeError("x"), TypeError("x")])
def test_a_bug_is_not_dressed_as_bad_input(error: Exception) -> None:
    assert error_line(error) is None


def test_an_interrupted_command_exits_130_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    """The whole path: a command whose run is interrupted prints one line and returns 130."""
    import onerec_lab.commands.simulate as simulate

    def interrupted(args: object) -> dict:
        raise TrainingInterrupted("interrupted at step 1 by SIGTERM; checkpoint saved to x: "
                                  "rerun the same command to resume", 1, Path("x"), "SIGTERM")

    monkeypatch.setattr(simulate, "run", interrupted)
    assert main(["simulate", "--users", "1"]) == INTERRUPTED
    assert capsys.readouterr().err.strip().splitlines() == [
        "onerec-lab simulate: error: interrupted at step 1 by SIGTERM; checkpoint saved to x: "
        "rerun the same command to resume"]
