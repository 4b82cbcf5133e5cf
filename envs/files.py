"""Writing and naming artefact files safely: one discipline for every file the lab writes.

- `atomic_write(path, write)`: the bytes go to a temporary file beside `path`
  (`.NAME.PID.tmp`), are flushed and fsynced, made readable (0o644) and renamed over `path`;
  the folder is fsynced so the rename survives a crash. On any failure, an interrupt
  included, the temporary file is removed and `path` is untouched. A process killed outright
  (SIGKILL) cannot clean up; its temporary file is removed by the next write into the same
  folder (`sweep_temporaries`: a temporary file whose process is gone).
- `unreadable(path, what, error, fix)`: the one error every loader raises for a damaged or
  foreign file: it names the file, what was expected and what is wrong, and the fix; it
  never passes on a library's advice to load the file unsafely.
- `content_fingerprint(arrays)`: a short hash of named arrays, what an artefact records of
  the world it belongs to (e.g. the catalog's) so that a mix of worlds is refused.

A set of files that must change together is written as ONE file (the logged sessions carry
their catalog; a P-score carries its config), so a rename replaces the whole set at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

TEMPORARY_SUFFIX = ".tmp"
FINGERPRINT_LENGTH = 16  # hex digits of sha256 kept: 64 bits, ample to tell worlds apart


def _temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_temporaries(folder: Path) -> list[Path]:
    """Remove temporary files in `folder` left by killed writers (their process is gone);
    returns what was removed."""
    removed = []
    for candidate in folder.glob(f".*{TEMPORARY_SUFFIX}"):
        pid_text = candidate.name[: -len(TEMPORARY_SUFFIX)].rsplit(".", 1)[-1]
        if pid_text.isdigit() and int(pid_text) != os.getpid() \
                and not _process_alive(int(pid_text)):
            with contextlib.suppress(OSError):
                candidate.unlink()
                removed.append(candidate)
    return removed


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write `path` with `write(handle)` so that it holds either its old bytes or all the new
    ones, never a part (module docstring); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(path.parent)
    temporary = _temporary_path(path)
    try:
        with temporary.open("wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # artefacts are data to share, not private files
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def content_fingerprint(arrays: Mapping[str, np.ndarray]) -> str:
    """A short hash of named arrays: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


def unreadable(path: str | Path, what: str, error: BaseException | str, fix: str) -> ValueError:
    """The error for a file that is not a readable `what` (truncated, corrupt or foreign): one
    line naming the file, the cause and the fix. Library text that advises loading the file
    unsafely (torch's "weights_only=False") is cut."""
    if isinstance(error, BaseException):
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        cause = f"{type(error).__name__}: {text}" if text else type(error).__name__
    else:
        cause = error
    for unsafe in ("weights_only", "Weights only load failed"):
        if unsafe in cause:
            cause = "it holds objects a safe load refuses to build"
    return ValueError(f"{path} is not a readable {what} ({cause}); {fix}")


def check_output(path: str | Path | None, option: str, kind: str = "folder") -> None:
    """Refuse, before any work, an output the command could not write: an empty path, a file
    where a folder is expected (or the reverse), a place without write permission. `option`
    names the command-line option in the message (e.g. "--out")."""
    if path is None:
        return
    if str(path).strip() == "":
        raise ValueError(f"{option} is empty; give a {kind} path (e.g. {option} runs/name)")
    target = Path(path)
    if target.exists():
        if kind == "folder" and not target.is_dir():
            raise ValueError(f"{option} {target} is a file, not a folder; give a folder path")
        if kind == "file" and target.is_dir():
            raise ValueError(f"{option} {target} is a folder, not a file; give a file path")
        _probe_writable(target if kind == "folder" else target.parent, option, target)
        return
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{option} {target} cannot be created: {parent} is a file, not a "
                         "folder; choose another path")
    _probe_writable(parent, option, target)


def _probe_writable(folder: Path, option: str, target: Path) -> None:
    """Create and remove a temporary file in `folder`: the only test that also holds for
    read-only mounts and for root (who passes every permission check)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ValueError(f"{option} {target} is not writable ({folder}: {reason.lower()}); "
                         "choose a folder you can write to") from error


def file_fingerprint(path: str | Path) -> str:
    """A short hash of a file's bytes (e.g. the checkpoint a run started from)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write` of a text file (UTF-8): a report, a JSON record."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
