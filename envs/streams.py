"""Counter-based random streams: one independent, reproducible stream per simulated user.

A batched simulator cannot give each of its N users a `numpy.random.Generator` without a
Python loop over users, yet user i of a vector env must follow exactly the dynamics of a
single env reset with seed + i. A counter-based generator solves both: the k-th random
number of a stream is a pure function of (stream key, k), so a whole (N, D) block of draws
is one compiled loop of integer operations (numba, without the GIL), and it does not matter
how many other users share the batch.

The generator is SplitMix64 (Steele, Lea and Flood, OOPSLA 2014) used with random access:
value k of the stream with state `key` is `mix(key + (k + 1) * GOLDEN)`. Each 64-bit value
gives two uniforms with 32 bits of resolution, plenty for Bernoulli draws of rates near
1e-4 and for logistic noise.

Letters used in shape comments: N users (streams), D draws.
"""

from __future__ import annotations

import numpy as np
from numba import njit

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_UNIT_32 = 1.0 / 4_294_967_296.0
_COMPILED = {"cache": True, "nogil": True}  # compiled once per machine; threads run it freely

# Salts that split one user-episode key into independent streams, one per purpose.
PURPOSE_PROFILE = 1
PURPOSE_WARM_HISTORY = 2
PURPOSE_STEP = 3
PURPOSE_RETURN = 4  # envs.days: the return model's draws after each session


def mix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective scrambling of uint64 values (same shape)."""
    mixed = np.array(values, dtype=np.uint64)
    _mix_in_place(mixed.reshape(-1))
    return mixed


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
    stream_keys = np.ascontiguousarray(stream_keys, dtype=np.uint64).reshape(-1)
    offsets = np.broadcast_to(np.asarray(offsets, dtype=np.int64).astype(np.uint64),
                              stream_keys.shape)
    out = np.empty((stream_keys.size, 2 * words_for(count)))  # (N, 2W): high half first
    _fill_uniforms(stream_keys, np.ascontiguousarray(offsets), out)
    return out[:, :count]


def uniform_columns(stream_keys: np.ndarray, rows: int, per_row: int) -> np.ndarray:
    """The first rows * per_row uniforms of each stream, draw-major: (per_row, N, rows).

    Element [k, n, r] is uniform r * per_row + k of stream n, the value
    `uniforms(stream_keys, 0, rows * per_row).reshape(N, rows, per_row)[n, r, k]` holds;
    each of the per_row draws comes as one contiguous (N, rows) array, the layout
    elementwise code reads fastest. per_row must be even (whole 64-bit values per row).
    """
    if per_row % 2:
        raise ValueError(f"per_row must be even (two uniforms per 64-bit value), got {per_row}")
    out = np.empty((per_row, stream_keys.shape[0], rows))
    _fill_columns(np.ascontiguousarray(stream_keys, dtype=np.uint64), out)
    return out


@njit(**_COMPILED)
def _mix(z):
    """`mix64` of one uint64 (every constant a uint64: numba would otherwise go float)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX_1
    z = (z ^ (z >> np.uint64(27))) * _MIX_2
    return z ^ (z >> np.uint64(31))


@njit(**_COMPILED)
def _mix_in_place(values):
    """`mix64` of every value of a uint64 array (K,), in place."""
    for index in range(values.size):
        values[index] = _mix(values[index])


@njit(**_COMPILED)
def _unit(half):
    """A 32-bit value as the uniform (k + 1/2) / 2**32, float64 (exact)."""
    return (np.float64(half) + 0.5) * _UNIT_32


@njit(**_COMPILED)
def _fill_uniforms(stream_keys, offsets, out):
    """Value w of stream n, offset by offsets[n], into out[n, 2w] (high half), 2w + 1."""
    for stream in range(stream_keys.size):
        for word in range(out.shape[1] // 2):
            bits = _mix(stream_keys[stream] + (offsets[stream] + np.uint64(word + 1)) * GOLDEN)
            out[stream, 2 * word] = _unit(bits >> np.uint64(32))
            out[stream, 2 * word + 1] = _unit(bits & np.uint64(0xFFFFFFFF))


@njit(**_COMPILED)
def _fill_columns(stream_keys, out):
    """`uniform_columns` into out (per_row, N, rows)."""
    words = np.uint64(out.shape[0] // 2)
    for word in range(out.shape[0] // 2):
        for stream in range(stream_keys.size):
            for row in range(out.shape[2]):
                index = np.uint64(row) * words + np.uint64(word + 1)
                bits = _mix(stream_keys[stream] + index * GOLDEN)
                out[2 * word, stream, row] = _unit(bits >> np.uint64(32))
                out[2 * word + 1, stream, row] = _unit(bits & np.uint64(0xFFFFFFFF))


def words_for(count: int) -> int:
    """How many 64-bit values `uniforms(..., count)` consumes (the offset step)."""
    return (count + 1) // 2
