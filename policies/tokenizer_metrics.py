"""How good a set of semantic IDs is: the numbers the OneRec report compares tokenizers by.

Letters used in shape comments: N items, D embedding width, L semantic levels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TokenizerReport:
    """Quality of item codes over the L semantic levels (never a disambiguation level)."""

    num_items: int
    codebook_sizes: tuple[int, ...]
    reconstruction_error: float  # sum ||x - x_hat||^2 / sum ||x||^2 over all items
    utilization: tuple[float, ...]  # per level: share of the K_l codes used by some item
    entropy_bits: tuple[float, ...]  # per level: entropy of the code distribution, bits
    collision_rate: float  # share of items whose full L-level code another item shares

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready values (tuples become lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()
        }


def relative_reconstruction_error(embeddings: Tensor, reconstruction: Tensor) -> float:
    """Squared error summed over items and dims, divided by the summed squared norm:
    sum ||x - x_hat||^2 / sum ||x||^2 (0 is perfect, 1 is as bad as predicting zero)."""
    embeddings, reconstruction = embeddings.double(), reconstruction.double()
    return float(((embeddings - reconstruction) ** 2).sum() / (embeddings**2).sum())


def level_utilization(codes: Tensor, codebook_sizes: tuple[int, ...]) -> tuple[float, ...]:
    """Per level, the share of codes that at least one item uses, in [0, 1]."""
    return tuple(
        int(torch.unique(codes[:, level]).numel()) / size
        for level, size in enumerate(codebook_sizes)
    )


def level_entropy_bits(codes: Tensor, codebook_sizes: tuple[int, ...]) -> tuple[float, ...]:
    """Per level, the entropy in bits of the item distribution over codes (max log2 K_l)."""
    entropies = []
    for level, size in enumerate(codebook_sizes):
        counts = torch.bincount(codes[:, level], minlength=size).double()
        probabilities = counts[counts > 0] / counts.sum()
        entropies.append(float(-(probabilities * probabilities.log2()).sum()))
    return tuple(entropies)


def collision_rate(codes: Tensor) -> float:
    """Share of items whose full code (N, L) row equals at least one other item's."""
    _, inverse, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).double().mean())


def tokenizer_report(
    embeddings: Tensor, reconstruction: Tensor, codes: Tensor, codebook_sizes: tuple[int, ...],
) -> TokenizerReport:
    """All metrics of codes (N, L) for embeddings (N, D) and their reconstruction (N, D)."""
    if codes.dim() != 2 or codes.shape[1] != len(codebook_sizes):
        raise ValueError(
            f"codes must have shape (N, {len(codebook_sizes)}) to match codebook_sizes "
            f"{codebook_sizes}, got {tuple(codes.shape)}"
        )
    codes = codes.long().cpu()
    return TokenizerReport(
        num_items=codes.shape[0],
        codebook_sizes=tuple(codebook_sizes),
        reconstruction_error=relative_reconstruction_error(embeddings.cpu(), reconstruction.cpu()),
        utilization=level_utilization(codes, codebook_sizes),
        entropy_bits=level_entropy_bits(codes, codebook_sizes),
        collision_rate=collision_rate(codes),
    )
