"""The semantic-ID codec: item <-> code tuple, legality, and prefix masks for decoding.

A code tuple is hashed to one int64 key in mixed radix (level 0 most significant), and the
keys of all items are kept sorted, so `decode` is one `torch.searchsorted` over any batch
shape, with no Python loop over rows. Constrained decoding needs, for a prefix of l codes,
which level-l codes lead to some item: per level, the distinct (l+1)-code prefixes are kept
sorted by key, so the children of one l-code prefix form a contiguous run (a trie stored
as sorted arrays, CSR style).

Collisions (several items with the same L codes) follow an explicit policy:
- "extend" (default): append ONE disambiguation level whose code is the item's rank within
  its collision group, in item-id order. Every item then has a unique code, `num_levels`
  becomes L + 1, and the extra level's size is the largest group. Without collisions nothing
  is appended.
- "owner": the lowest item id owns a shared code, the other items of the group can never be
  generated; they are listed in `unreachable_items`.

A codec file is one safetensors file: the semantic codes and, as metadata, the format, the
codebook sizes, the collision policy and, when set, `catalog_fingerprint` (the
`Catalog.fingerprint` of the world the codes were learned in; files without it load with
None).

Letters used in shape comments: N items, L levels, B batch, S slate, K codes of a level.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors
from torch import Tensor

from envs.files import atomic_write, unreadable

CODEC_FORMAT = "onerec-lab/semantic-id-codec"
CODEC_FORMAT_VERSION = 1
CollisionPolicy = Literal["extend", "owner"]


def mixed_radix_keys(codes: Tensor, sizes: tuple[int, ...]) -> Tensor:
    """Hash code tuples (..., l) to int64 keys (...) in mixed radix, level 0 most significant."""
    keys = torch.zeros(codes.shape[:-1], dtype=torch.long, device=codes.device)
    for level, size in enumerate(sizes[: codes.shape[-1]]):
        keys = keys * size + codes[..., level]
    return keys  # (...)


def _check_codes(codes: Tensor, sizes: tuple[int, ...], name: str) -> Tensor:
    if codes.dim() != 2 or codes.shape[1] != len(sizes):
        raise ValueError(
            f"{name} must have shape (N, {len(sizes)}) (one code per level), got "
            f"{tuple(codes.shape)}"
        )
    codes = codes.long()
    for level, size in enumerate(sizes):
        column = codes[:, level]
        if len(column) and (int(column.min()) < 0 or int(column.max()) >= size):
            raise ValueError(
                f"{name}[:, {level}] must lie in [0, {size}) for codebook size {size}, got "
                f"values in [{int(column.min())}, {int(column.max())}]"
            )
    return codes


class SemanticIdCodec:
    """Maps items to their semantic-ID codes and back; see the module docstring."""

    def __init__(
        self, item_codes: Tensor, codebook_sizes: tuple[int, ...],
        collision_policy: CollisionPolicy = "extend", catalog_fingerprint: str | None = None,
    ) -> None:
        """`item_codes` (N, L) int64: row i is item i's code at each semantic level;
        `catalog_fingerprint` names the world the codes belong to (None: unknown)."""
        sizes = tuple(int(size) for size in codebook_sizes)
        if not sizes or min(sizes) < 1:
            raise ValueError(f"codebook_sizes must be positive, got {codebook_sizes}")
        if collision_policy not in ("extend", "owner"):
            raise ValueError(
                f"collision_policy must be 'extend' or 'owner', got {collision_policy!r}"
            )
        item_codes = _check_codes(item_codes.cpu(), sizes, "item_codes")
        if item_codes.shape[0] < 1:
            raise ValueError("item_codes must hold at least one item, got 0 rows")
        self.semantic_codes = item_codes  # (N, L) the codes the tokenizer learned
        self.semantic_sizes = sizes
        self.collision_policy: CollisionPolicy = collision_policy
        self.catalog_fingerprint = catalog_fingerprint
        semantic_keys = self._keys_for(item_codes, sizes)  # (N,)
        order = torch.argsort(semantic_keys, stable=True)  # groups in item-id order
        sorted_keys = semantic_keys[order]
        new_group = torch.ones_like(sorted_keys, dtype=torch.bool)
        new_group[1:] = sorted_keys[1:] != sorted_keys[:-1]
        group_id = new_group.cumsum(0) - 1  # (N,) in sorted order
        group_start = torch.nonzero(new_group).flatten()
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order)) - group_start[group_id]  # (N,) rank in group
        largest_group = int(rank.max()) + 1
        self.unreachable_items = torch.empty(0, dtype=torch.long)
        if largest_group > 1 and collision_policy == "extend":
            self.codebook_sizes = (*sizes, largest_group)
            self.item_codes = torch.cat([item_codes, rank.unsqueeze(1)], dim=1)  # (N, L + 1)
        else:
            self.codebook_sizes = sizes
            self.item_codes = item_codes  # (N, L)
            self.unreachable_items = torch.nonzero(rank > 0).flatten()
        self._build_tables()

    @staticmethod
    def _keys_for(codes: Tensor, sizes: tuple[int, ...]) -> Tensor:
        space = 1
        for size in sizes:
            space *= size
        if space >= 2**62:
            raise ValueError(
                f"codebook_sizes {sizes} span {space} codes, beyond int64 keys; use fewer or "
                "smaller levels"
            )
        return mixed_radix_keys(codes, sizes)

    def _build_tables(self) -> None:
        reachable = torch.ones(self.num_items, dtype=torch.bool)
        reachable[self.unreachable_items] = False
        items = torch.nonzero(reachable).flatten()
        keys = self._keys_for(self.item_codes[items], self.codebook_sizes)
        order = torch.argsort(keys)
        self._sorted_keys = keys[order]  # (R,) one key per reachable item, ascending
        self._sorted_items = items[order]  # (R,)
        # Per level l: the distinct l-code prefixes (sorted keys) and, as a CSR run per prefix,
        # the level-l codes that extend it towards some item.
        self._prefix_keys: list[Tensor] = []
        self._child_start: list[Tensor] = []
        self._child_codes: list[Tensor] = []
        for level, size in enumerate(self.codebook_sizes):
            longer = torch.unique(mixed_radix_keys(self.item_codes[items, : level + 1],
                                                   self.codebook_sizes))  # sorted
            parents, counts = torch.unique_consecutive(longer // size, return_counts=True)
            self._prefix_keys.append(parents)
            self._child_start.append(torch.cat([torch.zeros(1, dtype=torch.long),
                                                counts.cumsum(0)]))
            self._child_codes.append(longer % size)

    def to(self, device: str | torch.device) -> SemanticIdCodec:
        """Move the lookup tables to `device` (e.g. next to a GPU beam search); returns self."""
        self.item_codes = self.item_codes.to(device)
        self._sorted_keys = self._sorted_keys.to(device)
        self._sorted_items = self._sorted_items.to(device)
        for tables in (self._prefix_keys, self._child_start, self._child_codes):
            tables[:] = [table.to(device) for table in tables]
        return self

    @property
    def num_items(self) -> int:
        return self.semantic_codes.shape[0]

    @property
    def num_levels(self) -> int:
        """Levels of a full code: L, or L + 1 when "extend" appended a disambiguation level."""
        return len(self.codebook_sizes)

    def encode(self, item_ids: Tensor) -> Tensor:
        """Codes of items: (...) int64 -> (..., num_levels) int64. Under "owner", an
        unreachable item gets its group's shared code, which decodes to the owner."""
        item_ids = torch.as_tensor(item_ids, dtype=torch.long)
        if item_ids.numel() and (int(item_ids.min()) < 0 or int(item_ids.max()) >= self.num_items):
            raise ValueError(
                f"item_ids must lie in [0, {self.num_items}), got values in "
                f"[{int(item_ids.min())}, {int(item_ids.max())}]"
            )
        return self.item_codes.to(item_ids.device)[item_ids]  # (..., num_levels)

    def decode(self, codes: Tensor) -> Tensor:
        """Item ids of code tuples: (..., num_levels) int64 -> (...) int64, -1 where illegal."""
        if codes.shape[-1] != self.num_levels:
            raise ValueError(
                f"codes must end in a dimension of {self.num_levels} levels, got shape "
                f"{tuple(codes.shape)}"
            )
        codes = codes.long()
        device = codes.device
        sizes = torch.tensor(self.codebook_sizes, device=device)
        in_range = ((codes >= 0) & (codes < sizes)).all(dim=-1)  # (...)
        keys = mixed_radix_keys(codes.clamp(min=0).minimum(sizes - 1), self.codebook_sizes)
        sorted_keys = self._sorted_keys.to(device)
        position = torch.searchsorted(sorted_keys, keys).clamp_max(len(sorted_keys) - 1)
        found = in_range & (sorted_keys[position] == keys)
        items = self._sorted_items.to(device)[position]
        return torch.where(found, items, torch.full_like(items, -1))  # (...)

    def is_legal(self, codes: Tensor) -> Tensor:
        """Whether each code tuple names an item: (..., num_levels) -> (...) bool."""
        return self.decode(codes) >= 0

    def allowed_next(self, prefix: Tensor) -> Tensor:
        """Mask of level-l codes that extend each prefix towards a real item.

        prefix (B, l) int64 with 0 <= l < num_levels -> (B, K_l) bool. A prefix that is
        itself illegal (out of range, or no item starts with it) allows nothing.
        """
        if prefix.dim() != 2 or not 0 <= prefix.shape[1] < self.num_levels:
            raise ValueError(
                f"prefix must have shape (B, l) with 0 <= l < {self.num_levels}, got "
                f"{tuple(prefix.shape)}"
            )
        level = prefix.shape[1]
        device = prefix.device
        prefix = prefix.long()
        sizes = torch.tensor(self.codebook_sizes[:level], device=device, dtype=torch.long)
        in_range = ((prefix >= 0) & (prefix < sizes)).all(dim=1)  # (B,)
        keys = mixed_radix_keys(prefix.clamp(min=0).minimum(sizes - 1), self.codebook_sizes)
        prefix_keys = self._prefix_keys[level].to(device)
        row = torch.searchsorted(prefix_keys, keys).clamp_max(len(prefix_keys) - 1)  # (B,)
        found = in_range & (prefix_keys[row] == keys)
        child_start = self._child_start[level].to(device)
        start = child_start[row]
        length = torch.where(found, child_start[row + 1] - start, torch.zeros_like(start))
        batch_index = torch.repeat_interleave(torch.arange(len(row), device=device), length)
        offset_in_run = torch.arange(int(length.sum()), device=device) - torch.repeat_interleave(
            length.cumsum(0) - length, length
        )
        child = self._child_codes[level].to(device)[start[batch_index] + offset_in_run]
        mask = torch.zeros(len(row), self.codebook_sizes[level], dtype=torch.bool, device=device)
        mask[batch_index, child] = True
        return mask  # (B, K_l)

    def save(self, path: str | Path) -> None:
        """Write the codec to a safetensors file with `atomic_write` (old file or new)."""
        header = {
            "format": CODEC_FORMAT,
            "format_version": str(CODEC_FORMAT_VERSION),
            "codebook_sizes": json.dumps(self.semantic_sizes),
            "collision_policy": self.collision_policy,
        }
        if self.catalog_fingerprint is not None:
            header["catalog_fingerprint"] = self.catalog_fingerprint
        payload = save_safetensors({"semantic_codes": self.semantic_codes.contiguous()}, header)
        atomic_write(path, lambda handle: handle.write(payload))

    @classmethod
    def load(cls, path: str | Path) -> SemanticIdCodec:
        """Read a codec written by `save`; a damaged or foreign file is a ValueError."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"codec file {path} does not exist; build one and save it first")
        fix = "rebuild the codec and save it again"
        try:
            with safe_open(path, framework="pt") as file:
                header = file.metadata() or {}
                semantic_codes = file.get_tensor("semantic_codes")
        except (SafetensorError, OSError) as error:
            raise unreadable(path, "codec file", error, fix) from error
        if header.get("format") != CODEC_FORMAT:
            raise ValueError(f"{path} is not a semantic-ID codec file (header {header})")
        if header.get("format_version") != str(CODEC_FORMAT_VERSION):
            raise ValueError(
                f"{path} has codec format_version {header.get('format_version')}, this version "
                f"of onerec-lab reads {CODEC_FORMAT_VERSION}; rebuild the codec"
            )
        try:
            sizes = tuple(json.loads(header["codebook_sizes"]))
            return cls(semantic_codes, sizes, header["collision_policy"],
                       catalog_fingerprint=header.get("catalog_fingerprint"))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path} has an inconsistent codec header ({error})") from error
