"""The observation builder: OneRec's four user pathways, for N users at once.

- static: the profile token (STATIC_FIELDS);
- short-term: the last `short_term_length` impressions and their feedback;
- positive: the last `positive_length` engaged impressions (envs.response.engaged);
- lifelong: up to `lifelong_history` past impressions compressed to `lifelong_length`
  entries by hierarchical k-means over the items' content embeddings (envs/lifelong.py).

Sequences are most recent last, padded in front with item id BLANK (-1) and zero feedback.
The lifelong summary is built once per session from the warm history: lifelong interest
moves slowly, and recomputing it per request would dominate the step.

Letters used in shape comments: N users, L pathway length, W values per entry, M items
pushed at once, H history length, F feedback fields, K lifelong entries.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from envs.lifelong import compress_lifelong
from envs.response import engaged
from envs.spec import BLANK, NUM_FEEDBACK


class RingBuffer:
    """The last L entries (item id and W values) of N users, read back oldest first.

    Each entry is written twice, at slot t mod L and t mod L + L of a 2L-wide buffer, so the
    window of the last L entries is always one contiguous run: reading it is a copy of whole
    rows. Pushes and reads are compiled loops over users (numba, without the GIL).
    """

    def __init__(self, num_users: int, length: int, width: int) -> None:
        self.length = length
        self.items = np.full((num_users, 2 * length), BLANK, dtype=np.int64)  # (N, 2L)
        self.values = np.zeros((num_users, 2 * length, width), dtype=np.float32)  # (N, 2L, W)
        self.count = np.zeros(num_users, dtype=np.int64)  # (N,) entries ever pushed

    def clear(self, rows: np.ndarray) -> None:
        """Empty the buffers of some users (a new session)."""
        self.items[rows] = BLANK
        self.values[rows] = 0.0
        self.count[rows] = 0

    def push(self, items: np.ndarray, values: np.ndarray, keep: np.ndarray,
             rows: np.ndarray | None = None) -> None:
        """Append, in order, the kept entries of each user.

        items (R, M) int64, values (R, M, W), keep (R, M) bool; `rows` (R,) says which users
        the R rows are (default: all N, in order).
        """
        rows = np.arange(self.count.shape[0]) if rows is None else rows
        _push(self.items, self.values, self.count, np.asarray(rows, dtype=np.int64),
              np.asarray(items, dtype=np.int64), np.asarray(values, dtype=np.float32),
              np.asarray(keep, dtype=np.bool_))

    def window(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The last L entries, oldest first: items (R, L) int64, values (R, L, W) float32."""
        rows = np.arange(self.count.shape[0]) if rows is None else rows
        rows = np.asarray(rows, dtype=np.int64)
        items = np.empty((rows.size, self.length), dtype=np.int64)
        values = np.empty((rows.size, self.length, self.values.shape[2]), dtype=np.float32)
        _window(self.items, self.values, self.count, rows, items, values)
        return items, values


@njit(cache=True, nogil=True)
def _push(buffer_items, buffer_values, count, rows, items, values, keep):
    """`RingBuffer.push` into its arrays: each row's kept entries, in order, twice each;
    entries that later ones of the same push would overwrite are skipped (found from the
    end, so a long push reads only as far back as its last L kept entries)."""
    length = buffer_items.shape[1] // 2
    for row in range(rows.size):
        user = rows[row]
        kept = 0
        for column in range(items.shape[1]):
            kept += keep[row, column]
        first, written = items.shape[1], 0  # the column of the first kept entry written
        while first > 0 and written < length:
            first -= 1
            written += keep[row, first]
        slot = (count[user] + kept - written) % length
        for column in range(first, items.shape[1]):
            if not keep[row, column]:
                continue
            for offset in (slot, slot + length):
                buffer_items[user, offset] = items[row, column]
                for value in range(values.shape[2]):  # written out: values may be strided
                    buffer_values[user, offset, value] = values[row, column, value]
            slot = (slot + 1) % length
        count[user] += kept


@njit(cache=True, nogil=True)
def _window(buffer_items, buffer_values, count, rows, items, values):
    """`RingBuffer.window` into items (R, L), values (R, L, W): one contiguous run a row."""
    length, width = values.shape[1:]
    for row in range(rows.size):
        user = rows[row]
        start = count[user] % length
        items[row] = buffer_items[user, start:start + length]
        source = buffer_values[user].reshape(-1)[start * width:(start + length) * width]
        target = values[row].reshape(-1)  # (L * W,) flat: a plain copy, no 2-D indexing
        for index in range(target.size):
            target[index] = source[index]


class Pathways:
    """The four pathways of N users, updated after every request."""

    def __init__(self, num_users: int, short_term_length: int, positive_length: int,
                 lifelong_length: int, lifelong_history: int) -> None:
        self.lifelong_history = lifelong_history
        self.static = np.zeros((num_users, 5), dtype=np.int64)  # (N, 5)
        self.short_term = RingBuffer(num_users, short_term_length, NUM_FEEDBACK)
        self.positive = RingBuffer(num_users, positive_length, NUM_FEEDBACK)
        self.lifelong_items = np.full((num_users, lifelong_length), BLANK, dtype=np.int64)
        self.lifelong_features = np.zeros(
            (num_users, lifelong_length, NUM_FEEDBACK + 1), dtype=np.float32
        )  # (N, K, F + 1)

    def start(self, rows: np.ndarray, static: np.ndarray, history_items: np.ndarray,
              history_feedback: np.ndarray, lifelong_items: np.ndarray,
              lifelong_features: np.ndarray) -> None:
        """Begin the sessions of some users from their warm history (R, H) and summaries
        (only its last `short_term_length` impressions can stay in the short-term window)."""
        self.static[rows] = static
        for buffer in (self.short_term, self.positive):
            buffer.clear(rows)
        self.lifelong_items[rows] = lifelong_items
        self.lifelong_features[rows] = lifelong_features
        recent = slice(max(0, history_items.shape[1] - self.short_term.length), None)
        self.short_term.push(history_items[:, recent], history_feedback[:, recent],
                             np.ones(history_items[:, recent].shape, dtype=bool), rows)
        self.positive.push(history_items, history_feedback, engaged(history_feedback), rows)

    def restore(self, rows: np.ndarray, observation: dict[str, np.ndarray]) -> None:
        """Set some users' pathways to a saved observation (R, ...) (as returned by
        `observation`), so that later `record` calls continue exactly from it."""
        self.static[rows] = observation["static"]
        for name, buffer in (("short_term", self.short_term), ("positive", self.positive)):
            items = observation[f"{name}_items"]
            buffer.clear(rows)
            buffer.push(items, observation[f"{name}_feedback"], items != BLANK, rows)
        self.lifelong_items[rows] = observation["lifelong_items"]
        self.lifelong_features[rows] = observation["lifelong_features"]

    def record(self, slate: np.ndarray, feedback: np.ndarray, shown: np.ndarray,
               rows: np.ndarray | None = None) -> None:
        """Append one request's impressions: slate (R, S), feedback (R, S, F), shown (R, S)."""
        self.short_term.push(slate, feedback, shown, rows)
        self.positive.push(slate, feedback, shown & engaged(feedback), rows)

    def summarise(self, history_items: np.ndarray, history_feedback: np.ndarray,
                  points: np.ndarray, iterations: int) -> tuple[np.ndarray, np.ndarray]:
        """The lifelong entries of users with these past impressions (R, H) (see module doc);
        points (I, C) are the catalog's quantised content vectors (`quantize_content`)."""
        recent = slice(max(0, history_items.shape[1] - self.lifelong_history), None)
        return compress_lifelong(history_items[:, recent], history_feedback[:, recent], points,
                                 self.lifelong_items.shape[1], iterations)

    def observation(self, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The observation of some users (default all), fresh arrays with a leading R."""
        rows = np.arange(self.static.shape[0]) if rows is None else rows
        short_items, short_feedback = self.short_term.window(rows)
        positive_items, positive_feedback = self.positive.window(rows)
        return {
            "static": self.static[rows],
            "short_term_items": short_items,
            "short_term_feedback": short_feedback,
            "positive_items": positive_items,
            "positive_feedback": positive_feedback,
            "lifelong_items": self.lifelong_items[rows],
            "lifelong_features": self.lifelong_features[rows],
        }
