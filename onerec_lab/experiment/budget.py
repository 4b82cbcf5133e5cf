"""Memory a command will need, estimated before it starts: refuse what cannot fit.

A size typed by mistake (`simulate --users 2147483648`) must not run for hours and then die
for memory; the estimate is made from the real arrays of a tiny probe (a 64-item catalog,
one logged session), scaled to the sizes asked for, and compared with the memory the system
says is available. The refusal carries the estimate and the fix.
"""

from __future__ import annotations

import functools
import os

from envs.simulator import SessionConfig

PROBE_ITEMS = 64  # items of the probe catalog
WORKING_COPIES = 2  # arrays are concatenated (and compressed) once: two copies at the peak
ENV_BYTES_PER_USER = 50_000  # the vector env's own state per simulated user (measured: ~50 KB)


def available_memory() -> int:
    """Bytes the system can give without swapping (MemAvailable), else its physical memory."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@functools.cache
def _catalog_bytes_per_item() -> float:
    from envs.catalog import CatalogConfig, generate_synthetic_catalog

    catalog = generate_synthetic_catalog(CatalogConfig(num_items=PROBE_ITEMS), 0)
    arrays = [value for value in vars(catalog).values() if hasattr(value, "nbytes")]
    return sum(array.nbytes for array in arrays) / PROBE_ITEMS


@functools.cache
def _log_bytes(slate_size: int) -> tuple[float, float]:
    """(bytes per logged session, bytes per logged request) at this slate size."""
    from envs.catalog import CatalogConfig, generate_synthetic_catalog
    from envs.logging_policies import make_logging_policy
    from envs.logs import ROW_COLUMNS, SESSION_COLUMNS, collect_sessions

    catalog = generate_synthetic_catalog(CatalogConfig(num_items=PROBE_ITEMS), 0)
    config = SessionConfig(slate_size=slate_size)
    logs = collect_sessions(make_logging_policy("random", catalog, slate_size), catalog, 1, 2,
                            0, config, 1)
    per_session = sum(logs.columns[name].nbytes for name in SESSION_COLUMNS)
    per_row = sum(logs.columns[name].nbytes for name in ROW_COLUMNS) / logs.num_requests
    return per_session, per_row


def catalog_memory(items: int) -> int:
    """Bytes of a synthetic catalog of `items` items (and its working copy)."""
    return int(WORKING_COPIES * items * _catalog_bytes_per_item())


def simulation_memory(users: int, requests: int, slate_size: int, items: int,
                      batch_size: int) -> int:
    """Bytes `simulate` needs at its peak: the catalog, the vector env of one batch, and the
    logged columns of every session (each at most `requests` rows)."""
    per_session, per_row = _log_bytes(slate_size)
    logged = users * (per_session + requests * per_row)
    return int(catalog_memory(items) + min(batch_size, users) * ENV_BYTES_PER_USER
               + WORKING_COPIES * logged)


def check_fits(needed: int, what: str, fix: str) -> None:
    """Refuse a job whose estimate exceeds the available memory, with both in the message."""
    available = available_memory()
    if needed > available:
        raise ValueError(f"{what} needs about {_size(needed)} of memory, and {_size(available)} "
                         f"is available; {fix}")


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if count < 1024 or unit == "PB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    raise AssertionError("unreachable")
