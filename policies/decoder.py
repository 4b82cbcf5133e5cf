"""The OneRec decoder: codes of one item (or a session of items) given the encoder memory.

Input sequence [BOS, c_1, ..., c_{P-1}] predicts [c_1, ..., c_P], P = session_items x L; the
code at sequence index p belongs to level p mod L, and each level has its own embedding
rows and output head (codebooks may differ in size). Each layer (pre-RMSNorm): causal
self-attention -> cross-attention to the memory -> dense or MoE FFN.

For generation the cross-attention keys/values are computed once per user
(`DecoderMemory`) and shared by all its beams or samples; the self-attention keys/values
of past positions are kept in a `DecoderCache` and reordered as beams are.

Letters in shape comments: B users, G rows per user (beams or samples), N = B x G rows,
S memory tokens, P decoded positions, n codes given so far, t new positions, L levels,
K_l codes of level l, K_max the largest codebook, H heads, Dh head width, D model width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import torch
from torch import Tensor, nn

from policies.config import OneRecConfig
from policies.encoder import apply_feed_forward, feed_forward
from policies.layers import Attention, RMSNorm, padding_attention_mask
from policies.repeat import RepeatMarks


class PrefixConstraint(Protocol):
    """What constrained decoding needs from a codec: the legal next codes of a prefix."""

    def allowed_next(self, prefix: Tensor) -> Tensor:
        """Codes (N, l) of levels 1..l of an item -> (N, K_{l+1}) bool, True = legal next."""
        ...


def next_code_log_probs(
    logits: Tensor, item_prefix: Tensor, constraint: PrefixConstraint | None
) -> Tensor:
    """Log-probabilities (N, K_l) of the next code, renormalised over legal codes if constrained.

    `logits` (N, K_l) are the head's outputs for level l; `item_prefix` (N, l) the codes of
    the current item so far. Illegal codes get -inf; a row with no legal code (an illegal
    prefix) gets -inf everywhere rather than NaN.
    """
    logits = logits.float()
    if constraint is None:
        return torch.log_softmax(logits, dim=-1)
    allowed = constraint.allowed_next(item_prefix).to(logits.device)  # (N, K_l)
    if allowed.shape != logits.shape:
        raise ValueError(
            f"constraint.allowed_next returned shape {tuple(allowed.shape)} for a prefix of "
            f"shape {tuple(item_prefix.shape)}, expected {tuple(logits.shape)}; the codec's "
            "codebook_sizes must match the policy's"
        )
    masked = torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
    return torch.where(allowed, masked, float("-inf"))


class DecoderMemory(NamedTuple):
    """Cross-attention keys/values of each layer, computed once per user."""

    keys: tuple[Tensor, ...]  # per layer (B, H, S, Dh)
    values: tuple[Tensor, ...]  # per layer (B, H, S, Dh)
    mask: Tensor  # (B, 1, 1, S) bool, True = a memory token that may be attended
    repeats: RepeatMarks | None = None  # the user's history items; read only by a decoder
    # with `repeat_bias`


@dataclass
class DecoderCache:
    """Self-attention keys/values of the positions decoded so far, per layer."""

    keys: list[Tensor] = field(default_factory=list)  # per layer (N, H, n, Dh)
    values: list[Tensor] = field(default_factory=list)  # per layer (N, H, n, Dh)

    @property
    def length(self) -> int:
        """Positions already processed."""
        return self.keys[0].shape[2] if self.keys else 0

    def select_rows(self, rows: Tensor) -> None:
        """Keep rows `rows` (N',) in that order: beam reordering or expanding users to samples."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]


class DecoderLayer(nn.Module):
    """Causal self-attention -> cross-attention -> FFN, each pre-RMSNorm and residual."""

    def __init__(self, config: OneRecConfig) -> None:
        super().__init__()
        self.self_norm = RMSNorm(config.d_model)
        self.self_attention = Attention(config.d_model, config.num_heads, config.dropout)
        self.cross_norm = RMSNorm(config.d_model)
        self.cross_attention = Attention(config.d_model, config.num_heads, config.dropout)
        self.ffn_norm = RMSNorm(config.d_model)
        self.ffn = feed_forward(config, config.moe_in_decoder)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: Tensor,
        memory_keys: Tensor,
        memory_values: Tensor,
        memory_mask: Tensor,
        cache: DecoderCache | None,
        layer: int,
    ) -> Tensor:
        """(N, t, D) new positions -> (N, t, D); appends their keys/values to `cache`."""
        normed = self.self_norm(x)
        keys, values = self.self_attention.keys_values(normed)  # (N, H, t, Dh)
        past = 0
        if cache is not None:
            if layer < len(cache.keys):
                past = cache.keys[layer].shape[2]
                keys = torch.cat([cache.keys[layer], keys], dim=2)
                values = torch.cat([cache.values[layer], values], dim=2)
                cache.keys[layer], cache.values[layer] = keys, values
            else:
                cache.keys.append(keys)
                cache.values.append(values)
        new = x.shape[1]
        causal_mask = None
        if past and new > 1:  # new positions see all past ones and the new ones up to themselves
            causal_mask = torch.ones(new, past + new, dtype=torch.bool, device=x.device).tril(past)
        x = x + self.dropout(self.self_attention(
            normed, keys, values, mask=causal_mask, is_causal=not past and new > 1
        ))
        x = x + self.dropout(
            self.cross_attention(self.cross_norm(x), memory_keys, memory_values, memory_mask)
        )
        return x + self.dropout(apply_feed_forward(self.ffn, self.ffn_norm(x), None))


class OneRecDecoder(nn.Module):
    """Code prefix + memory -> logits of the next codes, one head per level."""

    def __init__(self, config: OneRecConfig) -> None:
        super().__init__()
        self.config = config
        sizes = config.codebook_sizes
        # Row 0 is BOS; then level 1's codes, level 2's, ...: one lookup for any position.
        offsets = [1 + sum(sizes[:level]) for level in range(len(sizes))]
        self.register_buffer("level_offsets", torch.tensor(offsets), persistent=False)  # (L,)
        self.tokens = nn.Embedding(1 + sum(sizes), config.d_model)
        self.positions = nn.Embedding(config.decoder_length, config.d_model)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
        self.norm = RMSNorm(config.d_model)
        self.heads = nn.ModuleList(
            nn.Linear(config.d_model, size, bias=False) for size in config.codebook_sizes
        )
        # (2, L) logit offsets of a code that continues / commits to a history item
        # (policies.repeat); they start at 0, no opinion, and are learned from the data
        self.repeat_bias = nn.Parameter(torch.zeros(2, len(sizes))) if config.repeat_bias else None

    def prepare_memory(
        self, memory: Tensor, memory_valid: Tensor, repeats: RepeatMarks | None = None
    ) -> DecoderMemory:
        """Cross-attention keys/values of every layer from the encoder output (B, S, D).

        A decoder with `repeat_bias` needs `repeats`, the users' history items
        (`OneRecPolicy.decoder_memory` builds them).
        """
        if self.repeat_bias is not None and repeats is None:
            raise ValueError(
                "this decoder has repeat_bias and needs the history items' codes; build the "
                "memory with policy.decoder_memory(context)"
            )
        pairs = [layer.cross_attention.keys_values(memory) for layer in self.layers]
        return DecoderMemory(
            keys=tuple(k for k, _ in pairs), values=tuple(v for _, v in pairs),
            mask=padding_attention_mask(memory_valid), repeats=repeats,
        )

    def forward(
        self, prefix: Tensor, memory: DecoderMemory, cache: DecoderCache | None = None
    ) -> Tensor:
        """Logits (N, t, K_max) for positions cache.length .. n given the codes so far.

        `prefix` (N, n) holds the codes decoded so far (without BOS); position p's input is
        BOS for p = 0, else prefix[:, p - 1], and it predicts the code of level p mod L.
        Without a cache all n + 1 positions are computed (teacher forcing); with one, only
        those not yet in it. Logits beyond a level's codebook size are -inf.
        """
        levels = self.config.num_levels
        start = cache.length if cache is not None else 0
        stop = prefix.shape[1] + 1
        if not 0 <= start < stop <= self.config.decoder_length:
            raise ValueError(
                f"prefix holds {prefix.shape[1]} codes and the cache {start} positions; the "
                f"decoder takes at most {self.config.decoder_length - 1} codes "
                f"(session_items x levels - 1) and needs a new position"
            )
        levels_of_prefix = torch.arange(prefix.shape[1], device=prefix.device) % levels
        inputs = torch.cat(  # (N, n + 1): BOS (row 0), then each code's row in its level
            [prefix.new_zeros(prefix.shape[0], 1), prefix + self.level_offsets[levels_of_prefix]],
            dim=1,
        )
        positions = torch.arange(start, stop, device=prefix.device)  # (t,)
        token_ids = inputs[:, start:stop]  # (N, t)
        x = self.tokens(token_ids) + self.positions(positions)  # (N, t, D)
        for index, layer in enumerate(self.layers):
            x = layer(x, memory.keys[index], memory.values[index], memory.mask, cache, index)
        x = self.norm(x)
        k_max = max(self.config.codebook_sizes)
        logits = x.new_full((*x.shape[:2], k_max), float("-inf"))  # (N, t, K_max)
        for level, head in enumerate(self.heads):
            first = (level - start) % levels  # first new position of this level; then every L
            if first < x.shape[1]:
                level_logits = head(x[:, first::levels]).to(logits.dtype)
                logits[:, first::levels, : head.out_features] = level_logits
        if self.repeat_bias is not None:
            self._add_repeat_bias(logits, prefix, memory.repeats, start)
        return logits

    def _add_repeat_bias(
        self, logits: Tensor, prefix: Tensor, repeats: RepeatMarks, start: int
    ) -> None:
        """Add the learned offsets to the logits (N, t, K_max) of codes marked by `repeats`."""
        levels = self.config.num_levels
        for offset in range(logits.shape[1]):
            position = start + offset
            level = position % levels
            size = self.config.codebook_sizes[level]
            marks = repeats.marks(prefix[:, position - level : position])  # (N, 2, K_l)
            bias = (self.repeat_bias[:, level, None] * marks).sum(1)  # (N, K_l)
            logits[:, offset, :size] += bias.to(logits.dtype)
