"""The observation builder: OneRec's four user pathways, for N users at once.

- static: the profile token (STATIC_FIELDS);
- short-term: the last `short_term_length` impressions and their feedback;
- positive: the last `positive_length` engaged impressions (envs.response.engaged);
- lifelong: up to `lifelong_history` past impressions compressed to `lifelong_length`
  entries by hierarchical k-means over the items' content embeddings (the report's
  compression): each step splits every large cluster into floor(cbrt(size)) clusters, until
  clusters are small or the entry budget is spent. An entry is the item nearest to its
  cluster's centroid (it carries the sparse features: id, and through the catalog, category
  and creator), the cluster's mean feedback (the dense features) and the cluster size.

Sequences are most recent last, padded in front with item id BLANK (-1) and zero feedback.
The lifelong summary is built once per session from the warm history: lifelong interest
moves slowly, and recomputing it per request would dominate the step.

Letters used in shape comments: N users, L pathway length, W values per entry, M items
pushed at once, H history length, C content dimensions, K lifelong entries, G clusters being
split, R members of one cluster (padded), J children of one cluster (padded).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from envs.response import engaged
from envs.spec import BLANK, NUM_FEEDBACK


class RingBuffer:
    """The last L entries (item id and W values) of N users, read back oldest first.

    Each entry is written twice, at slot t mod L and t mod L + L of a 2L-wide buffer, so the
    window of the last L entries is always one contiguous run: reading it is a strided
    gather of whole rows, not a per-element one.
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
        rank = np.cumsum(keep, axis=1) - 1  # (R, M) position among this push's kept entries
        kept = rank[:, -1] + 1  # (R,)
        keep = keep & (rank >= (kept - self.length)[:, None])  # older ones would be overwritten
        user, column = np.nonzero(keep)
        slot = (self.count[rows][user] + rank[user, column]) % self.length
        target = rows[user]
        for offset in (0, self.length):
            self.items[target, slot + offset] = items[user, column]
            self.values[target, slot + offset] = values[user, column]
        self.count[rows] += kept

    def window(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The last L entries, oldest first: items (R, L) int64, values (R, L, W) float32."""
        rows = np.arange(self.count.shape[0]) if rows is None else rows
        length = self.length
        start = self.count[rows] % length
        item_stride, value_stride = self.items.strides, self.values.strides
        item_windows = as_strided(
            self.items, shape=(self.items.shape[0], length, length),
            strides=(item_stride[0], item_stride[1], item_stride[1]), writeable=False,
        )  # (N, L start positions, L)
        value_windows = as_strided(
            self.values, shape=(self.values.shape[0], length, length, self.values.shape[2]),
            strides=(value_stride[0], value_stride[1], value_stride[1], value_stride[2]),
            writeable=False,
        )  # (N, L start positions, L, W)
        return item_windows[rows, start], value_windows[rows, start]


def _split_counts(
    sizes: np.ndarray, members: np.ndarray, small: np.ndarray, budget: np.ndarray
) -> np.ndarray:
    """Children per cluster for one level: floor(cbrt(size)) (at least 2) for clusters larger
    than `small`, largest first, until each user's entry budget is spent.

    sizes (N, K) impressions per cluster (0 = no cluster), members (N, K) distinct items per
    cluster (a cluster is never split into more children than it has items), small (N,),
    budget (N,) clusters that may still be added. Returns (N, K) int64, 1 = not split.
    """
    wanted = np.maximum(2, np.floor(np.cbrt(sizes) + 1e-9).astype(np.int64))
    extra = np.where((sizes > small[:, None]) & (members > 1),
                     np.minimum(wanted, members) - 1, 0)  # (N, K)
    order = np.argsort(-sizes, axis=1, kind="stable")
    extra_sorted = np.take_along_axis(extra, order, axis=1)
    before = np.cumsum(extra_sorted, axis=1) - extra_sorted
    granted_sorted = np.clip(budget[:, None] - before, 0, extra_sorted)
    granted = np.empty_like(granted_sorted)
    np.put_along_axis(granted, order, granted_sorted, axis=1)
    return granted + 1


def hierarchical_kmeans(
    points: np.ndarray, weights: np.ndarray, max_clusters: int, iterations: int = 2
) -> np.ndarray:
    """Cluster each user's weighted points into at most `max_clusters` clusters, top-down.

    points (N, P, C) float and weights (N, P) int (how many impressions a distinct item
    stands for; 0 = padding). Let |D| be a user's total weight. Each level splits every
    cluster heavier than ceil(|D| / max_clusters) into floor(cbrt(weight)) children by
    `iterations` weighted Lloyd steps started from evenly spaced members; a level that would
    exceed `max_clusters` splits only the heaviest clusters. Weighted k-means over distinct
    items equals k-means over the impressions (duplicates always share a cluster) at a
    fraction of the cost. Returns labels (N, P) int64 in [0, max_clusters), -1 for padding;
    a label may end up empty.
    """
    users = points.shape[0]
    valid = weights > 0
    labels = np.where(valid, 0, -1)  # (N, P)
    count = np.ones(users, dtype=np.int64)
    small = -(-weights.sum(1) // max_clusters)  # (N,) ceil(|D| / K)
    while True:
        sizes = _per_cluster(labels, weights, max_clusters)  # (N, K)
        distinct = _per_cluster(labels, valid, max_clusters)  # (N, K)
        children = _split_counts(sizes, distinct, small, max_clusters - count)  # (N, K)
        split_user, split_label = np.nonzero(children > 1)
        if split_user.size == 0:
            return labels
        num_children = children[split_user, split_label]  # (G,)
        added = num_children - 1
        # child 0 keeps its parent's label; the others take the user's next free labels
        first_new = count[split_user] + _exclusive_cumsum_by_user(added, split_user)
        order = np.argsort(np.where(valid, labels, max_clusters), axis=1, kind="stable")
        offsets = np.cumsum(distinct, axis=1) - distinct  # (N, K) first position of a label
        # clusters with similar numbers of items are split together: padding wastes < half
        group_members = distinct[split_user, split_label]
        size_class = np.ceil(np.log2(group_members)).astype(np.int64)
        for size_bucket in np.unique(size_class):
            chosen = np.flatnonzero(size_class == size_bucket)
            user = split_user[chosen]
            width = int(group_members[chosen].max())
            member_valid = np.arange(width) < group_members[chosen, None]  # (G', R)
            position = offsets[user, split_label[chosen]][:, None] + np.arange(width)
            members = order[user[:, None], np.minimum(position, order.shape[1] - 1)]
            assignment = _lloyd(points[user[:, None], members],
                                weights[user[:, None], members] * member_valid,
                                num_children[chosen], iterations)  # (G', R)
            new_label = np.where(assignment == 0, split_label[chosen, None],
                                 first_new[chosen, None] + assignment - 1)  # (G', R)
            group, slot = np.nonzero(member_valid)
            labels[user[group], members[group, slot]] = new_label[group, slot]
        count += np.bincount(split_user, weights=added, minlength=users).astype(np.int64)


def _per_cluster(labels: np.ndarray, weights: np.ndarray, max_clusters: int) -> np.ndarray:
    """Sum of `weights` per (user, label) over points with a label >= 0: (N, K) int64."""
    users = labels.shape[0]
    flat = (np.arange(users)[:, None] * max_clusters + labels)[labels >= 0]
    totals = np.bincount(flat, weights=weights[labels >= 0], minlength=users * max_clusters)
    return totals.astype(np.int64).reshape(users, max_clusters)


def _exclusive_cumsum_by_user(values: np.ndarray, user: np.ndarray) -> np.ndarray:
    """For groups sorted by user: the sum of `values` of the same user's earlier groups."""
    total = np.cumsum(values) - values
    first_of_user = np.searchsorted(user, user, side="left")
    return total - total[first_of_user]


def _lloyd(
    member_points: np.ndarray, member_weights: np.ndarray, num_children: np.ndarray,
    iterations: int,
) -> np.ndarray:
    """Weighted k-means of each group's members into its children: -> (G, R) child ids.

    member_points (G, R, C), member_weights (G, R) (0 = padding), num_children (G,).
    Computed in float64 so that a user's clusters do not depend on which other users share
    the batch (padding changes the summation order; float64 makes a flipped tie
    practically impossible).
    """
    groups, width_members, _ = member_points.shape
    member_points = member_points.astype(np.float64)
    weights = member_weights.astype(np.float64)
    width = int(num_children.max())
    present = (member_weights > 0).sum(1)  # (G,) members are packed at the front
    child = np.arange(width)
    start_at = ((child + 0.5) * present[:, None] / num_children[:, None]).astype(np.int64)
    start_at = np.minimum(start_at, present[:, None] - 1)  # (G, J) evenly spaced members
    centroids = np.take_along_axis(member_points, start_at[..., None], axis=1)  # (G, J, C)
    absent = np.where(child[None, :] >= num_children[:, None], np.inf, 0.0)  # (G, J)
    slot = np.arange(groups)[:, None] * width  # (G, 1) offset of each group's children
    for step in range(iterations + 1):
        scaled_t = np.ascontiguousarray(centroids.transpose(0, 2, 1)) * -2.0  # (G, C, J)
        offset = (centroids * centroids).sum(2) + absent  # (G, J)
        distance = np.matmul(member_points, scaled_t)  # (G, R, J): |c|^2 - 2 x.c, by parts
        distance += offset[:, None, :]
        assignment = distance.argmin(axis=2)  # (G, R)
        if step == iterations:
            return assignment
        mass = (assignment[:, None, :] == child[None, :, None]) * weights[:, None, :]  # (G, J, R)
        totals = np.matmul(mass, member_points)  # (G, J, C)
        counts = np.bincount((slot + assignment).ravel(), weights=weights.ravel(),
                             minlength=groups * width).reshape(groups, width)
        centroids = np.where(counts[..., None] > 0,
                             totals / np.maximum(counts, 1e-12)[..., None], centroids)
    raise AssertionError("unreachable: the loop returns on its last step")


def _distinct_items(items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's distinct items: (distinct (N, P) padded with 0, weights (N, P) impressions
    per distinct item, 0 = padding, index (N, H) of each impression's distinct item)."""
    users = items.shape[0]
    order = np.argsort(items, axis=1, kind="stable")
    ordered = np.take_along_axis(items, order, axis=1)
    new = np.ones(items.shape, dtype=bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    rank = np.cumsum(new, axis=1) - 1  # (N, H) distinct index of each sorted impression
    width = int(rank[:, -1].max()) + 1
    index = np.empty_like(rank)
    np.put_along_axis(index, order, rank, axis=1)
    distinct = np.zeros((users, width), dtype=np.int64)
    rows = np.broadcast_to(np.arange(users)[:, None], items.shape)
    distinct[rows, rank] = ordered  # duplicates write the same value
    weights = np.bincount((rows * width + rank).ravel(), minlength=users * width)
    return distinct, weights.reshape(users, width), index


def compress_lifelong(
    items: np.ndarray, feedback: np.ndarray, content: np.ndarray, length: int,
    iterations: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """The lifelong pathway of N users from their past impressions (oldest first).

    items (N, H) int64, feedback (N, H, F) float32, content (I, C) float64 the catalog's
    content vectors. Returns items (N, K) int64 and features (N, K, F + 1) float32: per
    cluster the item nearest the centroid, the mean feedback and the size (impressions),
    ordered by each cluster's most recent impression (most recent last), padded in front.
    With H <= K every impression is its own entry.
    """
    users, history = items.shape
    if history <= length:  # nothing to compress: each impression is its own cluster
        distinct, weights = items, np.ones(items.shape, dtype=np.int64)
        index = labels = np.broadcast_to(np.arange(history), (users, history))
        distinct_labels = labels
    else:
        distinct, weights, index = _distinct_items(items)
        distinct_labels = hierarchical_kmeans(content[distinct], weights, length, iterations)
        labels = np.take_along_axis(distinct_labels, index, axis=1)  # (N, H)
    rows = np.arange(users)[:, None]
    cluster = (rows * length + labels).ravel()  # (N * H,) global cluster id per impression
    size = np.bincount(cluster, minlength=users * length)  # (N * K,)
    present = np.flatnonzero(size)  # clusters that exist, ordered by user then label
    recency = np.zeros(users * length, dtype=np.int64)
    np.maximum.at(recency, cluster, np.broadcast_to(np.arange(history), (users, history)).ravel())
    feedback_sum = np.stack([np.bincount(cluster, weights=feedback[..., column].ravel(),
                                         minlength=users * length)
                             for column in range(feedback.shape[-1])], axis=1)  # (N * K, F)

    # nearest distinct item to its cluster's (impression-weighted) centroid
    valid = weights > 0
    distinct_cluster = (rows * length + distinct_labels)[valid]  # (Q,)
    distinct_items = distinct[valid]
    distinct_weight = weights[valid].astype(np.float64)
    points = content[distinct_items]  # (Q, C)
    centroid = np.stack([np.bincount(distinct_cluster, weights=points[:, dim] * distinct_weight,
                                     minlength=users * length)
                         for dim in range(points.shape[1])], axis=1)
    centroid /= np.maximum(size, 1)[:, None]  # (N * K, C)
    gap = ((points - centroid[distinct_cluster]) ** 2).sum(1)  # (Q,)
    nearest = np.lexsort((gap, distinct_cluster))  # by cluster, then nearest first
    first = nearest[np.r_[True, distinct_cluster[nearest][1:] != distinct_cluster[nearest][:-1]]]
    nearest_item = np.full(users * length, BLANK, dtype=np.int64)
    nearest_item[distinct_cluster[first]] = distinct_items[first]

    # each user's clusters, oldest first, at the end of its K slots
    user = present // length
    by_recency = present[np.lexsort((recency[present], user))]
    clusters = np.bincount(user, minlength=users)  # (N,)
    position = np.arange(present.size) - np.searchsorted(user, user)
    slot = length - clusters[user] + position
    out_items = np.full((users, length), BLANK, dtype=np.int64)
    out_features = np.zeros((users, length, NUM_FEEDBACK + 1), dtype=np.float32)
    out_items[user, slot] = nearest_item[by_recency]
    out_features[user, slot, :NUM_FEEDBACK] = feedback_sum[by_recency] / size[by_recency, None]
    out_features[user, slot, NUM_FEEDBACK] = size[by_recency]
    return out_items, out_features


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
        """Begin the sessions of some users from their warm history (R, H) and summaries."""
        self.static[rows] = static
        for buffer in (self.short_term, self.positive):
            buffer.clear(rows)
        self.lifelong_items[rows] = lifelong_items
        self.lifelong_features[rows] = lifelong_features
        self.record(history_items, history_feedback, np.ones(history_items.shape, dtype=bool),
                    rows)

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
                  content: np.ndarray, iterations: int) -> tuple[np.ndarray, np.ndarray]:
        """The lifelong entries of users with these past impressions (R, H) (see module doc)."""
        recent = slice(max(0, history_items.shape[1] - self.lifelong_history), None)
        return compress_lifelong(history_items[:, recent], history_feedback[:, recent], content,
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
