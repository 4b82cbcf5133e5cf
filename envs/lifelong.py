"""The lifelong pathway: a user's past impressions compressed by hierarchical k-means.

The report's compression: up to `lifelong_history` past impressions become
`lifelong_length` entries by hierarchical k-means over the items' content embeddings. Each
level splits every large cluster into floor(cbrt(size)) clusters, until clusters are small
or the entry budget is spent. An entry is the item nearest to its cluster's centroid (it
carries the sparse features: id, and through the catalog, category and creator), the
cluster's mean feedback (the dense features) and the cluster size.

New users start all the time (a few percent of users per request), so the compression is
compiled (numba): one user after another, with no padding and no temporaries, and without
the GIL, so threads can start users side by side (envs/simulator.py). A user's ~2,000
impressions are ~750 distinct items (`distinct_items`): the k-means clusters those, each
weighted by its impressions, and spends most of its time in the dot products of its
assignments. The content vectors are quantised to small integers (`quantize_content`),
which makes every distance, sum and rounded centroid the k-means forms an exact integer: a
user's clusters are the same bits whatever batch, thread or summation order computes them,
which is what lets env i of a vector env equal a single env.

Letters used in shape comments: N users, H history length, F feedback fields, I items,
C content dimensions, K lifelong entries (clusters), P distinct items of a user, J children
of one cluster.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from envs.spec import BLANK

_EXACT = 2**24  # float32 holds every integer below this exactly
_COMPILED = {"cache": True, "nogil": True,  # compiled once per machine; threads run it freely
             "error_model": "numpy"}  # IEEE division, no zero check: loops stay vectorisable
# Sums of exact integers may be reordered (so vectorised); nothing else of fastmath is needed:
# its no-infinity promise would break the comparisons with +inf below, and its reciprocals
# the rounded means (which therefore stay in functions without it).
_REORDERED = {"fastmath": {"reassoc", "contract"}, **_COMPILED}


def quantize_content(content: np.ndarray, lifelong_history: int) -> np.ndarray:
    """The catalog's content vectors (I, C) as the integer-valued float32 points the lifelong
    k-means runs on: centred, scaled so that the largest |coordinate| is `_quantized_bound`
    (about 100 for 32 dimensions), and rounded, a scalar quantisation like faiss's SQ8.

    Why: every dot product, squared norm and weighted sum the k-means forms is then an
    integer below 2**24, which float32 holds exactly, so no summation order can change it:
    a user's clusters are the same bits whatever computes them, and the distances can use
    float32's vector units. `lifelong_history` bounds the cluster weights.
    """
    content = np.asarray(content, dtype=np.float64)
    centred = content - content.mean(axis=0)
    bound = _quantized_bound(content.shape[1], lifelong_history)
    scale = bound / max(float(np.abs(centred).max()), 1e-12)
    return np.rint(centred * scale).astype(np.float32)


def _quantized_bound(dims: int, lifelong_history: int) -> int:
    """The largest |coordinate| B of a quantised point that keeps the k-means exact: its
    distances |c|^2 - 2 x.c (at most 3 C B**2) and squared gaps (at most 4 C B**2), times a
    margin 2**b >= floor(cbrt(H)), and its weighted sums (at most H B) stay below 2**24;
    at most 255 (8 bits and a sign). The margin is where an earlier batched k-means kept a
    child index in a distance's low bits; it stays so that every quantised point, and so
    every user's lifelong pathway, stays what it was."""
    index_bits = (max(2, _max_children(lifelong_history)) - 1).bit_length()
    bound = min(255, math.isqrt(((_EXACT >> index_bits) - 1) // (3 * dims)),
                (_EXACT - 1) // max(lifelong_history, 1))
    if bound < 16:
        raise ValueError(
            f"content of {dims} dimensions with a lifelong history of {lifelong_history} "
            "impressions leaves under 16 quantisation levels for the lifelong k-means: lower "
            "lifelong_history or the content dimension"
        )
    return bound


def _max_children(weight: int) -> int:
    """floor(cbrt(weight)): the most children a cluster of this weight is split into."""
    return int(np.floor(np.cbrt(weight) + 1e-9))


def hierarchical_kmeans(
    points: np.ndarray, weights: np.ndarray, max_clusters: int, iterations: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster each user's weighted points into at most `max_clusters` clusters, top-down.

    points (N, P, C) integer-valued float32 (`quantize_content`) and weights (N, P) int (how
    many impressions a distinct item stands for; 0 = padding, after the real points). Let
    |D| be a user's total weight. Each level splits every cluster heavier than
    ceil(|D| / max_clusters) into floor(cbrt(weight)) children by `iterations` weighted
    Lloyd steps started from evenly spaced members; a level that would exceed
    `max_clusters` splits only the heaviest clusters. Weighted k-means over distinct items
    equals k-means over the impressions (duplicates always share a cluster) at a fraction
    of the cost. Details, all exact: a point goes to the nearest centroid (ties to the
    lower child), a centroid is its members' weighted mean rounded to integers (half to
    even), and a split's members keep their order within each child.

    Returns labels (N, P) int64 in [0, max_clusters), -1 for padding (a label may end up
    empty), and sums (N, K, C + 2) float32: per cluster the weighted sum of its points
    (the centroid times the weight), its weight and its number of points, all exact.
    """
    users, width, dims = points.shape
    labels = np.full((users, width), -1, dtype=np.int64)
    sums = np.zeros((users, max_clusters, dims + 2), dtype=np.float32)
    for user in range(users):  # the env's path, compress_lifelong, loops in compiled code
        members = int((weights[user] > 0).sum())
        if members == 0:  # nothing to cluster: all padding
            continue
        labels[user, :members], user_sums = _kmeans(
            np.ascontiguousarray(points[user, :members], dtype=np.float32),
            np.asarray(weights[user, :members], dtype=np.float32), int(max_clusters),
            int(iterations))
        sums[user] = user_sums
    return labels, sums


def compress_lifelong(
    items: np.ndarray, feedback: np.ndarray, points: np.ndarray, length: int,
    iterations: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """The lifelong pathway of N users from their past impressions (oldest first).

    items (N, H) int64, feedback (N, H, F) float32 in any memory layout (a field-major
    warm history is read in place), points (I, C) the catalog's content vectors as
    `quantize_content` returns them for histories of at least H. Returns items
    (N, K) int64 and features (N, K, F + 1) float32: per cluster the item nearest the
    centroid (ties to the lower id), the mean feedback and the size (impressions), ordered
    by each cluster's most recent impression (most recent last), padded in front. With
    H <= K every impression is its own entry.
    """
    users, history = items.shape
    if items.size and (items.min() < 0 or items.max() >= points.shape[0]):
        raise ValueError(
            f"past items must be ids in [0, {points.shape[0] - 1}] (the rows of points), got "
            f"ids from {items.min()} to {items.max()}"
        )
    if history > length and np.abs(points).max() > _quantized_bound(points.shape[1], history):
        raise ValueError(
            f"points were quantised for histories shorter than {history} impressions: pass "
            "quantize_content(content, lifelong_history) for this history"
        )
    out_items = np.empty((users, length), dtype=np.int64)
    out_features = np.empty((users, length, feedback.shape[2] + 1), dtype=np.float32)
    _compress_users(np.ascontiguousarray(items, dtype=np.int64),
                    np.asarray(feedback, dtype=np.float32),  # any layout: read in place
                    np.ascontiguousarray(points, dtype=np.float32), int(length), int(iterations),
                    out_items, out_features)  # Python ints: one compiled signature
    return out_items, out_features


def distinct_items(items: np.ndarray, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's distinct items in id order, padded with item 0: (N, P) int64, P the most
    any user has; and the position (N, H) int64 of each impression's item among them.
    items (N, H) ids in [0, num_items)."""
    distinct = np.zeros(items.shape, dtype=np.int64)  # (N, H): no user has more than H
    index = np.empty(items.shape, dtype=np.int64)
    width = _distinct_rows(np.ascontiguousarray(items, dtype=np.int64),
                           np.zeros(num_items, dtype=np.int64), distinct, index)
    return distinct[:, :width], index


@njit(**_COMPILED)
def _distinct_rows(items, scratch, distinct, index):
    """`distinct_items` into distinct (N, H) and index (N, H); returns the widest row."""
    width = 0
    for user in range(items.shape[0]):
        row, _, positions = _distinct_items(items[user], scratch)
        distinct[user, :row.size] = row
        index[user] = positions
        width = max(width, row.size)
    return width


@njit(**_COMPILED)
def _compress_users(items, feedback, points, length, iterations, out_items, out_features):
    """`compress_lifelong` of each user in turn, into out_items (N, K), out_features."""
    impressions = np.zeros(points.shape[0], dtype=np.int64)  # (I,) scratch, kept zero
    for user in range(items.shape[0]):
        _compress_user(items[user], feedback[user], points, length, iterations, impressions,
                       out_items[user], out_features[user])


@njit(**_COMPILED)
def _compress_user(items, feedback, points, length, iterations, scratch, out_items,
                   out_features):
    """One user's lifelong entries: items (H,), feedback (H, F) -> out_items (K,),
    out_features (K, F + 1). scratch (I,) zeros, left zero."""
    history, fields = feedback.shape
    cluster = np.empty(history, dtype=np.int64)  # (H,) each impression's cluster
    entry = np.zeros(length, dtype=np.int64)  # (K,) each cluster's item
    if history <= length:  # nothing to compress: each impression is its own cluster
        for impression in range(history):
            cluster[impression] = impression
            entry[impression] = items[impression]
    else:
        distinct, weights, index = _distinct_items(items, scratch)
        user_points = np.empty((distinct.size, points.shape[1]), dtype=np.float32)  # (P, C)
        for slot in range(distinct.size):
            for dim in range(points.shape[1]):
                user_points[slot, dim] = points[distinct[slot], dim]
        labels, sums = _kmeans(user_points, weights, length, iterations)
        nearest = _nearest_members(user_points, labels, sums)
        for impression in range(history):
            cluster[impression] = labels[index[impression]]
        for label in range(length):
            entry[label] = distinct[nearest[label]]

    size = np.zeros(length, dtype=np.int64)
    recency = np.full(length, -1, dtype=np.int64)  # (K,) latest impression, -1 = no cluster
    totals = np.zeros((length, fields))  # (K, F) float64, summed oldest first
    for impression in range(history):
        label = cluster[impression]
        size[label] += 1
        recency[label] = impression
        for field in range(fields):
            totals[label, field] += feedback[impression, field]
    by_recency = np.argsort(recency)  # absent clusters (-1) first, then oldest to newest
    out_items[:] = BLANK
    out_features[:] = 0.0
    first_present = length - (recency >= 0).sum()
    for slot in range(first_present, length):
        label = by_recency[slot]
        out_items[slot] = entry[label]
        for field in range(fields):
            out_features[slot, field] = totals[label, field] / size[label]
        out_features[slot, fields] = size[label]


@njit(**_COMPILED)
def _distinct_items(items, scratch):
    """A user's distinct items in id order (P,), impressions of each (P,) and the index
    (H,) of each impression's distinct item. scratch (I,) zeros, left zero."""
    count = 0
    for item in items:
        count += scratch[item] == 0
        scratch[item] += 1
    found = np.empty(count + 1, dtype=np.int64)  # (P + 1,) the last slot: a sink, see below
    if scratch.size <= 8 * items.size:  # a small catalog: reading it in order beats a sort
        slot = 0
        for item in range(scratch.size):  # no branch: every item is stored, seen ones kept
            found[slot] = item
            slot += scratch[item] != 0
    else:
        slot = 0
        for item in items:
            if scratch[item] > 0:
                found[slot] = item
                slot += 1
                scratch[item] = -scratch[item]  # marked: later impressions of it skip it
        found[:count].sort()
        for item in found[:count]:
            scratch[item] = -scratch[item]
    distinct = found[:count]
    weights = np.empty(count, dtype=np.float32)
    for slot in range(count):
        weights[slot] = scratch[distinct[slot]]
        scratch[distinct[slot]] = slot
    index = np.empty(items.size, dtype=np.int64)
    for impression in range(items.size):
        index[impression] = scratch[items[impression]]
    for item in distinct:
        scratch[item] = 0
    return distinct, weights, index


@njit(**_COMPILED)
def _kmeans(points, weights, max_clusters, iterations):
    """`hierarchical_kmeans` of one user: points (P, C) and weights (P,) > 0, float32 and
    integer-valued, -> labels (P,) int64 and sums (K, C + 2) float32 (exact integers).

    The clusters live in one permutation `order` of the points: each cluster is a
    contiguous run of it from `start`; a split reorders its run by child (stably), so the
    children are runs too.
    """
    count_points, dims = points.shape
    order = np.arange(count_points)
    start = np.zeros(max_clusters, dtype=np.int64)  # (K,) first slot of each run in order
    sums = np.zeros((max_clusters, dims + 2), dtype=np.float32)  # (K, C + 2) see the doc
    for point in range(count_points):  # cluster 0: every point
        for dim in range(dims):
            sums[0, dim] += weights[point] * points[point, dim]
        sums[0, dims] += weights[point]
    sums[0, dims + 1] = count_points
    count = 1  # labels in use
    small = -(-int(sums[0, dims]) // max_clusters)  # ceil(|D| / K): not split further
    children = np.ones(max_clusters, dtype=np.int64)
    scratch = _split_buffers(count_points, dims, max(2, _cube_root(int(sums[0, dims]))))
    while True:
        _split_counts(sums[:count, dims], sums[:count, dims + 1], small, max_clusters - count,
                      children[:count])
        first_new = count  # child 0 keeps its parent's label; the others take the next ones
        for label in range(count):
            if children[label] > 1:
                _split(points, weights, order, start, sums, label, children[label], first_new,
                       iterations, scratch)
                first_new += children[label] - 1
        if first_new == count:
            break
        count = first_new
    labels = np.full(count_points, -1, dtype=np.int64)
    for label in range(count):
        first = start[label]
        for slot in range(first, first + int(sums[label, dims + 1])):
            labels[order[slot]] = label
    return labels, sums


@njit(**_COMPILED)
def _split_counts(sizes, members, small, budget, children):
    """Children per cluster for one level, into children (K',): floor(cbrt(size)) (at least
    2, at most its members) for clusters heavier than `small`, heaviest first (ties to the
    lower label), until the entry budget is spent; 1 = not split.

    sizes (K',) weight per cluster (0 = empty), members (K',) points per cluster."""
    wanted = 0  # children beyond the first that all clusters ask for
    for label in range(sizes.size):
        extra = 0
        if sizes[label] > small and members[label] > 1:
            extra = min(max(2, _cube_root(int(sizes[label]))), int(members[label])) - 1
        children[label] = 1 + extra
        wanted += extra
    if wanted <= budget:  # every cluster gets what it asks for: the order does not matter
        return
    heaviest = np.empty(sizes.size, dtype=np.int64)  # heaviest first, ties to the lower label
    for label in range(sizes.size):
        heaviest[label] = -int(sizes[label]) * sizes.size + label
    heaviest.sort()
    before = 0  # children beyond the first that heavier clusters asked for
    for key in heaviest:
        label = key % sizes.size
        extra = children[label] - 1
        children[label] = 1 + min(max(budget - before, 0), extra)
        before += extra


@njit(**_COMPILED)
def _cube_root(value):
    """floor(cbrt(value)) of a non-negative integer, exactly."""
    root = int(round(value ** (1.0 / 3.0)))
    while root**3 > value:
        root -= 1
    while (root + 1) ** 3 <= value:
        root += 1
    return root


class _SplitBuffers(NamedTuple):
    """Buffers for every `_split` of one user (allocating them per split would cost more
    than the arithmetic): at most R members and J children."""

    centroids: np.ndarray  # (J, C) float32
    norms: np.ndarray  # (J,) float32 |c|^2 per child
    nearest: np.ndarray  # (R,) int64 nearest child of each member
    child_sums: np.ndarray  # (J, C + 2) float32 per child as `_kmeans`'s sums
    next_slot: np.ndarray  # (J,) int64 where the reordered run takes each child's next member
    reordered: np.ndarray  # (R,) int64 the run, reordered by child


@njit(**_COMPILED)
def _split_buffers(members, dims, most_children):
    """`_SplitBuffers` for at most `members` points and `most_children` children."""
    return _SplitBuffers(
        np.empty((most_children, dims), dtype=np.float32),
        np.empty(most_children, dtype=np.float32), np.empty(members, dtype=np.int64),
        np.empty((most_children, dims + 2), dtype=np.float32),
        np.empty(most_children, dtype=np.int64), np.empty(members, dtype=np.int64))


@njit(**_COMPILED)
def _split(points, weights, order, start, sums, label, num_children, first_new, iterations,
           buffers):
    """Split cluster `label` into `num_children` by weighted Lloyd steps from evenly spaced
    members: child 0 keeps the label, child j > 0 takes first_new + j - 1."""
    centroids, child_sums, nearest = buffers.centroids, buffers.child_sums, buffers.nearest
    dims = points.shape[1]
    first = start[label]
    run = order[first:first + int(sums[label, dims + 1])]  # (R,) a view: reordered in place
    for child in range(num_children):
        member = points[run[(2 * child + 1) * run.size // (2 * num_children)]]
        for dim in range(dims):
            centroids[child, dim] = member[dim]
    for step in range(iterations + 1):
        _assign(points, run, num_children, buffers)
        _sum_children(points, weights, run, num_children, nearest, child_sums)
        if step == iterations:
            break
        moved = False
        for child in range(num_children):
            if child_sums[child, dims] > 0:  # an empty child keeps its centroid
                for dim in range(dims):
                    mean = np.rint(child_sums[child, dim] / child_sums[child, dims])
                    moved |= mean != centroids[child, dim]
                    centroids[child, dim] = mean
        if not moved:  # converged: the steps left would repeat this one exactly
            break

    next_slot, reordered = buffers.next_slot, buffers.reordered
    taken = 0
    for child in range(num_children):
        next_slot[child] = taken
        taken += int(child_sums[child, dims + 1])
        child_label = label if child == 0 else first_new + child - 1
        start[child_label] = first + next_slot[child]
        for column in range(dims + 2):
            sums[child_label, column] = child_sums[child, column]
    for slot in range(run.size):
        reordered[next_slot[nearest[slot]]] = run[slot]
        next_slot[nearest[slot]] += 1
    for slot in range(run.size):
        run[slot] = reordered[slot]


@njit(**_REORDERED)
def _centroid_norms(centroids, num_children, norms):
    """|c|^2 of the first `num_children` centroids (J, C) into norms (J,)."""
    for child in range(num_children):
        norm = np.float32(0.0)
        for dim in range(centroids.shape[1]):
            norm += centroids[child, dim] * centroids[child, dim]
        norms[child] = norm


@njit(**_REORDERED)
def _assign(points, run, num_children, buffers):
    """One Lloyd assignment: each member of `run` (R,) to its nearest of the first
    `num_children` centroids (J, C), ties to the lower child: the smallest |c|^2 - 2 x.c,
    into buffers.nearest (R,). Members go two at a time: they share the loads of each
    centroid and the loop, which is most of the cost of a 32-dimension dot product.

    Every value here is an integer below 2**24 in float32 (`quantize_content`), exact in
    any order of summation (`_REORDERED` lets the compiler vectorise the sums). The loops
    are written out because a call to a helper costs more than its arithmetic here.
    """
    centroids, norms, nearest = buffers.centroids, buffers.norms, buffers.nearest
    _centroid_norms(centroids, num_children, norms)
    dims = centroids.shape[1]
    two = np.float32(2.0)  # a float32 constant keeps the arithmetic in float32
    for slot in range(0, run.size, 2):
        first = points[run[slot]]
        second = points[run[min(slot + 1, run.size - 1)]]  # the last one twice if R is odd
        best_first, key_first = 0, np.float32(np.inf)
        best_second, key_second = 0, np.float32(np.inf)
        for child in range(num_children):
            centroid = centroids[child]
            dot_first, dot_second = np.float32(0.0), np.float32(0.0)
            for dim in range(dims):
                dot_first += first[dim] * centroid[dim]
                dot_second += second[dim] * centroid[dim]
            key = norms[child] - two * dot_first
            if key < key_first:
                best_first, key_first = child, key
            key = norms[child] - two * dot_second
            if key < key_second:
                best_second, key_second = child, key
        nearest[slot] = best_first
        nearest[min(slot + 1, run.size - 1)] = best_second


@njit(**_REORDERED)
def _sum_children(points, weights, run, num_children, nearest, child_sums):
    """Each child's sums (J, C + 2), as `_kmeans`'s, over the members of `run` (R,) that
    nearest (R,) gives it."""
    dims = points.shape[1]
    for child in range(num_children):
        for column in range(dims + 2):
            child_sums[child, column] = 0.0
    for slot in range(run.size):
        point, weight = points[run[slot]], weights[run[slot]]
        sums = child_sums[nearest[slot]]
        for dim in range(dims):
            sums[dim] += weight * point[dim]
        sums[dims] += weight
        sums[dims + 1] += 1


@njit(**_COMPILED)
def _nearest_members(points, labels, sums):
    """The point nearest each cluster's centroid (rounded), ties to the lower index:
    points (P, C), labels (P,), sums (K, C + 2) -> (K,) int64 point indices, 0 for empty
    clusters. Distances are exact."""
    dims = points.shape[1]
    centroids = np.empty((sums.shape[0], dims), dtype=np.float32)  # (K, C)
    for label in range(sums.shape[0]):
        weight = max(sums[label, dims], np.float32(1.0))
        for dim in range(dims):
            centroids[label, dim] = np.rint(sums[label, dim] / weight)
    return _nearest_to(points, labels, centroids)


@njit(**_REORDERED)
def _nearest_to(points, labels, centroids):
    """`_nearest_members` given the rounded centroids (K, C): squared distances are integers
    below 2**24 (`quantize_content`), exact in any order."""
    nearest = np.zeros(centroids.shape[0], dtype=np.int64)
    best_gap = np.full(centroids.shape[0], np.inf, dtype=np.float32)
    for point in range(points.shape[0]):
        label = labels[point]
        row, centroid = points[point], centroids[label]
        gap = np.float32(0.0)
        for dim in range(row.size):
            gap += (row[dim] - centroid[dim]) * (row[dim] - centroid[dim])
        if gap < best_gap[label]:
            nearest[label], best_gap[label] = point, gap
    return nearest
