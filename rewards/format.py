"""Format validity: the share of a slate's codes that map to a real, not yet shown item.

The OneRec report added a format reward because RL without it drove the legality of generated
codes below 50% (negative advantages push probability mass onto codes that decode to nothing).
A slot is legal when its code decodes to an item (the codec's `is_legal`) and that item did not
already appear earlier in the slate: a duplicate counts as illegal after its first occurrence.

`format_selection` is the report's training rule for that reward: pick K of a group's G samples
at random; the legal ones get advantage 1, the illegal ones are dropped (never a negative
advantage, which is what squeezed mass onto illegal codes in the first place).

Letters used in shape comments: B batch, S slate, L levels, G group (samples per user).
"""

from __future__ import annotations

import torch

from envs.spec import BLANK
from rewards.protocol import (
    Codec,
    Declared,
    RewardInput,
    RewardOutput,
    decode_codes,
    repeated_after_first,
)


def legal_slots(batch: RewardInput, codec: Codec | None = None) -> torch.Tensor:
    """(B, S) bool: the slot shows a real item for the first time in its slate.

    With codes in the batch, legality comes from `codec` (required then); without codes the
    batch holds already decoded item slates, where an illegal code is a BLANK.
    """
    if batch.codes is not None:
        if codec is None:
            raise ValueError(
                "the format reward got codes but no codec to check them; build it with "
                "codec=SemanticIdCodec (e.g. rewards.build('format', codec=codec))"
            )
        items, legal = decode_codes(codec, batch.codes)
    else:
        items, legal = batch.items, batch.items != BLANK
    return legal & ~repeated_after_first(items, legal)


class FormatReward(Declared):
    """Slate reward = share of legal slots (duplicates illegal after the first), in [0, 1].

    The one built-in reward that judges codes: an illegal code is worth 0, an opinion.
    """

    name = "format"
    requires: frozenset[str] = frozenset()
    judges_codes = True

    def __init__(self, codec: Codec | None = None) -> None:
        self.codec = codec

    def item_scores(self, batch: RewardInput) -> torch.Tensor:
        """(B, S) 1.0 for a legal slot, 0.0 otherwise."""
        return legal_slots(batch, self.codec).float()

    def __call__(self, batch: RewardInput) -> RewardOutput:
        return RewardOutput.single(
            self.name, legal_slots(batch, self.codec).float().mean(1)
        )  # (B,)


def format_selection(
    legal: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The report's format-reward rule: K random samples per group, legal ones get advantage 1.

    `legal` (B, G) bool. Returns (selected (B, G) bool: picked AND legal, advantages (B, G)
    float: 1.0 where selected, 0.0 elsewhere). Picked illegal samples are dropped, not
    penalised; advantages are never negative. `generator` must live on `legal`'s device.
    """
    if legal.dim() != 2:
        raise ValueError(f"legal must be (B, G) bool, got shape {tuple(legal.shape)}")
    group = legal.shape[1]
    if not 1 <= k <= group:
        raise ValueError(f"k must be in [1, G={group}] samples per group, got {k}")
    noise = torch.rand(legal.shape, generator=generator, device=legal.device)  # (B, G)
    picked_index = noise.argsort(dim=1)[:, :k]  # (B, K) a uniform K-subset of each group
    picked = torch.zeros_like(legal, dtype=torch.bool).scatter_(1, picked_index, True)
    selected = picked & legal.bool()
    return selected, selected.float()
