"""The lifelong pathway: a user's past impressions compressed by hierarchical k-means.

The report's compression: up to `lifelong_history` past impressions become
`lifelong_length` entries by hierarchical k-means over the items' content embeddings. Each
level splits every large cluster into floor(cbrt(size)) clusters, until clusters are small
or the entry budget is spent. An entry is the item nearest to its cluster's centroid (it
carries the sparse features: id, and through the catalog, category and creator), the
cluster's mean feedback (the dense features) and the cluster size.

New users start all the time (a few percent of users per request), so this runs batched:
every split of a level, of every user being started, goes through a few batched matmuls.
The content vectors are quantised to small integers (`quantize_content`), which makes every
sum the k-means forms exact in float32: a user's clusters are then the same bits in any
batch, which is what lets env i of a vector env equal a single env.

Letters used in shape comments: N users, H history length, F feedback fields, I items,
C content dimensions, K lifelong entries (clusters), P distinct items of a user (padded),
G clusters being split, R members of one cluster (padded), J children of one cluster
(padded), Q points of all users.
"""

from __future__ import annotations

import math

import numpy as np

from envs.spec import BLANK, NUM_FEEDBACK

_EXACT = 2**24  # float32 holds every integer below this exactly
_CLASSES_PER_OCTAVE = 2  # splits are batched by member count within a factor of 2**(1/2)
_BATCH_OVERHEAD = 4_000  # padded (cluster, child, member) slots that cost as much as a batch


def quantize_content(content: np.ndarray, lifelong_history: int) -> np.ndarray:
    """The catalog's content vectors (I, C) as the integer-valued float32 points the lifelong
    k-means runs on: centred, scaled so that the largest |coordinate| is `_quantized_bound`
    (about 100 for 32 dimensions), and rounded, a scalar quantisation like faiss's SQ8.

    Why: every dot product, squared norm and weighted sum the k-means forms is then an
    integer below 2**24, which float32 holds exactly, so no summation order can change it.
    A user's clusters are therefore the same bits whatever batch, padding or BLAS kernel
    computes them (BLAS results otherwise change with the shape of the matrices), and
    float32 runs at twice float64's speed. `lifelong_history` bounds the cluster weights.
    """
    content = np.asarray(content, dtype=np.float64)
    centred = content - content.mean(axis=0)
    bound = _quantized_bound(content.shape[1], lifelong_history)
    scale = bound / max(float(np.abs(centred).max()), 1e-12)
    return np.rint(centred * scale).astype(np.float32)


def _quantized_bound(dims: int, lifelong_history: int) -> int:
    """The largest |coordinate| B of a quantised point that keeps the k-means exact: the
    distance keys of `_lloyd`, 2**b (|c|^2 - 2 x.c) + child with 2**b >= floor(cbrt(H))
    children (at most 2**b (3 C B**2 + 1)), and the weighted sums (at most H B) stay below
    2**24; at most 255 (8 bits and a sign)."""
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


def _split_counts(
    sizes: np.ndarray, members: np.ndarray, small: np.ndarray, budget: np.ndarray
) -> np.ndarray:
    """Children per cluster for one level: floor(cbrt(size)) (at least 2) for clusters larger
    than `small`, largest first, until each user's entry budget is spent.

    sizes (N, K) impressions per cluster (0 = no cluster), members (N, K) distinct items per
    cluster (a cluster is never split into more children than it has items), small (N,),
    budget (N,) clusters that may still be added. Returns (N, K) int64, 1 = not split.
    """
    wanted = np.maximum(2, np.floor(np.cbrt(sizes) + 1e-9).astype(np.int64))  # _max_children
    extra = np.where((sizes > small[:, None]) & (members > 1),
                     np.minimum(wanted, members) - 1, 0)  # (N, K)
    descending = -sizes.astype(np.min_scalar_type(-int(sizes.max())))  # small ints sort fast
    order = np.argsort(descending, axis=1, kind="stable")
    extra_sorted = np.take_along_axis(extra, order, axis=1)
    before = np.cumsum(extra_sorted, axis=1) - extra_sorted
    granted_sorted = np.minimum(np.maximum(budget[:, None] - before, 0), extra_sorted)
    granted = np.empty_like(granted_sorted)
    np.put_along_axis(granted, order, granted_sorted, axis=1)
    return granted + 1


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
    of the cost. All the splits of a level, of all users, run in a few batched calls.

    Returns labels (N, P) int64 in [0, max_clusters), -1 for padding (a label may end up
    empty), and sums (N, K, C + 2) float32: per cluster the weighted sum of its points
    (the centroid times the weight), its weight and its number of points, all exact.
    """
    dims = points.shape[2]
    table = _ClusterTable(points, weights, max_clusters)
    small = -(-weights.sum(1) // max_clusters)  # (N,) ceil(|D| / K)
    while True:
        children = _split_counts(table.sums[..., dims].astype(np.int64),
                                 table.sums[..., dims + 1].astype(np.int64), small,
                                 max_clusters - table.count)  # (N, K)
        user, label = np.nonzero(children > 1)  # (G,) each, sorted by user then label
        if user.size == 0:
            return table.labels(), table.sums
        num_children = children[user, label]
        # child 0 keeps its parent's label; the others take the user's next free labels
        first_new = table.count[user] + _exclusive_cumsum_by_user(num_children - 1, user)
        members = table.sums[user, label, dims + 1].astype(np.int64)  # (G,)
        for batch in _batches(members, num_children):
            table.split(user[batch], label[batch], members[batch], num_children[batch],
                        first_new[batch], iterations)
        table.count += np.bincount(user, weights=num_children - 1,
                                   minlength=table.count.size).astype(np.int64)


def _batches(members: np.ndarray, num_children: np.ndarray) -> list[np.ndarray]:
    """Which splits run together in one batch of `_lloyd`, padded to its most members and
    children: clusters of the same number of children and members within a factor of
    2 ** (1 / _CLASSES_PER_OCTAVE), each such class merged into the batch where its padding
    costs least if that costs less than a batch of its own (`_BATCH_OVERHEAD`). The
    grouping never changes a result (the k-means is exact), only its speed.

    members, num_children (G,). Returns arrays of indices into G.
    """
    size_class = np.ceil(_CLASSES_PER_OCTAVE * np.log2(members)).astype(np.int64)
    classes = size_class * (int(num_children.max()) + 1) + num_children
    ordered = np.sort(classes)[::-1]  # np.unique costs ~100x more on arrays this small
    batches: list[list] = []  # [indices, most members, most children]
    for each in ordered[np.r_[True, ordered[1:] != ordered[:-1]]]:  # largest first
        chosen = np.flatnonzero(classes == each)
        children = int(num_children[chosen[0]])
        width = int(members[chosen].max())
        alone = chosen.size * width * children + _BATCH_OVERHEAD
        costs = [(indices.size + chosen.size) * most_members * max(most, children)
                 - indices.size * most_members * most for indices, most_members, most in batches]
        best = int(np.argmin(costs)) if costs else -1
        if costs and costs[best] < alone:
            indices, most_members, most = batches[best]
            batches[best] = [np.concatenate([indices, chosen]), most_members,
                             max(most, int(children))]
        else:
            batches.append([chosen, width, int(children)])
    return [indices for indices, _, _ in batches]


class _ClusterTable:
    """The clusters of N users during `hierarchical_kmeans`.

    `order` (N * P,) lists the users' points (flat indices into N * P) so that every cluster
    is one contiguous run, starting at `start` (N, K) within its user's P slots; `sums`
    (N, K, C + 2) holds each cluster's exact weighted sum of points, weight and number of
    points. A split reorders its run by child, so the children are runs too. `points`
    (N, P, C + 1) carry a last coordinate 1 (see `_lloyd`).
    """

    def __init__(self, points: np.ndarray, weights: np.ndarray, max_clusters: int) -> None:
        users, width, dims = points.shape
        self.count = np.ones(users, dtype=np.int64)  # (N,) labels in use
        self.members = (weights > 0).sum(1)  # (N,)
        self.order = np.arange(users * width)  # (N * P,)
        self.start = np.zeros((users, max_clusters), dtype=np.int64)
        self.points = np.ones((users, width, dims + 1), dtype=np.float32)
        self.points[..., :dims] = points
        self.weights = weights.astype(np.float32)  # (N, P)
        self.sums = np.zeros((users, max_clusters, dims + 2), dtype=np.float32)
        self.sums[:, 0, :dims + 1] = np.matmul(self.weights[:, None, :], self.points)[:, 0]
        self.sums[:, 0, dims + 1] = self.members

    def split(self, user: np.ndarray, label: np.ndarray, members: np.ndarray,
              num_children: np.ndarray, first_new: np.ndarray, iterations: int) -> None:
        """Split clusters `label` (G,) of users `user` (G,), with `members` (G,) points each,
        into `num_children` (G,): child 0 keeps the label, child j > 0 takes
        first_new + j - 1."""
        users, width, _ = self.points.shape
        max_clusters, extended = self.sums.shape[1:]
        start = self.start[user, label]  # (G,)
        real = np.arange(int(members.max())) < members[:, None]  # (G, R)
        slot = (user * width + start)[:, None] + np.arange(real.shape[1])  # (G, R)
        if (self.count[user] == 1).all():  # first level: whole users, points in order
            point = slot
            member_points = self.points[user, :real.shape[1]]
        else:
            point = np.take(self.order, slot, mode="clip")  # padding: any point, weight 0
            member_points = np.take(self.points.reshape(users * width, -1), point, axis=0)
        assignment, child_sums = _lloyd(member_points, np.take(self.weights, point) * real,
                                        members, num_children, iterations)
        # reorder each run by child (stably, padding last): the children become runs
        by_child = np.argsort(np.where(real, assignment, 255).astype(np.uint8), axis=1,
                              kind="stable")  # (G, R)
        by_child += np.arange(user.size)[:, None] * real.shape[1]
        self.order[slot[real]] = np.take(point, by_child)[real]
        most = child_sums.shape[1]
        child = np.arange(most)
        child_members = np.bincount((np.arange(user.size)[:, None] * most + assignment)[real],
                                    minlength=user.size * most).reshape(user.size, most)
        child_label = np.where(child == 0, label[:, None], first_new[:, None] + child - 1)
        child_start = start[:, None] + np.cumsum(child_members, axis=1) - child_members
        exists = child < num_children[:, None]  # (G, J)
        flat = (user[:, None] * max_clusters + child_label)[exists]
        self.start.ravel()[flat] = child_start[exists]
        flat_sums = self.sums.reshape(-1, extended)
        flat_sums[flat, :-1] = child_sums[exists]
        flat_sums[flat, -1] = child_members[exists]

    def labels(self) -> np.ndarray:
        """Each point's cluster (N, P) int64, -1 for padding."""
        users, width, _ = self.points.shape
        size = self.sums[..., -1].astype(np.int64)  # (N, K) points per cluster
        user, label = np.nonzero(size)
        runs = np.argsort(user * width + self.start[user, label], kind="stable")
        real = np.arange(width) < self.members[:, None]  # (N, P): runs fill these
        labels = np.full(users * width, -1, dtype=np.int64)
        labels[self.order.reshape(users, width)[real]] = np.repeat(label[runs],
                                                                   size[user, label][runs])
        return labels.reshape(users, width)


def _exclusive_cumsum_by_user(values: np.ndarray, user: np.ndarray) -> np.ndarray:
    """For groups sorted by user: the sum of `values` of the same user's earlier groups."""
    total = np.cumsum(values) - values
    first_of_user = np.searchsorted(user, user, side="left")
    return total - total[first_of_user]


def _lloyd(
    member_points: np.ndarray, member_weights: np.ndarray, members: np.ndarray,
    num_children: np.ndarray, iterations: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted k-means of each group's members into its children.

    member_points (G, R, C + 1) integer-valued float32 points with a last coordinate 1,
    member_weights (G, R) float32 (0 for padding, after the `members` (G,) real ones),
    num_children (G,). A centroid is its members' weighted mean rounded to integers, so
    every sum below is exact (see `quantize_content`) and padding, of members or of
    children, cannot change a result. Returns child ids (G, R) and each child's weighted
    sum of member_points (G, J, C + 1) (the last is its weight), J = the most children.
    """
    groups, width, dims = member_points.shape
    dims -= 1  # the last coordinate is the constant 1
    most = int(num_children.max())
    index_bits = (most - 1).bit_length()
    child = np.arange(most)
    start_at = ((child + 0.5) * members[:, None] / num_children[:, None]).astype(np.int64)
    start_at = np.minimum(start_at, members[:, None] - 1)  # (G, J) evenly spaced members
    centroids = np.take(member_points.reshape(-1, dims + 1),
                        np.arange(groups)[:, None] * width + start_at, axis=0)[..., :dims]
    # key of child j for point x: 2**b (|c|^2 - 2 x.c) + j, one matmul with x's last 1
    key_constant = (child + np.where(child < num_children[:, None], 0, 2 * _EXACT)
                    ).astype(np.float32)  # (G, J); a child that does not exist is never nearest
    scale = np.float32(1 << index_bits)
    key_rows = np.empty((groups, most, dims + 1), dtype=np.float32)  # (G, J, C + 1)
    points_t = member_points.transpose(0, 2, 1)  # (G, C + 1, R)
    nearest = np.empty((groups, most, width), dtype=np.float32)  # (G, J, R) weighted one-hot
    for step in range(iterations + 1):
        np.multiply(centroids, -2 * scale, out=key_rows[..., :dims])
        key_rows[..., dims] = scale * np.einsum("gjc,gjc->gj", centroids, centroids)
        key_rows[..., dims] += key_constant
        keys = np.matmul(key_rows, points_t)  # (G, J, R) exact integers
        key = keys.min(axis=1)  # (G, R): the nearest child's key, ties to the lower child
        np.equal(keys, key[:, None, :], out=nearest)
        nearest *= member_weights[:, None, :]
        sums = np.matmul(nearest, member_points)  # (G, J, C + 1)
        if step == iterations:
            return key.astype(np.int32) & ((1 << index_bits) - 1), sums  # key mod 2**b
        weight = sums[..., dims:]  # (G, J, 1)
        centroids = np.where(weight > 0, np.rint(sums[..., :dims] / np.maximum(weight, 1)),
                             centroids)
    raise AssertionError("unreachable: the loop returns on its last step")


def _distinct_items(items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's distinct items, in id order: (distinct (N, P) padded with 0, weights (N, P)
    impressions per distinct item, 0 = padding, index (N, H) of each impression's distinct
    item)."""
    users, history = items.shape
    ordered = items * history + np.arange(history)  # (N, H) item, then impression
    ordered.sort(axis=1)
    impression = ordered % history
    ordered //= history
    new = np.ones(items.shape, dtype=bool)
    np.not_equal(ordered[:, 1:], ordered[:, :-1], out=new[:, 1:])
    rank = np.cumsum(new, axis=1) - 1  # (N, H) distinct index of each sorted impression
    width = int(rank[:, -1].max()) + 1
    rows = np.arange(users)[:, None]
    index = np.empty_like(rank)
    index[rows, impression] = rank
    slot = (rows * width + rank).ravel()  # (N * H,) flat distinct slot of each impression
    first = np.flatnonzero(new)
    distinct = np.zeros(users * width, dtype=np.int64)
    distinct[slot[first]] = ordered.ravel()[first]
    weights = np.bincount(slot, minlength=users * width)
    return distinct.reshape(users, width), weights.reshape(users, width), index


def _nearest_members(points: np.ndarray, labels: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """The point nearest to each cluster's centroid (rounded), ties to the lower index.

    points (N, P, C), labels (N, P) and sums (N, K, C + 2) as `hierarchical_kmeans` gives
    them. Returns (N, K) int64 point indices, 0 for empty clusters. Distances are exact.
    """
    users, width, dims = points.shape
    clusters = sums.shape[1]
    flat = np.flatnonzero(labels >= 0)  # (Q,) points in N * P
    cluster = flat // width * clusters + labels.ravel()[flat]  # (Q,)
    flat_sums = sums.reshape(-1, dims + 2)
    centroids = np.rint(flat_sums[:, :dims] / np.maximum(flat_sums[:, dims:dims + 1], 1))
    offset = np.take(points.reshape(-1, dims), flat, axis=0) - np.take(centroids, cluster, axis=0)
    gap = np.einsum("qc,qc->q", offset, offset)  # (Q,) squared distances, exact
    best = np.full(users * clusters, width, dtype=np.int64)  # empty clusters: width % width
    np.minimum.at(best, cluster, gap.astype(np.int64) * width + flat % width)
    return (best % width).reshape(users, clusters)


def compress_lifelong(
    items: np.ndarray, feedback: np.ndarray, points: np.ndarray, length: int,
    iterations: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """The lifelong pathway of N users from their past impressions (oldest first).

    items (N, H) int64, feedback (N, H, F) float32, points (I, C) the catalog's content
    vectors as `quantize_content` returns them for histories of at least H. Returns items
    (N, K) int64 and features (N, K, F + 1) float32: per cluster the item nearest the
    centroid, the mean feedback and the size (impressions), ordered by each cluster's most
    recent impression (most recent last), padded in front. With H <= K every impression is
    its own entry.
    """
    users, history = items.shape
    if history <= length:  # nothing to compress: each impression is its own cluster
        labels = np.broadcast_to(np.arange(history), (users, history))
        entry_items = np.zeros((users, length), dtype=np.int64)
        entry_items[:, :history] = items
    else:
        labels, entry_items = _cluster_history(items, points, length, iterations)
    rows = np.arange(users)[:, None]
    cluster = (rows * length + labels).ravel()  # (N * H,) global cluster id per impression
    size = np.bincount(cluster, minlength=users * length)  # (N * K,)
    recency = np.full(users * length, -1, dtype=np.int64)  # -1 = no such cluster
    np.maximum.at(recency, cluster, np.broadcast_to(np.arange(history), (users, history)).ravel())
    columns = feedback.reshape(-1, feedback.shape[-1]).T  # (F, N * H)
    feedback_sum = np.stack([np.bincount(cluster, weights=column, minlength=users * length)
                             for column in columns], axis=1)  # (N * K, F)

    # each user's clusters, oldest first, at the end of its K slots (absent ones sort first)
    by_recency = (rows * length + np.argsort(recency.reshape(users, length), axis=1)).ravel()
    present = recency[by_recency] >= 0
    out_items = np.where(present, entry_items.ravel()[by_recency], BLANK).reshape(users, length)
    out_features = np.zeros((users * length, NUM_FEEDBACK + 1), dtype=np.float32)
    chosen = by_recency[present]
    out_features[present, :NUM_FEEDBACK] = feedback_sum[chosen] / size[chosen, None]
    out_features[present, NUM_FEEDBACK] = size[chosen]
    return out_items, out_features.reshape(users, length, NUM_FEEDBACK + 1)


def _cluster_history(items: np.ndarray, points: np.ndarray, length: int,
                     iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """The lifelong clusters of N users' past impressions (N, H): each impression's cluster
    (N, H) in [0, length) and each cluster's item nearest its centroid (N, K)."""
    distinct, weights, index = _distinct_items(items)
    distinct_points = np.take(points, distinct, axis=0)  # (N, P, C)
    largest = max(distinct_points.max(), -distinct_points.min())
    if largest > _quantized_bound(points.shape[1], items.shape[1]):
        raise ValueError(
            f"points were quantised for histories shorter than {items.shape[1]} "
            "impressions: pass quantize_content(content, lifelong_history) for this history"
        )
    labels, sums = hierarchical_kmeans(distinct_points, weights, length, iterations)
    nearest = _nearest_members(distinct_points, labels, sums)  # (N, K)
    return (np.take_along_axis(labels, index, axis=1),
            np.take_along_axis(distinct, nearest, axis=1))
