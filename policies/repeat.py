"""Which next codes lead back to items the user already has: the inputs of the repeat bias.

A decoder with `OneRecConfig.repeat_bias` adds, at every step, a learned logit offset to the
codes that lead back to the user's history items (RepeatNet's repeat-or-explore, reduced to
two scalars per level), so the data decide whether users take an item again. Two marks per
candidate code c after an item prefix p:
- "continues": some history item starts with p + c (a neighbour of a history item);
- "commits": p + c is a legal prefix and every catalog item under it is a history item, so
  choosing c means recommending an item the user already has.
They differ where codes collide: with TIGER-style codes most items are fixed after three of
their four codes (the fourth only tells colliding items apart), so a mark on the last level
alone would reach few repeats, and under trie-constrained decoding a forced last code's
offset is renormalised away.

Letters in shape comments: B users, T history items, L levels, N = B x G rows (G beams or
samples per user, rows of a user adjacent), l codes of the prefix, K_l codes of level l + 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from policies.codec import mixed_radix_keys


class CatalogPrefixes:
    """How many catalog items start with each code prefix, for every prefix length."""

    def __init__(self, item_codes: Tensor, codebook_sizes: tuple[int, ...]) -> None:
        self.codebook_sizes = codebook_sizes
        self.keys: list[Tensor] = []  # per length 1..L: sorted distinct prefix keys (U_l,)
        self.counts: list[Tensor] = []  # per length: items under each key (U_l,)
        for length in range(1, len(codebook_sizes) + 1):
            keys, counts = mixed_radix_keys(item_codes[:, :length], codebook_sizes).unique(
                return_counts=True
            )
            self.keys.append(keys)
            self.counts.append(counts)

    def to(self, device: torch.device | str) -> CatalogPrefixes:
        """The same counts on `device` (moves in place; returns self)."""
        self.keys = [k.to(device) for k in self.keys]
        self.counts = [c.to(device) for c in self.counts]
        return self

    def count_children(self, item_prefix: Tensor) -> Tensor:
        """Catalog items under prefix + c for every next code c: (N, l) -> (N, K_l) int64."""
        level = item_prefix.shape[1]
        size = self.codebook_sizes[level]
        codes = torch.arange(size, device=item_prefix.device)
        candidates = mixed_radix_keys(item_prefix, self.codebook_sizes)[:, None] * size + codes
        keys, counts = self.keys[level], self.counts[level]
        index = torch.searchsorted(keys, candidates).clamp(max=keys.numel() - 1)
        return torch.where(keys[index] == candidates, counts[index], 0)  # (N, K_l)


@dataclass(frozen=True)
class RepeatMarks:
    """One batch's history items and the catalog's prefix counts, per user (B)."""

    history_codes: Tensor  # (B, T, L) codes of each user's distinct history items, -1 = padding
    catalog: CatalogPrefixes

    def marks(self, item_prefix: Tensor) -> Tensor:
        """(N, 2, K_l) float 0/1: [continues a history item, commits to history items].

        `item_prefix` (N, l) holds the codes of the current item so far.
        """
        history = self.history_codes  # (B, T, L), broadcast over each user's G rows
        users, level = history.shape[0], item_prefix.shape[1]
        size = self.catalog.codebook_sizes[level]
        rows = item_prefix.view(users, item_prefix.shape[0] // users, level)  # (B, G, l)
        match = (history[:, None, :, 0] >= 0).expand(-1, rows.shape[1], -1)  # (B, G, T) real
        if level:  # ... and starting with the row's prefix
            match = match & (history[:, None, :, :level] == rows[:, :, None, :]).all(-1)
        next_codes = history[:, None, :, level].clamp(min=0).expand_as(match)  # (B, G, T)
        under = match.new_zeros(*match.shape[:2], size, dtype=torch.long).scatter_add_(
            2, next_codes, match.long()
        ).view(item_prefix.shape[0], size)  # (N, K_l) distinct history items under prefix + c
        catalog = self.catalog.count_children(item_prefix)  # (N, K_l)
        commits = (under > 0) & (under >= catalog)
        return torch.stack([under > 0, commits], dim=1).float()
