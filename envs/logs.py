"""Logged sessions: roll a logging policy through the vector env, write, read back.

A log folder is self-contained and its set is ONE file, `sessions.npz`: the columns below, a
JSON header (`kind`, `schema_version`, `catalog_fingerprint`, the pathway lengths, ...) and the
catalog the sessions were logged in (its fields under `catalog__<field>`, its format under the
header's `"catalog"`). One file, so one rename replaces sessions and catalog together: a
killed writer leaves the old set or the new one, never new sessions beside an old catalog.
Schema versions: 2 writes the embedded catalog; 1 (older onerec-lab: the catalog in
`catalog.npz` beside `sessions.npz`) still loads, and saving over such a folder removes its
`catalog.npz` once the new `sessions.npz` is in place. Observations are not stored
row by row (256 positive items per row would dwarf everything else): each session stores
the observation it started from, each row the slate and its feedback, and the reader
rebuilds the observation before any request by replaying the session's earlier rows
through the same pathway builder, so it equals what the env showed the policy.

Columns (U sessions, R rows = requests, sorted by session then request):

| column                | shape     | dtype   | content                                    |
|-----------------------|-----------|---------|--------------------------------------------|
| `session_seed`        | (U,)      | int64   | `OneRecSession.reset(seed=...)` replays it |
| `start_<pathway key>` | (U, ...)  | as obs. | the observation at reset                   |
| `session`, `request`  | (R,)      | int64   | which session, which request of it         |
| `slate`               | (R, S)    | int64   | as the policy sent it (-1 = blank)         |
| `feedback`            | (R, S, F) | float32 | FEEDBACK_FIELDS order                      |
| `shown`               | (R, S)    | bool    | shown: not a blank, not a repeat           |
| ORACLE_FIELDS         | (R,)      | various | true_watch_time, true_engagement, ...      |

Letters used in shape comments: U sessions, R rows, S slate size, F feedback fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gymnasium.vector import AutoresetMode

from envs.catalog import Catalog
from envs.files import atomic_write, unreadable
from envs.logging_policies import LoggingPolicy
from envs.pathways import Pathways
from envs.response import ORACLE_FIELDS
from envs.simulator import SessionConfig
from envs.spec import BEHAVIOURS, FEEDBACK_FIELDS, STATIC_FIELDS
from envs.vector_env import OneRecVectorEnv

LOG_SCHEMA_VERSION = 2  # 2: the catalog is embedded in sessions.npz
READABLE_LOG_VERSIONS = (1, 2)  # 1: the catalog is CATALOG_FILE beside sessions.npz
LOG_KIND = "onerec-logged-sessions"
SESSIONS_FILE = "sessions.npz"
CATALOG_FILE = "catalog.npz"  # the catalog of schema version 1 logs (no longer written)
CATALOG_PREFIX = "catalog__"  # the embedded catalog's fields in sessions.npz
PATHWAY_KEYS = ("static", "short_term_items", "short_term_feedback", "positive_items",
                "positive_feedback", "lifelong_items", "lifelong_features")
ROW_COLUMNS = ("session", "request", "slate", "feedback", "shown", *ORACLE_FIELDS)
SESSION_COLUMNS = ("session_seed", *(f"start_{key}" for key in PATHWAY_KEYS))


@dataclass
class LoggedSessions:
    """Logged sessions in memory: the columns of the module docstring and their header."""

    columns: dict[str, np.ndarray]
    header: dict
    # the file `catalog` comes from: sessions.npz itself (schema 2) or catalog.npz beside it
    # (schema 1); None for logs built in memory (they set `_catalog`)
    catalog_path: Path | None = None
    _catalog: Catalog | None = field(default=None, repr=False)

    @property
    def num_requests(self) -> int:
        return int(self.columns["session"].shape[0])

    @property
    def num_sessions(self) -> int:
        return int(self.columns["session_seed"].shape[0])

    @property
    def slates(self) -> np.ndarray:
        return self.columns["slate"]  # (R, S)

    @property
    def feedback(self) -> np.ndarray:
        return self.columns["feedback"]  # (R, S, F)

    @property
    def shown(self) -> np.ndarray:
        return self.columns["shown"]  # (R, S)

    @property
    def outcomes(self) -> dict[str, np.ndarray]:
        """The oracle's outcome of every row, each (R,)."""
        return {name: self.columns[name] for name in ORACLE_FIELDS}

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            if self.catalog_path is None:
                raise ValueError("these logged sessions carry no catalog; build them with "
                                 "collect_sessions or load them from a folder")
            if not self.catalog_path.is_file():
                raise FileNotFoundError(
                    f"{self.catalog_path} not found: logs of schema version 1 keep their catalog "
                    "there; regenerate the logs with `onerec-lab simulate --out DIR`"
                )
            self._catalog = Catalog.load(self.catalog_path)
        return self._catalog

    @property
    def catalog_fingerprint(self) -> str:
        """The identity of the world these sessions were logged in (`Catalog.fingerprint`):
        for a schema-2 file, the header's (checked against the embedded catalog on load); for
        schema 1, computed from its catalog.npz."""
        return self.catalog.fingerprint()

    def session_config(self) -> SessionConfig:
        """The pathway lengths the logs were recorded with (user-model defaults)."""
        return SessionConfig(**self.header["pathways"])

    def contexts(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The observation each of `rows` (B,) answered, batched: arrays with a leading B."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= self.num_requests)):
            raise ValueError(
                f"rows must be a 1-d array of indices in [0, {self.num_requests}), got "
                f"{np.array2string(rows, threshold=10)}"
            )
        config = self.session_config()
        pathways = Pathways(max(rows.size, 1), config.short_term_length, config.positive_length,
                            config.lifelong_length, config.lifelong_history)
        sessions = self.columns["session"][rows]
        requests = self.columns["request"][rows]
        targets = np.arange(rows.size)
        pathways.restore(targets, {key: self.columns[f"start_{key}"][sessions]
                                   for key in PATHWAY_KEYS})
        first_row = rows - requests  # rows of one session are contiguous, request 0 first
        for request in range(int(requests.max(initial=0))):
            pending = np.flatnonzero(requests > request)
            earlier = first_row[pending] + request
            pathways.record(self.slates[earlier], self.feedback[earlier], self.shown[earlier],
                            targets[pending])
        return pathways.observation(targets)

    def save(self, directory: str | Path) -> Path:
        """Write `sessions.npz`, catalog embedded, into `directory` with one `atomic_write`;
        a schema-1 `catalog.npz` there (the old set's other half) is removed only once the new
        file is in place. Returns the file."""
        directory = Path(directory)
        catalog = self.catalog
        header = {**self.header, "schema_version": LOG_SCHEMA_VERSION,
                  "catalog": catalog.header(), "catalog_fingerprint": catalog.fingerprint()}
        arrays = {"__header__": np.array(json.dumps(header)), **self.columns,
                  **{CATALOG_PREFIX + name: values for name, values in catalog.arrays().items()}}
        path = atomic_write(directory / SESSIONS_FILE,
                            lambda handle: np.savez_compressed(handle, **arrays))
        (directory / CATALOG_FILE).unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LoggedSessions:
        """Read a log folder (or its sessions.npz) of schema version 2 or 1 (module
        docstring); a damaged or foreign file is a ValueError naming it."""
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        path = path / SESSIONS_FILE if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; write logs with `onerec-lab simulate`")
        what, fix = "logged-sessions file", "regenerate it with `onerec-lab simulate --out DIR`"
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["__header__"]))
                stored = {name: data[name] for name in data.files if name != "__header__"}
        except Exception as error:  # zip, json, key and read errors all mean "unreadable"
            raise unreadable(path, what, error, f"it may be truncated: {fix}") from error
        if not isinstance(header, dict) or header.get("kind") != LOG_KIND \
                or header.get("schema_version") not in READABLE_LOG_VERSIONS:
            found = header if not isinstance(header, dict) else (
                f"kind {header.get('kind')!r}, schema_version {header.get('schema_version')!r}")
            raise unreadable(path, what, f"it has {found}; this onerec-lab reads {LOG_KIND!r} "
                             f"versions {', '.join(map(str, READABLE_LOG_VERSIONS))}", fix)
        columns = {name: values for name, values in stored.items()
                   if not name.startswith(CATALOG_PREFIX)}
        missing = [name for name in (*SESSION_COLUMNS, *ROW_COLUMNS) if name not in columns]
        if missing:
            raise unreadable(path, what, f"it lacks the columns {missing}", fix)
        rows = columns["session"].shape[0]
        uneven = [name for name in ROW_COLUMNS if columns[name].shape[0] != rows]
        if uneven or header.get("feedback_fields") != list(FEEDBACK_FIELDS):
            raise unreadable(path, what, f"it is inconsistent: row columns {uneven} differ in "
                             "length from 'session', or the feedback fields differ from "
                             f"{list(FEEDBACK_FIELDS)}", fix)
        if header["schema_version"] == 1:
            return cls(columns, header, folder / CATALOG_FILE)
        catalog = Catalog.from_arrays(
            {name[len(CATALOG_PREFIX):]: values for name, values in stored.items()
             if name.startswith(CATALOG_PREFIX)}, header.get("catalog"), path)
        if header.get("catalog_fingerprint") != catalog.fingerprint():
            raise unreadable(path, what, f"its catalog has fingerprint {catalog.fingerprint()}, "
                             f"its header records {header.get('catalog_fingerprint')!r}", fix)
        return cls(columns, header, path, _catalog=catalog)


def collect_sessions(
    policy: LoggingPolicy,
    catalog: Catalog,
    num_users: int,
    max_requests: int,
    seed: int,
    config: SessionConfig | None = None,
    batch_size: int = 1024,
    policy_name: str = "custom",
) -> LoggedSessions:
    """Roll `policy` through `OneRecVectorEnv` for `num_users` sessions of at most
    `max_requests` requests; session s is `OneRecSession` reset with seed `seed + s`.

    Users are simulated `batch_size` at a time; the policy's generator for the batch that
    starts at user b is `np.random.default_rng((seed, b))`.
    """
    if num_users < 1 or max_requests < 1 or batch_size < 1:
        raise ValueError(
            f"num_users ({num_users}), max_requests ({max_requests}) and batch_size "
            f"({batch_size}) must all be >= 1"
        )
    config = SessionConfig() if config is None else config
    session_parts: list[dict[str, np.ndarray]] = []
    row_parts: list[dict[str, np.ndarray]] = []
    for first in range(0, num_users, batch_size):
        size = min(batch_size, num_users - first)
        env = OneRecVectorEnv(num_envs=size, max_episode_steps=max_requests, catalog=catalog,
                              config=config, autoreset_mode=AutoresetMode.DISABLED)
        observation, _ = env.reset(seed=seed + first)
        session_parts.append({"session_seed": seed + first + np.arange(size),
                              **{f"start_{key}": observation[key] for key in PATHWAY_KEYS}})
        rng = np.random.default_rng((seed, first))
        active = np.ones(size, dtype=bool)
        while active.any():
            slate = np.asarray(policy.act(observation, rng), dtype=np.int64)  # (N, S)
            observation, _, terminated, truncated, info = env.step(slate)
            rows = np.flatnonzero(active)
            row_parts.append({
                "session": first + rows, "request": info["request"][rows] - 1,
                "slate": slate[rows], "feedback": info["feedback"][rows],
                "shown": info["shown"][rows],
                **{name: info[name][rows] for name in ORACLE_FIELDS},
            })
            active &= ~(terminated | truncated)
    columns = {name: np.concatenate([part[name] for part in session_parts])
               for name in SESSION_COLUMNS}
    row_columns = {name: np.concatenate([part[name] for part in row_parts])
                   for name in ROW_COLUMNS}
    order = np.lexsort((row_columns["request"], row_columns["session"]))
    columns.update({name: values[order] for name, values in row_columns.items()})
    header = {
        "kind": LOG_KIND, "schema_version": LOG_SCHEMA_VERSION, "policy": policy_name,
        "seed": seed, "max_requests": max_requests, "num_items": catalog.num_items,
        "feedback_fields": list(FEEDBACK_FIELDS), "static_fields": list(STATIC_FIELDS),
        "pathways": {name: getattr(config, name) for name in (
            "slate_size", "short_term_length", "positive_length", "lifelong_history",
            "lifelong_length")},
    }
    return LoggedSessions(columns, header, _catalog=catalog)


def summarise(logs: LoggedSessions) -> dict[str, object]:
    """Headline numbers of logged sessions: sizes, watch time, session length, rates."""
    shown = logs.shown
    impressions = int(shown.sum())
    per_impression = logs.feedback[shown]  # (impressions, F)
    watch = FEEDBACK_FIELDS.index("watch_time")
    sessions = logs.num_sessions
    return {
        "sessions": sessions,
        "requests": logs.num_requests,
        "impressions": impressions,
        "mean_watch_time": float(per_impression[:, watch].mean()) if impressions else 0.0,
        "mean_session_watch_time": float(logs.columns["true_watch_time"].sum() / sessions),
        "mean_session_length": logs.num_requests / sessions,
        "leave_rate": float(logs.columns["left"].sum() / sessions),
        "mean_true_engagement": float(logs.columns["true_engagement"].sum() / sessions),
        "behaviour_rates": {
            name: float(per_impression[:, FEEDBACK_FIELDS.index(name)].mean())
            if impressions else 0.0
            for name in BEHAVIOURS
        },
    }
