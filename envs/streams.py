"""Counter-based random streams: one independent, reproducible stream per simulated user.

A batched simulator cannot give each of its N users a `numpy.random.Generator` without a
Python loop over users, yet user i of a vector env must follow exactly the dynamics of a
single env reset with seed + i. A counter-based generator solves both: the k-th random
number of a stream is a pure function of (stream key, k), so a whole (N, D) block of draws
is a handful of vectorised integer operations, and it does not matter how many other users
share the batch.

The generator is SplitMix64 (Steele, Lea and Flood, OOPSLA 2014) used with random access:
value k of the stream with state `key` is `mix(key + (k + 1) * GOLDEN)`. Each 64-bit value
gives two uniforms with 32 bits of resolution, plenty for Bernoulli draws of rates near
1e-4 and for logistic noise.

Letters used in shape comments: N users (streams), D draws.
"""

from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_UNIT_32 = 1.0 / 4_294_967_296.0

# Salts that split one user-episode key into independent streams, one per purpose.
PURPOSE_PROFILE = 1
PURPOSE_WARM_HISTORY = 2
PURPOSE_STEP = 3


def mix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective scrambling of uint64 values (same shape)."""
    return _mix64_in_place(np.array(values, dtype=np.uint64))


def seed_roots(seeds: np.ndarray) -> np.ndarray:
    """Root keys for integer seeds (N,) -> (N,) uint64; the same seed gives the same root."""
    seeds = np.asarray(seeds, dtype=np.int64).astype(np.uint64)
    return mix64(mix64(seeds + GOLDEN) ^ np.uint64(0x5EED))


def episode_keys(roots: np.ndarray, episodes: np.ndarray) -> np.ndarray:
    """Key of episode e (0 for the first after seeding) of each root: (N,), (N,) -> (N,)."""
    episodes = np.asarray(episodes, dtype=np.int64).astype(np.uint64)
    return mix64(roots + (episodes + np.uint64(1)) * GOLDEN)


def purpose_keys(keys: np.ndarray, purpose: int) -> np.ndarray:
    """The stream of one purpose (profile, warm history, steps) of each episode key."""
    return mix64(keys ^ mix64(np.full(keys.shape, purpose, dtype=np.uint64)))


def uniforms(stream_keys: np.ndarray, offsets: np.ndarray | int, count: int) -> np.ndarray:
    """`count` uniforms in (0, 1) per stream, starting at uniform index 2 * offset.

    stream_keys (N,) uint64 and offsets (N,) or a scalar (in 64-bit values, so a caller that
    reserves `count` uniforms per step advances its offset by ceil(count / 2)).
    Returns (N, count) float64.
    """
    words = (count + 1) // 2
    offsets = np.asarray(offsets, dtype=np.int64).astype(np.uint64)
    index = offsets.reshape(-1, 1) + np.arange(1, words + 1, dtype=np.uint64)  # (N or 1, W)
    bits = _mix64_in_place(stream_keys.reshape(-1, 1) + index * GOLDEN)  # (N, W)
    both = np.empty((bits.shape[0], words, 2))  # (N, W, 2): high half first
    _unit_halves(bits, both[..., 0], both[..., 1])
    return both.reshape(bits.shape[0], 2 * words)[:, :count]


def uniform_columns(stream_keys: np.ndarray, rows: int, per_row: int) -> np.ndarray:
    """The first rows * per_row uniforms of each stream, draw-major: (per_row, N, rows).

    Element [k, n, r] is uniform r * per_row + k of stream n, the value
    `uniforms(stream_keys, 0, rows * per_row).reshape(N, rows, per_row)[n, r, k]` holds;
    each of the per_row draws comes as one contiguous (N, rows) array, the layout
    elementwise code reads fastest. per_row must be even (whole 64-bit values per row).
    """
    if per_row % 2:
        raise ValueError(f"per_row must be even (two uniforms per 64-bit value), got {per_row}")
    words = per_row // 2
    out = np.empty((per_row, stream_keys.shape[0], rows))
    first_word = np.arange(rows, dtype=np.uint64) * np.uint64(words)  # (rows,)
    for word in range(words):
        index = (first_word + np.uint64(word + 1)) * GOLDEN
        bits = _mix64_in_place(stream_keys.reshape(-1, 1) + index)  # (N, rows)
        _unit_halves(bits, out[2 * word], out[2 * word + 1])
    return out


def _mix64_in_place(z: np.ndarray) -> np.ndarray:
    """`mix64` of a fresh uint64 array, overwriting it (no temporaries but the shifts)."""
    z ^= z >> np.uint64(30)
    z *= _MIX_1
    z ^= z >> np.uint64(27)
    z *= _MIX_2
    z ^= z >> np.uint64(31)
    return z


def _unit_halves(bits: np.ndarray, high: np.ndarray, low: np.ndarray) -> None:
    """The two 32-bit halves of each value of `bits` as uniforms (k + 1/2) / 2**32, written
    into the float64 arrays `high` and `low` (same shape)."""
    np.copyto(high, bits >> np.uint64(32), casting="unsafe")
    np.copyto(low, bits & np.uint64(0xFFFFFFFF), casting="unsafe")
    for half in (high, low):
        half += 0.5
        half *= _UNIT_32


def words_for(count: int) -> int:
    """How many 64-bit values `uniforms(..., count)` consumes (the offset step)."""
    return (count + 1) // 2
