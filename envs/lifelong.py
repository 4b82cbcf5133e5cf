"""The lifelong pathway: a user's past impressions compressed by hierarchical k-means.

The report's compression: up to `lifelong_history` past impressions become
`lifelong_length` entries by hierarchical k-means over the items' content embeddings. Each
level splits every large cluster into floor(cbrt(size)) clusters, until clusters are small
or the entry budget is spent. An entry is the item nearest to its cluster's centroid (it
carries the sparse features: id, and through the catalog, category and creator), the
cluster's mean feedback (the dense features) and the cluster size.

New users start all the time (a few percent of users per request), so the compression is
compiled (numba): one user after another, with no padding and no temporaries, and without
the GIL, so threads can start users side by side (envs/simulator.py). The content vectors
are quantised to small integers (`quantize_content`), which makes every distance, sum and
rounded centroid the k-means forms an exact integer: a user's clusters are the same bits
whatever batch, thread or summation order computes them, which is what lets env i of a
vector env equal a single env.

Letters used in shape comments: N users, H history length, F feedback fields, I items,
C content dimensions, K lifelong entries (clusters), P distinct items of a user, J children
of one cluster.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from envs.spec import BLANK

_EXACT = 2**24  # float32 holds every integer below this exactly
_COMPILED = {"cache": True, "nogil": True}  # compiled once per machine; threads run it freely
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

    items (N, H) int64, feedback (N, H, F) float32, points (I, C) the catalog's content
    vectors as `quantize_content` returns them for histories of at least H. Returns items
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
                    np.ascontiguousarray(feedback, dtype=np.float32),
                    np.ascontiguousarray(points, dtype=np.float32), int(length), int(iterations),
                    out_items, out_features)  # Python ints: one compiled signature
    return out_items, out_features


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
            user_points[slot] = points[distinct[slot]]
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
    found = np.empty(items.size, dtype=np.int64)
    count = 0
    for item in items:
        if scratch[item] == 0:
            found[count] = item
            count += 1
        scratch[item] += 1
    if scratch.size <= 8 * items.size:  # a small catalog: reading it in order beats a sort
        count = 0
        for item in range(scratch.size):
            if scratch[item]:
                found[count] = item
                count += 1
        distinct = found[:count]
    else:
        distinct = np.sort(found[:count])
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
    _assign(points, weights, order, points[:1], np.zeros(1, dtype=np.float32), 1,
            np.empty(count_points, dtype=np.int64), sums[:1])  # cluster 0: every point
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
    before = 0  # children beyond the first that heavier clusters asked for
    for label in np.argsort(-sizes, kind="mergesort"):
        extra = 0
        if sizes[label] > small and members[label] > 1:
            extra = min(max(2, _cube_root(int(sizes[label]))), int(members[label])) - 1
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


@njit(**_COMPILED)
def _split_buffers(members, dims, most_children):
    """Buffers for every `_split` of one user: at most `members` points and `most_children`
    children (allocating them per split would cost more than the arithmetic)."""
    return (np.empty((most_children, dims), dtype=np.float32),  # centroids (J, C)
            np.empty(most_children, dtype=np.float32),  # |c|^2 per child (J,)
            np.empty(members, dtype=np.int64),  # nearest child of each member (R,)
            np.empty((most_children, dims + 2), dtype=np.float32),  # child sums (J, C + 2)
            np.empty(members, dtype=np.int64))  # the reordered run (R,)


@njit(**_COMPILED)
def _split(points, weights, order, start, sums, label, num_children, first_new, iterations,
           scratch):
    """Split cluster `label` into `num_children` by weighted Lloyd steps from evenly spaced
    members: child 0 keeps the label, child j > 0 takes first_new + j - 1."""
    centroids, norms, nearest, child_sums, reordered = scratch  # the first J or R rows used
    dims = points.shape[1]
    first = start[label]
    run = order[first:first + int(sums[label, dims + 1])]  # (R,) a view: reordered in place
    for child in range(num_children):
        centroids[child] = points[run[(2 * child + 1) * run.size // (2 * num_children)]]
    for step in range(iterations + 1):
        _assign(points, weights, run, centroids, norms, num_children, nearest, child_sums)
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

    slot_of_child = np.empty(num_children, dtype=np.int64)  # (J,) next slot of each child
    taken = 0
    for child in range(num_children):
        slot_of_child[child] = taken
        taken += int(child_sums[child, dims + 1])
        child_label = label if child == 0 else first_new + child - 1
        start[child_label] = first + slot_of_child[child]
        sums[child_label] = child_sums[child]
    for slot in range(run.size):
        reordered[slot_of_child[nearest[slot]]] = run[slot]
        slot_of_child[nearest[slot]] += 1
    run[:] = reordered[:run.size]


@njit(**_REORDERED)
def _assign(points, weights, run, centroids, norms, num_children, nearest, child_sums):
    """One Lloyd assignment: each member of `run` (R,) to its nearest of the first
    `num_children` centroids (J, C), ties to the lower child: the smallest |c|^2 - 2 x.c.
    Writes nearest (R,) and each child's sums, child_sums (J, C + 2) as `_kmeans`'s.

    Every value here is an integer below 2**24 in float32 (`quantize_content`), exact in
    any order of summation (`_REORDERED` lets the compiler vectorise the sums). The loops
    are written out because a call to a helper costs more than its arithmetic here.
    """
    dims = centroids.shape[1]
    two = np.float32(2.0)  # a float32 constant keeps the arithmetic in float32
    for child in range(num_children):
        centroid = centroids[child]
        norm = np.float32(0.0)
        for dim in range(dims):
            norm += centroid[dim] * centroid[dim]
        norms[child] = norm
        child_sums[child] = 0.0
    for slot in range(run.size):
        point = points[run[slot]]
        best, best_key = 0, np.float32(np.inf)
        for child in range(num_children):
            centroid = centroids[child]
            dot = np.float32(0.0)
            for dim in range(dims):
                dot += point[dim] * centroid[dim]
            key = norms[child] - two * dot
            if key < best_key:
                best, best_key = child, key
        nearest[slot] = best
        weight = weights[run[slot]]
        sums = child_sums[best]
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
