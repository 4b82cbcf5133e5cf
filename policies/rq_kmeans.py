"""Residual k-means (RQ-Kmeans): the semantic-ID quantiser of OneRec.

Level l clusters the residual left by levels 0..l-1; an item's code at level l is its
cluster, and the centroid is subtracted before the next level. OneRec v1 makes every level
*balanced*: each cluster takes floor(N/K) or ceil(N/K) items, which keeps every code in use
and the code distribution flat (high entropy), so generated codes rarely point at nothing.

Squared distances use ||x||^2 - 2 x c^T + ||c||^2 in float32, computed in blocks of
(chunk_rows x chunk_centroids) so a block of the distance matrix stays in cache and memory
stays bounded at K = 8192; the same code runs on CPU (through oneDNN's GEMM) or CUDA. All randomness comes from one
`torch.Generator` seeded from the config.

Letters used in shape comments: N items, D embedding width, K clusters of a level,
M candidate clusters per item, L levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class RQKMeansConfig:
    """How to learn the codebooks. Defaults give 3 x 256 codes, a CPU-sized OneRec."""

    codebook_sizes: tuple[int, ...] = (256, 256, 256)  # clusters per level; OneRec uses 3 x 8192
    iterations: int = 20  # Lloyd (or balanced) iterations per level; 20 settles 100k items
    balanced: bool = False  # OneRec v1's balanced k-means: every cluster floor/ceil(N/K) items
    seed: int = 0  # seeds the one torch.Generator behind every random draw
    device: str = "cpu"  # "cuda" runs the distance blocks on a GPU
    chunk_rows: int = 1024  # items per distance block; 1024 x 1024 floats (4 MB) stay in cache
    chunk_centroids: int = 1024  # centroids per distance block (the other side of the block)
    tolerance: float = 0.0  # stop a level once inertia moves less than this share; 0: never stop
    init_sample: int = 32_768  # k-means++ seeds from this many random items (one pass per seed)
    balanced_candidates: int = 4  # nearest clusters per item before the exact fallback; 4 keeps
    # torch.topk on its fast path, and 8-32 gave no lower inertia (100k x 64, K = 256 and 8192)

    def __post_init__(self) -> None:
        self.codebook_sizes = tuple(int(size) for size in self.codebook_sizes)
        if not self.codebook_sizes or min(self.codebook_sizes) < 1:
            raise ValueError(
                f"codebook_sizes must be one positive cluster count per level, got "
                f"{self.codebook_sizes}; e.g. (256, 256, 256)"
            )
        for name in ("iterations", "chunk_rows", "chunk_centroids", "init_sample",
                     "balanced_candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.tolerance < 1.0:
            raise ValueError(
                f"tolerance must be in [0, 1) (0 runs every iteration), got {self.tolerance}"
            )
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device is {self.device!r} but CUDA is not available; use 'cpu'")


def check_embeddings(embeddings: Tensor, name: str = "embeddings") -> Tensor:
    """Validate a (N, D) matrix of finite numbers and return it as float32."""
    if not isinstance(embeddings, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, D), got {type(embeddings)}")
    if embeddings.dim() != 2 or embeddings.shape[0] < 1 or embeddings.shape[1] < 1:
        raise ValueError(
            f"{name} must be 2-D (items, dims) and non-empty, got shape {tuple(embeddings.shape)}; "
            "reshape it to (N, D)"
        )
    embeddings = embeddings.float()
    if not torch.isfinite(embeddings).all():
        bad = int((~torch.isfinite(embeddings)).any(dim=1).sum())
        raise ValueError(
            f"{name} has NaN or inf values in {bad} rows; drop or repair those items first"
        )
    return embeddings


def _check_cluster_count(num_items: int, k: int) -> None:
    if not 1 <= k <= num_items:
        raise ValueError(
            f"k={k} clusters need at least as many items, got {num_items}; "
            "use a smaller codebook size or more items"
        )


def _centroid_blocks(centroids: Tensor, chunk_centroids: int, onednn: bool
                     ) -> list[tuple[int, Tensor, Tensor]]:
    """(first index, weight, bias) per block of centroids, so that
    linear(x, weight, bias) = ||c||^2 - 2 x c^T: the squared distance less ||x||^2, which
    does not change which centroid is nearest. With `onednn` the operands are in oneDNN's
    layout, whose float32 GEMM runs these thin (D = 64) products about 1.5x faster than the
    default CPU BLAS (on par with faiss)."""
    blocks = []
    for first in range(0, centroids.shape[0], chunk_centroids):
        block = centroids[first : first + chunk_centroids]
        weight, bias = -2.0 * block, (block * block).sum(dim=1)  # (block, D), (block,)
        if onednn:
            weight, bias = weight.to_mkldnn(), bias.to_mkldnn()
        blocks.append((first, weight, bias))
    return blocks


def nearest_centroids(
    x: Tensor, centroids: Tensor, count: int = 1, chunk_rows: int = 1024,
    chunk_centroids: int = 1024,
) -> tuple[Tensor, Tensor]:
    """The `count` nearest centroids of every row of x, nearest first.

    Returns squared distances (N, count) float32 and centroid indices (N, count) int64.
    """
    count = min(count, centroids.shape[0])
    onednn = x.device.type == "cpu" and torch.backends.mkldnn.is_available()
    blocks = _centroid_blocks(centroids.contiguous(), chunk_centroids, onednn)
    distances, indices = [], []
    for start in range(0, x.shape[0], chunk_rows):
        rows = x[start : start + chunk_rows].contiguous()
        rows_in = rows.to_mkldnn() if onednn else rows
        best_distance = best_index = None
        for first, weight, bias in blocks:
            scores = F.linear(rows_in, weight, bias)  # (rows, block)
            scores = scores.to_dense() if onednn else scores
            if count == 1:
                block_distance, block_index = scores.min(dim=1, keepdim=True)
            else:
                block_distance, block_index = scores.topk(
                    min(count, scores.shape[1]), dim=1, largest=False
                )
            block_index = block_index + first
            if best_distance is None:
                best_distance, best_index = block_distance, block_index
            elif count == 1:
                closer = block_distance < best_distance
                best_distance = torch.where(closer, block_distance, best_distance)
                best_index = torch.where(closer, block_index, best_index)
            else:
                merged = torch.cat([best_distance, block_distance], dim=1)
                best_distance, position = merged.topk(count, dim=1, largest=False)
                best_index = torch.cat([best_index, block_index], dim=1).gather(1, position)
        row_norms = (rows * rows).sum(dim=1, keepdim=True)  # (rows, 1)
        distances.append((best_distance + row_norms).clamp_min_(0.0))
        indices.append(best_index)
    return torch.cat(distances), torch.cat(indices)  # (N, count), (N, count)


def kmeans_plus_plus_init(
    x: Tensor, k: int, generator: torch.Generator, sample_size: int | None = None,
) -> Tensor:
    """k-means++ seeding: each new centroid is a point drawn with probability ~ D(x)^2.

    D^2 sampling takes one memory-bound pass over the points per centroid, so with
    `sample_size` it seeds from that many random points (at least k) instead of all N.
    Returns (K, D) centroids, all of them rows of x.
    """
    x = check_embeddings(x, "x")
    _check_cluster_count(x.shape[0], k)
    if sample_size is not None and x.shape[0] > max(sample_size, k):
        sample = torch.randperm(x.shape[0], generator=generator, device=x.device)
        x = x[sample[: max(sample_size, k)]]
    num_points = x.shape[0]
    points_by_dim = x.T.contiguous()  # (D, N): the per-centroid pass reads it row by row
    row_norms = (x * x).sum(dim=1)  # (N,)
    chosen = torch.empty(k, dtype=torch.long, device=x.device)
    chosen[0] = torch.randint(num_points, (1,), generator=generator, device=x.device)
    min_distance = torch.full((num_points,), float("inf"), device=x.device)
    uniforms = torch.rand(k, generator=generator, device=x.device, dtype=torch.float64)
    for step in range(1, k):
        centre = x[chosen[step - 1]]
        distance = torch.addmv(row_norms, points_by_dim.T, centre, alpha=-2.0) + centre @ centre
        torch.minimum(min_distance, distance.clamp_min_(0.0), out=min_distance)
        cumulative = min_distance.double().cumsum(0)  # (N,) float64 keeps 1e5 terms exact enough
        total = cumulative[-1]
        if total <= 0:  # every point already is a centroid (duplicates): draw uniformly
            chosen[step] = (uniforms[step] * num_points).long().clamp_max(num_points - 1)
        else:
            target = (uniforms[step] * total).reshape(1)
            chosen[step] = torch.searchsorted(cumulative, target).clamp_max(num_points - 1)[0]
    return x[chosen].clone()  # (K, D)


def _centroid_means(x: Tensor, assignment: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Per-cluster sums divided by counts; returns (K, D) means and (K,) counts."""
    counts = torch.bincount(assignment, minlength=k)  # (K,)
    sums = torch.zeros(k, x.shape[1], device=x.device).index_add_(0, assignment, x)  # (K, D)
    return sums / counts.clamp_min(1).unsqueeze(1).float(), counts


def _converged(previous: float, inertia: float, tolerance: float) -> bool:
    return tolerance > 0 and abs(previous - inertia) <= tolerance * max(previous, 1e-30)


def kmeans(
    x: Tensor, k: int, generator: torch.Generator, config: RQKMeansConfig | None = None,
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means from k-means++ seeds.

    `config` supplies iterations, tolerance, init_sample and the distance block sizes (its
    codebook_sizes are not used: k is given). An empty cluster is re-seeded with the point
    farthest from its centroid, so every code stays alive. Returns centroids (K, D) and the
    assignment (N,) int64 of the last step; the centroids are that assignment's means.
    """
    config = config or RQKMeansConfig()
    x = check_embeddings(x, "x")
    _check_cluster_count(x.shape[0], k)
    centroids = kmeans_plus_plus_init(x, k, generator, config.init_sample)
    previous = float("inf")
    for _ in range(config.iterations):
        distance, nearest = nearest_centroids(x, centroids, 1, config.chunk_rows,
                                              config.chunk_centroids)
        distance, assignment = distance[:, 0], nearest[:, 0]  # (N,), (N,)
        centroids, counts = _centroid_means(x, assignment, k)
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty):
            farthest = distance.topk(len(empty)).indices
            centroids[empty] = x[farthest]
            assignment[farthest] = empty
        inertia = float(distance.sum())
        if _converged(previous, inertia, config.tolerance):
            break
        previous = inertia
    return centroids, assignment


def capacity_assignment(
    candidate_index: Tensor, candidate_distance: Tensor, capacity: Tensor,
) -> Tensor:
    """Assign items to clusters under per-cluster capacities, nearest pairs first.

    Deferred acceptance, vectorised: every unplaced item proposes to its next candidate
    cluster, each cluster keeps its nearest proposers up to its capacity and rejects the rest,
    who move on. With both sides ranking by the same distance, the result is the greedy
    "sort all (item, cluster) pairs by distance, take a pair while both are free" matching.
    An item skips candidates that are full of nearer items: a cluster only ever gets more
    selective, so such a candidate could never accept it later.
    candidate_index/candidate_distance (N, M) are each item's clusters, nearest first;
    capacity (K,). Returns (N,) int64, -1 where an item found no room among its candidates
    (the caller widens the candidates).
    """
    num_items, num_candidates = candidate_index.shape
    num_clusters = capacity.shape[0]
    device = candidate_index.device
    pointer = torch.zeros(num_items, dtype=torch.long, device=device)  # next candidate to try
    assignment = torch.full((num_items,), -1, dtype=torch.long, device=device)
    # A full cluster's farthest held distance: only nearer items can still get in.
    worst_held = torch.where(capacity > 0, float("inf"), float("-inf")).to(device)  # (K,)
    span = float(candidate_distance.max()) + 1.0 if candidate_distance.numel() else 1.0
    columns = torch.arange(num_candidates, device=device)
    unplaced = torch.arange(num_items, device=device)
    while len(unplaced):
        candidates = candidate_index[unplaced]  # (P, M)
        viable = (columns >= pointer[unplaced, None]) & (
            candidate_distance[unplaced] < worst_held[candidates]
        )  # (P, M)
        has_viable = viable.any(dim=1)
        proposers = unplaced[has_viable]
        if not len(proposers):
            break
        pointer[proposers] = viable[has_viable].int().argmax(dim=1)  # first viable candidate
        target = candidate_index[proposers, pointer[proposers]]
        touched = torch.zeros(num_clusters, dtype=torch.bool, device=device)
        touched[target] = True
        holders = torch.nonzero((assignment >= 0) & touched[assignment.clamp_min(0)]).flatten()
        pool = torch.cat([holders, proposers])  # items competing for the touched clusters
        pool_cluster = torch.cat([assignment[holders], target])
        pool_distance = candidate_distance[pool, pointer[pool]]
        # Sort by (cluster, distance) in one pass: distances lie in [0, span).
        order = torch.argsort(pool_cluster.double() * span + pool_distance.double(), stable=True)
        cluster_sorted = pool_cluster[order]
        counts = torch.bincount(cluster_sorted, minlength=num_clusters)  # (K,)
        group_start = counts.cumsum(0) - counts
        rank = torch.arange(len(order), device=device) - group_start[cluster_sorted]
        keep = rank < capacity[cluster_sorted]
        winners, losers = pool[order[keep]], pool[order[~keep]]
        assignment[winners] = cluster_sorted[keep]
        assignment[losers] = -1
        pointer[losers] += 1
        kept = torch.bincount(cluster_sorted[keep], minlength=num_clusters)
        full = touched & (kept >= capacity)
        farthest = torch.full((num_clusters,), float("-inf"), device=device).scatter_reduce(
            0, cluster_sorted[keep], pool_distance[order[keep]], "amax"
        )
        worst_held = torch.where(full, farthest, worst_held)
        unplaced = losers[pointer[losers] < num_candidates]  # the others have no viable room
    return assignment


def _assign_with_fallback(
    x: Tensor, centroids: Tensor, capacity: Tensor, rows: Tensor, config: RQKMeansConfig,
    first_candidates: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """`capacity_assignment` of x[rows] over each item's nearest clusters (`first_candidates`
    when the caller has them); items left out retry on the clusters that still have room,
    until every item or every slot is taken. Returns (N,) int64, -1 outside placed rows."""
    assignment = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
    count, chunks = config.balanced_candidates, (config.chunk_rows, config.chunk_centroids)
    if first_candidates is None:
        distance, index = nearest_centroids(x[rows], centroids, count, *chunks)
    else:
        distance, index = first_candidates[0][rows], first_candidates[1][rows]
    room = capacity.clone()
    while True:
        placed = capacity_assignment(index, distance, room)
        assignment[rows] = placed
        room -= torch.bincount(placed[placed >= 0], minlength=capacity.shape[0])
        rows = rows[placed < 0]
        open_clusters = torch.nonzero(room > 0).flatten()
        if not len(rows) or not len(open_clusters):
            return assignment
        distance, local = nearest_centroids(x[rows], centroids[open_clusters], count, *chunks)
        index = open_clusters[local]


def balanced_kmeans(
    x: Tensor, k: int, generator: torch.Generator, config: RQKMeansConfig | None = None,
) -> tuple[Tensor, Tensor]:
    """OneRec v1's balanced k-means: every cluster holds floor(N/K) or ceil(N/K) items.

    Each iteration assigns items under capacities (`capacity_assignment`: nearest pairs
    first, over each item's `config.balanced_candidates` nearest clusters, widened for items
    left out) in two rounds: first every cluster takes floor(N/K) items, then the N mod K
    items left each take one extra slot in a distinct cluster; centroids then move to the
    means of their items. The paper fills clusters one after another; matching all clusters
    at once reaches the same sizes without K sequential passes over the items. `config` is
    read as in `kmeans`. Returns centroids (K, D) and the assignment (N,) int64.
    """
    config = config or RQKMeansConfig()
    x = check_embeddings(x, "x")
    _check_cluster_count(x.shape[0], k)
    centroids = kmeans_plus_plus_init(x, k, generator, config.init_sample)
    all_rows = torch.arange(x.shape[0], device=x.device)
    capacity = torch.full((k,), x.shape[0] // k, dtype=torch.long, device=x.device)
    previous = float("inf")
    for _ in range(config.iterations):
        nearest = nearest_centroids(x, centroids, config.balanced_candidates, config.chunk_rows,
                                    config.chunk_centroids)  # (N, M) twice
        assignment = _assign_with_fallback(x, centroids, capacity, all_rows, config, nearest)
        leftover = torch.nonzero(assignment < 0).flatten()  # N mod K items
        if len(leftover):
            extra = _assign_with_fallback(x, centroids, torch.ones_like(capacity), leftover,
                                          config)
            assignment[leftover] = extra[leftover]
        centroids, _ = _centroid_means(x, assignment, k)
        inertia = float(((x - centroids[assignment]) ** 2).sum())
        if _converged(previous, inertia, config.tolerance):
            break
        previous = inertia
    return centroids, assignment


class ResidualKMeans:
    """Residual k-means over L levels: codebooks, item codes, encode and reconstruct."""

    def __init__(self, config: RQKMeansConfig) -> None:
        self.config = config
        self.codebooks: list[Tensor] = []  # one (K_l, D) tensor per level
        self.train_codes: Tensor | None = None  # (N, L) codes `fit` gave its items

    @property
    def num_levels(self) -> int:
        return len(self.config.codebook_sizes)

    def fit(self, embeddings: Tensor) -> ResidualKMeans:
        """Learn one codebook per level on the residuals of `embeddings` (N, D).

        `train_codes` keeps the fitted assignment; when balanced it obeys the capacities, so
        it can differ from `encode`'s nearest-centroid codes for the same items.
        """
        config = self.config
        residual = check_embeddings(embeddings).to(config.device)
        for level, size in enumerate(config.codebook_sizes):
            if size > residual.shape[0]:
                raise ValueError(
                    f"codebook_sizes[{level}]={size} exceeds the {residual.shape[0]} items; "
                    "use a codebook no larger than the item count"
                )
        generator = torch.Generator(device=residual.device).manual_seed(config.seed)
        fit_level = balanced_kmeans if config.balanced else kmeans
        self.codebooks, codes = [], []
        for size in config.codebook_sizes:
            centroids, assignment = fit_level(residual, size, generator, config)
            self.codebooks.append(centroids)
            codes.append(assignment)
            residual = residual - centroids[assignment]
        self.train_codes = torch.stack(codes, dim=1)  # (N, L)
        return self

    def _check_fitted(self, width: int, name: str) -> None:
        if not self.codebooks:
            raise ValueError(f"ResidualKMeans is not fitted; call fit() before {name}()")
        if width != self.codebooks[0].shape[1]:
            raise ValueError(
                f"embeddings have {width} dims but the codebooks were fitted on "
                f"{self.codebooks[0].shape[1]}; encode embeddings of the fitted width"
            )

    def encode(self, embeddings: Tensor) -> Tensor:
        """Nearest-centroid codes of `embeddings` (N, D), level by level: (N, L) int64."""
        residual = check_embeddings(embeddings).to(self.config.device)
        self._check_fitted(residual.shape[1], "encode")
        codes = []
        for centroids in self.codebooks:
            _, nearest = nearest_centroids(residual, centroids, 1, self.config.chunk_rows,
                                           self.config.chunk_centroids)
            codes.append(nearest[:, 0])
            residual = residual - centroids[nearest[:, 0]]
        return torch.stack(codes, dim=1)  # (N, L)

    def reconstruct(self, codes: Tensor) -> Tensor:
        """Sum of the codes' centroids over levels: (N, L) int64 -> (N, D) float32."""
        if not self.codebooks:
            raise ValueError("ResidualKMeans is not fitted; call fit() before reconstruct()")
        if codes.dim() != 2 or codes.shape[1] != self.num_levels:
            raise ValueError(
                f"codes must have shape (N, {self.num_levels}), got {tuple(codes.shape)}"
            )
        codes = codes.to(self.codebooks[0].device)
        for level, centroids in enumerate(self.codebooks):
            column = codes[:, level]
            if len(column) and (column.min() < 0 or column.max() >= centroids.shape[0]):
                raise ValueError(
                    f"codes[:, {level}] must lie in [0, {centroids.shape[0]}), got values in "
                    f"[{int(column.min())}, {int(column.max())}]"
                )
        return torch.stack(
            [centroids[codes[:, level]] for level, centroids in enumerate(self.codebooks)]
        ).sum(dim=0)  # (N, D)
