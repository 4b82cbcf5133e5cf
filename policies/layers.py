"""Transformer building blocks shared by the encoder and the decoder.

Letters in shape comments: B users (batch), N rows (B x G), G rows per user (beams or
samples), T query tokens, S key tokens, H heads, Dh head width, D model width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (no mean subtraction), computed in float32."""

    def __init__(self, width: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(x.dtype)


class SwiGLU(nn.Module):
    """Gated feed-forward block: down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


def padding_attention_mask(valid: Tensor) -> Tensor:
    """Boolean attention mask (B, 1, 1, S) from key validity (B, S); True = may attend.

    A row whose keys are all padding would make softmax divide by zero (NaN); such a row
    attends to every key instead, which keeps the output finite. Callers mark the outputs
    that stem from such a row as padding themselves, so the values never matter.
    """
    any_valid = valid.any(dim=1, keepdim=True)  # (B, 1)
    return (valid | ~any_valid)[:, None, None, :]  # (B, 1, 1, S)


class Attention(nn.Module):
    """Multi-head attention over precomputed keys/values (self- or cross-attention).

    Keys and values come from `keys_values(source)`, so a decoder can compute them once per
    user and reuse them (cross-attention) or append to them step by step (self-attention
    KV cache). When the queries hold G rows per user and the keys one row per user, the G
    rows are folded into the query axis: all beams of a user share one copy of the keys.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.query = nn.Linear(d_model, d_model, bias=False)
        self.key_value = nn.Linear(d_model, 2 * d_model, bias=False)
        self.output = nn.Linear(d_model, d_model, bias=False)

    def _split_heads(self, x: Tensor) -> Tensor:
        rows, tokens, width = x.shape
        return x.view(rows, tokens, self.num_heads, width // self.num_heads).transpose(1, 2)

    def keys_values(self, source: Tensor) -> tuple[Tensor, Tensor]:
        """(N, S, D) -> keys, values, each (N, H, S, Dh)."""
        keys, values = self.key_value(source).chunk(2, dim=-1)
        return self._split_heads(keys), self._split_heads(values)

    def forward(
        self,
        x: Tensor,
        keys: Tensor,
        values: Tensor,
        mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """Queries from x (N, T, D) attend to keys/values (N or B, H, S, Dh) -> (N, T, D).

        `mask` is boolean, broadcastable to (keys rows, 1 or H, T', S), True = may attend.
        """
        rows, tokens, width = x.shape
        query = self._split_heads(self.query(x))  # (N, H, T, Dh)
        users = keys.shape[0]
        group = rows // users
        if group > 1:  # fold the G rows of each user into the query axis
            query = query.view(users, group, self.num_heads, tokens, -1)
            query = query.transpose(1, 2).reshape(users, self.num_heads, group * tokens, -1)
        attended = F.scaled_dot_product_attention(
            query, keys, values, attn_mask=mask, is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B or N, H, G*T or T, Dh)
        if group > 1:
            attended = attended.view(users, self.num_heads, group, tokens, -1).transpose(1, 2)
        attended = attended.reshape(rows, self.num_heads, tokens, -1).transpose(1, 2)
        return self.output(attended.reshape(rows, tokens, width))  # (N, T, D)
