"""Next-token-prediction examples for pre-training, and the seeded sampler that batches them.

Two example sources give the sampler the same thing, (context, target item) examples:

- `LoggedExamples`: logged sessions of an older recommender (`envs.logs.LoggedSessions`).
  Every shown item whose feedback passes a `QualityFilter` (by default a long view, like,
  follow or forward, and no hate) is one example; its context is the observation the user
  had when that slate was requested, its target that item. OneRec's pre-training likewise
  learns to generate the exposures users engaged with.
- `HistoryExamples`: plain histories (Amazon Beauty): the last items of a user -> the item
  that came next; only the short-term pathway is present. `LengthGroupedHistoryExamples`
  draws the same examples in batches of one history length, which a CPU trains ~2x faster.

`BatchSampler` turns target items into their semantic-ID codes (the policy's item -> codes
table) and draws examples uniformly with replacement from one `torch.Generator`, so a
run is reproducible from its seed and resumes exactly from the generator's saved state. In
data-parallel training every rank holds the same generator, draws the same global batch of
world_size x B examples and keeps its own slice: the shards are disjoint, and rank 0's
checkpoint carries the sampler state of every rank.

Letters in shape comments: B batch, L levels, R logged requests, S slate size,
F feedback fields, P examples, T history length, N catalog items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor

from envs.logs import LoggedSessions
from envs.spec import BEHAVIOURS, BLANK, feedback_index
from policies.encoder import Context


@dataclass(frozen=True)
class QualityFilter:
    """Which logged exposures are targets: any listed behaviour, enough watching, no hate."""

    behaviours: tuple[str, ...] = ("long_view", "like", "follow", "forward")  # any one suffices
    min_watch_ratio: float = 0.0  # also require watch_ratio >= this; 0 adds no requirement
    exclude_hate: bool = True  # a hated exposure is never a target, whatever else happened

    def __post_init__(self) -> None:
        object.__setattr__(self, "behaviours", tuple(self.behaviours))
        unknown = [name for name in self.behaviours if name not in BEHAVIOURS]
        if not self.behaviours or unknown:
            raise ValueError(
                f"behaviours must name at least one of {', '.join(BEHAVIOURS)}, got "
                f"{list(self.behaviours)}"
            )
        if self.min_watch_ratio < 0:
            raise ValueError(f"min_watch_ratio must be >= 0, got {self.min_watch_ratio}")

    def select(self, feedback: np.ndarray, shown: np.ndarray) -> np.ndarray:
        """(R, S) bool: the shown exposures that pass, from feedback (R, S, F) and shown (R, S)."""
        columns = [feedback_index(name) for name in self.behaviours]
        passed = shown & (feedback[..., columns] > 0.5).any(-1)
        passed &= feedback[..., feedback_index("watch_ratio")] >= self.min_watch_ratio
        if self.exclude_hate:
            passed &= feedback[..., feedback_index("hate")] <= 0.5
        return passed

    def describe(self) -> str:
        """The filter in words, for logs and error messages."""
        text = " or ".join(self.behaviours)
        if self.min_watch_ratio > 0:
            text = f"({text}) and watch_ratio >= {self.min_watch_ratio}"
        return f"{text} and not hate" if self.exclude_hate else text


class PretrainBatch(NamedTuple):
    """One batch of next-token-prediction examples, on the CPU."""

    context: Context  # B user contexts
    target_codes: Tensor  # (B, L) int64 codes of the item to generate


class ExampleSource(Protocol):
    """What the sampler draws from: a fixed set of (context, target item) examples."""

    num_examples: int  # P
    num_items: int  # N: target items are ids in [0, N) of this catalog
    complete_contexts: bool  # every context has all four pathways (else DDP must allow unused ones)

    def examples(self, indices: np.ndarray) -> tuple[Context, Tensor]:
        """The contexts (B users) and target items (B,) int64 of the examples at `indices`."""
        ...


class LoggedExamples:
    """High-quality exposures of logged sessions -> (observation at the request, item)."""

    complete_contexts = True

    def __init__(
        self,
        logs: LoggedSessions,
        quality_filter: QualityFilter | None = None,
        source: str = "the logged sessions",
        sessions: np.ndarray | None = None,
    ) -> None:
        """`source` names the logs in error messages (e.g. their folder); `sessions` keeps
        only the exposures of these session indices (default: all sessions)."""
        self.logs = logs
        self.quality_filter = QualityFilter() if quality_filter is None else quality_filter
        self.num_items = int(logs.header["num_items"])
        passed = self.quality_filter.select(logs.feedback, logs.shown)  # (R, S)
        if sessions is not None:
            passed &= np.isin(logs.columns["session"], sessions)[:, None]
        self.rows, self.positions = np.nonzero(passed)  # (P,) each, in request order
        if self.rows.size == 0:
            raise ValueError(
                f"{source} hold no high-quality exposure ({int(logs.shown.sum())} shown items, "
                f"none passes '{self.quality_filter.describe()}'); loosen the filter (other "
                "behaviours, a lower minimum watch ratio) or log more sessions"
            )

    @property
    def num_examples(self) -> int:
        return int(self.rows.size)

    @property
    def folder(self) -> str | None:
        """The logs' folder, recorded in checkpoints (None for logs built in memory)."""
        path = self.logs.catalog_path
        return None if path is None else str(path.parent.resolve())

    @property
    def catalog_fingerprint(self) -> str:
        """The logs' catalog fingerprint (their world), recorded in checkpoints."""
        return self.logs.catalog_fingerprint

    def examples(self, indices: np.ndarray) -> tuple[Context, Tensor]:
        rows = self.rows[indices]
        items = torch.from_numpy(self.logs.slates[rows, self.positions[indices]])  # (B,)
        return Context.from_observation(self.logs.contexts(rows)), items


class HistoryExamples:
    """Histories -> next item (Amazon Beauty): only the short-term pathway is present."""

    complete_contexts = False

    def __init__(self, histories: np.ndarray, targets: np.ndarray, num_items: int) -> None:
        """histories (P, T) int64, most recent last, left-padded with -1; targets (P,) int64
        item ids in [0, num_items)."""
        self.histories = torch.as_tensor(np.asarray(histories, dtype=np.int64))
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.int64))
        self.num_items = num_items
        if self.histories.dim() != 2 or self.targets.shape != (self.histories.shape[0],):
            raise ValueError(
                f"histories must be (P, T) and targets (P,), got {tuple(self.histories.shape)} "
                f"and {tuple(self.targets.shape)}"
            )
        if self.targets.numel() == 0:
            raise ValueError("there are no (history, next item) examples; give at least one")
        if self.targets.min() < 0 or self.targets.max() >= num_items:
            raise ValueError(
                f"targets must be item ids in [0, {num_items}), got range "
                f"[{int(self.targets.min())}, {int(self.targets.max())}]"
            )

    @property
    def num_examples(self) -> int:
        return int(self.targets.shape[0])

    def examples(self, indices: np.ndarray) -> tuple[Context, Tensor]:
        index = torch.from_numpy(indices)
        return Context.from_history(self.histories[index]), self.targets[index]  # (B, T), (B,)


class LengthGroupedHistoryExamples(HistoryExamples):
    """`HistoryExamples` whose batches hold histories of one length (group by length).

    The encoder runs every slot that is real for some user of the batch, so a batch costs
    about its longest history. Beauty's training histories average 6.7 items of at most 20,
    and a uniform batch of 128 nearly always holds a 20-item one: grouping makes a step ~2x
    cheaper on a CPU. The first index of a batch picks its group (a group is chosen with
    probability proportional to its size), and every index i of the batch is mapped to
    member floor(i x n_g / P) of that group of n_g examples; with uniform indices each
    example keeps probability 1/P per draw (up to rounding), as under uniform batches, only
    the batches' mix changes (Hugging Face's `group_by_length` does the same for text).
    Contexts are cut to the group's length (`Context` positions count from the end, so the
    encoder's output is the same).
    """

    def __init__(self, histories: np.ndarray, targets: np.ndarray, num_items: int) -> None:
        """histories (P, T) int64, most recent last, left-padded with -1; targets (P,) int64
        item ids in [0, num_items)."""
        super().__init__(histories, targets, num_items)
        lengths = (self.histories != BLANK).sum(dim=1).numpy()  # (P,)
        self.group_of = lengths  # (P,) the group of an example is its history length
        self.group_members = {
            int(length): np.flatnonzero(lengths == length) for length in np.unique(lengths)
        }

    def examples(self, indices: np.ndarray) -> tuple[Context, Tensor]:
        length = int(self.group_of[indices[0]])
        members = self.group_members[length]  # (n_g,)
        mapped = members[indices * len(members) // self.num_examples]  # (B,) in the group
        index = torch.from_numpy(mapped)
        histories = self.histories[index][:, self.histories.shape[1] - max(length, 1):]
        return Context.from_history(histories), self.targets[index]  # (B, length), (B,)


class BatchSampler:
    """Uniform draws with replacement from one generator; rank r keeps slice r of the draw."""

    def __init__(
        self,
        source: ExampleSource,
        item_codes: Tensor,
        batch_size: int,
        generator: torch.Generator,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        """`item_codes` (N, L): the item -> codes table (`policy.item_codes`, `codec.item_codes`)."""
        table = torch.as_tensor(item_codes)
        if table.dim() != 2 or table.shape[0] != source.num_items or table.is_floating_point():
            raise ValueError(
                f"item_codes must be an integer ({source.num_items}, L) table (one row per item "
                f"of the examples' catalog), got {tuple(table.shape)} {table.dtype}; use the "
                "codec built for this catalog"
            )
        if (table < 0).any():
            raise ValueError("item_codes holds -1 rows (codes not set); call set_item_codes first")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.source = source
        self.item_codes = table.long().cpu()
        self.batch_size = batch_size
        self.generator = generator
        self.rank = rank
        self.world_size = world_size

    def next_batch(self) -> PretrainBatch:
        """This rank's B examples of the next global batch (world_size x B draws)."""
        draws = torch.randint(self.source.num_examples, (self.world_size * self.batch_size,),
                              generator=self.generator)
        shard = draws[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]  # (B,)
        context, items = self.source.examples(shard.numpy())
        return PretrainBatch(context, self.item_codes[items])  # (B, L)

    def state_dict(self) -> dict[str, Tensor]:
        """The generator state: all a resumed run needs to draw the same next batches."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])


def positive_sequences(logs: LoggedSessions, quality_filter: QualityFilter) -> list[np.ndarray]:
    """Per session, the items a user engaged with in order: the positive-feedback pathway
    at the session's start, then the logged exposures that pass `quality_filter`.

    Consecutive items of these sequences are the co-engaged pairs of the item embeddings.
    """
    passed = quality_filter.select(logs.feedback, logs.shown)  # (R, S)
    starts = logs.columns["start_positive_items"]  # (U, T)
    # Rows are sorted by session, then request: session u owns rows bounds[u]:bounds[u + 1].
    bounds = np.searchsorted(logs.columns["session"], np.arange(logs.num_sessions + 1))
    sequences = []
    for session in range(logs.num_sessions):
        rows = slice(bounds[session], bounds[session + 1])
        warm = starts[session][starts[session] != BLANK]
        sequences.append(np.concatenate([warm, logs.slates[rows][passed[rows]]]))
    return sequences


def next_item_examples(
    sequences: Sequence[np.ndarray], max_history: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every (history, next item) pair of the sequences, histories cut to the last
    `max_history` items and left-padded: (P, max_history) int64 and (P,) int64."""
    histories, targets = [], []
    for sequence in sequences:
        for position in range(1, len(sequence)):
            history = sequence[max(0, position - max_history):position]
            histories.append(np.pad(history, (max_history - len(history), 0), constant_values=-1))
            targets.append(sequence[position])
    if not targets:
        raise ValueError("the training sequences hold no (history, next item) pair; every "
                         "user needs at least two training items")
    return np.stack(histories).astype(np.int64), np.asarray(targets, dtype=np.int64)
