"""Our rewards in TRL's reward-function convention, so one reward drives both trainers.

TRL calls `fn(prompts=..., completions=..., completion_ids=..., **dataset_columns,
trainer_state=..., log_extra=..., log_metric=...)` and expects one float per completion, `None`
meaning "no opinion" (TRL turns it into NaN and ignores it). Here a completion is a slate
written as semantic-ID tokens: `SemanticIdVocabulary` maps token ids back to codes, the codec
maps codes to items, and the user's context comes from a dataset column (default
`user_index`) through a `contexts(indices)` function, e.g. `LoggedSessions.contexts`.
A completion whose row has no user index gets `None` when the reward needs a context.

Letters used in shape comments: N completions, S slate, L levels, V codebook size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rewards.protocol import Codec, RewardInput, RewardModel


@dataclass(frozen=True)
class SemanticIdVocabulary:
    """Where semantic-ID codes sit in a flat token vocabulary: level l's codes follow each
    other from offset + sum(codebook_sizes[:l]); a slate is its items' L tokens in order."""

    codebook_sizes: tuple[int, ...]  # V_l codes per level (the codec's `codebook_sizes`)
    offset: int = 0  # token id of level 0's code 0 (special tokens usually come first)

    def __post_init__(self) -> None:
        if not self.codebook_sizes or min(self.codebook_sizes) < 1 or self.offset < 0:
            raise ValueError(
                "codebook_sizes must be positive sizes, one per level, and offset >= 0, got "
                f"{self.codebook_sizes} and {self.offset}"
            )

    @classmethod
    def from_codec(cls, codec: Any, offset: int = 0) -> SemanticIdVocabulary:
        """The vocabulary of a codec with a `codebook_sizes` attribute (SemanticIdCodec)."""
        return cls(tuple(int(size) for size in codec.codebook_sizes), offset)

    @property
    def levels(self) -> int:
        return len(self.codebook_sizes)

    def tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (..., S, L) -> token ids (..., S * L), the inverse of `codes`."""
        starts = self.offset + torch.tensor((0, *self.codebook_sizes[:-1])).cumsum(0)  # (L,)
        return (codes + starts.to(codes.device)).flatten(-2)

    def codes(self, completion_ids: Sequence[Sequence[int]], slate_size: int) -> torch.Tensor:
        """Token ids of N completions -> codes (N, S, L).

        The first S * L tokens are read (later ones, e.g. EOS, are ignored); a missing token
        or one outside its level's range becomes code -1, which no codec maps to an item.
        """
        width = slate_size * self.levels
        tokens = np.full((len(completion_ids), width), -1, dtype=np.int64)  # (N, S*L)
        for row, ids in enumerate(completion_ids):
            ids = np.asarray(ids, dtype=np.int64).reshape(-1)[:width]
            tokens[row, : ids.shape[0]] = ids
        tokens = tokens.reshape(len(completion_ids), slate_size, self.levels)  # (N, S, L)
        sizes = np.asarray(self.codebook_sizes)
        codes = tokens - (self.offset + np.concatenate([[0], np.cumsum(sizes)[:-1]]))  # (N, S, L)
        in_range = (tokens >= 0) & (codes >= 0) & (codes < sizes)
        return torch.as_tensor(np.where(in_range, codes, -1))


class TRLRewardFunction:
    """`fn(prompts, completions, completion_ids, **kwargs) -> list[float | None]`."""

    def __init__(
        self,
        reward: RewardModel,
        codec: Codec,
        vocabulary: SemanticIdVocabulary,
        slate_size: int,
        contexts: Callable[[np.ndarray], Mapping[str, Any]] | None = None,
        context_column: str = "user_index",
    ) -> None:
        unsupported = set(reward.requires) - {"context", "codes"}
        if unsupported:
            raise ValueError(
                f"reward {reward.name!r} needs {sorted(unsupported)}, which a TRL reward call "
                "cannot supply (the true outcome exists only after the simulator shows a "
                "slate); score it in the simulator instead"
            )
        if "context" in reward.requires and contexts is None:
            raise ValueError(
                f"reward {reward.name!r} needs the user context; pass contexts=<function from "
                f"{context_column!r} values to a batched observation>, e.g. logs.contexts"
            )
        if slate_size < 1:
            raise ValueError(f"slate_size must be >= 1, got {slate_size}")
        self.reward, self.codec, self.vocabulary = reward, codec, vocabulary
        self.slate_size, self.contexts, self.context_column = slate_size, contexts, context_column
        self.__name__ = reward.name  # TRL names the reward column after it

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] | None = None,
        completion_ids: Sequence[Sequence[int]] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        if completion_ids is None:
            raise ValueError("completion_ids is required: the reward reads semantic-ID tokens")
        count = len(completion_ids)
        rows = np.arange(count)
        context = None
        if "context" in self.reward.requires:
            column = kwargs.get(self.context_column)
            if column is None or len(column) != count:
                raise ValueError(
                    f"reward {self.reward.name!r} needs a {self.context_column!r} dataset column "
                    f"with one value per completion ({count}), got "
                    f"{None if column is None else len(column)} values"
                )
            rows = np.array(
                [row for row, value in enumerate(column) if value is not None], dtype=np.int64
            )
            if rows.size:
                context = self.contexts(np.array([column[row] for row in rows], dtype=np.int64))
        rewards: list[float | None] = [None] * count
        if rows.size == 0:
            return rewards
        codes = self.vocabulary.codes(completion_ids, self.slate_size)[rows]  # (N', S, L)
        output = self.reward(RewardInput.from_codes(codes, self.codec, context))
        for row, value in zip(rows.tolist(), output.total.tolist(), strict=True):
            rewards[row] = value
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            for name, values in output.components.items():
                log_metric(f"rewards/{name}", float(values.mean()))
        return rewards
