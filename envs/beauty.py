"""Amazon Beauty in the sequential-recommendation format, split as in TIGER.

The file has one line per user, `user_id item_id item_id ...`, items in chronological
order (the ICLRec/S3-Rec `Beauty.txt`: 22,363 users, 12,101 items). TIGER's protocol is
leave-one-out: a user's last item is the test target, the second last the validation
target, and the rest is training data; evaluation histories keep the last 20 items.
Validation and test targets never reach `train_sequences`, so item embeddings trained on
them see no evaluation item.

Item ids: the raw ids are sorted and renumbered 0..N-1 (`raw_item_ids[i]` is item i's
id in the file); Beauty's raw ids are 1..12101, so item i is raw id i + 1.

Letters used in shape comments: U users, H history length, N items.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_ITEMS_PER_USER = 3  # one to train on, one validation target, one test target


@dataclass(frozen=True)
class EvaluationExamples:
    """Next-item examples: a right-aligned history and the item that followed it."""

    histories: np.ndarray  # (U, H) int64, most recent item last, left-padded with -1
    history_lengths: np.ndarray  # (U,) int64: real items in each history row
    targets: np.ndarray  # (U,) int64: the item to predict


@dataclass(frozen=True)
class SequenceDataset:
    """A leave-one-out split of users' item sequences, items numbered 0..num_items-1."""

    num_items: int
    raw_item_ids: np.ndarray  # (N,) int64: the file's id of each item
    train_sequences: tuple[np.ndarray, ...]  # per user, all items but the last two (int64)
    valid: EvaluationExamples  # target: each user's second-last item
    test: EvaluationExamples  # target: each user's last item

    @property
    def num_users(self) -> int:
        return len(self.train_sequences)


def _read_sequences(path: Path) -> list[list[int]]:
    """Item lists per user, in file order; blank lines are skipped, a malformed line is a
    ValueError naming the path and line number."""
    if path.is_dir():
        raise ValueError(f"{path} is a folder; pass the Beauty.txt-format file itself (e.g. "
                         "../shared/data/amazon-beauty/Beauty.txt)")
    if not path.is_file():
        raise ValueError(
            f"{path} does not exist; pass the path of a Beauty.txt-format file "
            "(e.g. ../shared/data/amazon-beauty/Beauty.txt)"
        )
    sequences = []
    with path.open(encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            tokens = line.split()
            if not tokens:  # a blank line names no user
                continue
            try:
                values = [int(token) for token in tokens]
            except ValueError:
                raise ValueError(
                    f"{path}:{line_number}: expected integers 'user_id item_id ...', got "
                    f"{line.strip()[:80]!r}"
                ) from None
            if len(values) - 1 < MIN_ITEMS_PER_USER:
                raise ValueError(
                    f"{path}:{line_number}: a user needs at least {MIN_ITEMS_PER_USER} items "
                    f"(train, validation, test), got {len(values) - 1}"
                )
            if min(values[1:]) < 0:
                raise ValueError(f"{path}:{line_number}: item ids must be >= 0")
            sequences.append(values[1:])
    if not sequences:
        raise ValueError(f"{path} is empty; expected one 'user_id item_id ...' line per user")
    return sequences


def _examples(histories: list[np.ndarray], targets: list[int], max_history: int
              ) -> EvaluationExamples:
    padded = np.full((len(histories), max_history), -1, dtype=np.int64)  # (U, H)
    lengths = np.zeros(len(histories), dtype=np.int64)
    for row, history in enumerate(histories):
        kept = history[-max_history:]
        padded[row, max_history - len(kept):] = kept
        lengths[row] = len(kept)
    return EvaluationExamples(padded, lengths, np.asarray(targets, dtype=np.int64))


def load_beauty(path: str | Path, max_history: int = 20) -> SequenceDataset:
    """Read a Beauty.txt-format file and split it leave-one-out (TIGER's protocol).

    `max_history` caps evaluation histories (20 in TIGER). Errors name the path and line.
    """
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    path = Path(path)
    raw = _read_sequences(path)
    flat = np.fromiter((item for items in raw for item in items), dtype=np.int64)
    raw_item_ids, renumbered = np.unique(flat, return_inverse=True)
    bounds = np.cumsum([len(items) for items in raw])[:-1]
    sequences = np.split(renumbered.astype(np.int64), bounds)
    return SequenceDataset(
        num_items=len(raw_item_ids),
        raw_item_ids=raw_item_ids,
        train_sequences=tuple(sequence[:-2] for sequence in sequences),
        valid=_examples([s[:-2] for s in sequences], [int(s[-2]) for s in sequences],
                        max_history),
        test=_examples([s[:-1] for s in sequences], [int(s[-1]) for s in sequences],
                       max_history),
    )
