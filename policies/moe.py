"""Mixture-of-experts feed-forward layer with top-k routing and loss-free load balancing.

Routing follows DeepSeek-V3 (arXiv 2412.19437, section 2.1.2), which the OneRec report uses:
affinities s = sigmoid(x W_router); the top-k experts are chosen by s + b, where b is a
per-expert bias that only steers the choice; the gates are the chosen s renormalised to sum
to 1 (b never enters them). After each training step, `update_balance()` moves the bias
against the load: b_e += gamma * sign(mean_load - load_e). No auxiliary loss is needed.

Letters in shape comments: N tokens, D model width, E experts, k active experts per token,
H expert hidden width.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RoutingStats(NamedTuple):
    """How the tokens of one forward pass were spread over the experts (for logging)."""

    expert_load: Tensor  # (E,) share of the (token, expert) assignments each expert got
    max_over_mean: Tensor  # () max load / mean load: 1 = balanced, E/k = all on k experts


def routing_stats(counts: Tensor) -> RoutingStats:
    """Load shares and balance from per-expert assignment counts (E,)."""
    load = counts.float() / counts.sum().clamp_min(1)
    return RoutingStats(load, load.max() / load.mean())


class MoEFeedForward(nn.Module):
    """E SwiGLU experts, each token processed by k of them and mixed by its gates."""

    def __init__(
        self,
        d_model: int,
        hidden: int,
        num_experts: int,
        experts_active: int,
        balance_update_rate: float,
    ) -> None:
        super().__init__()
        if not 1 <= experts_active <= num_experts:
            raise ValueError(
                f"experts_active must be in [1, num_experts={num_experts}], got {experts_active}"
            )
        self.experts_active = experts_active
        self.balance_update_rate = balance_update_rate
        self.router = nn.Linear(d_model, num_experts, bias=False)
        self.gate_up = nn.Parameter(torch.empty(num_experts, d_model, 2 * hidden))  # (E, D, 2H)
        self.down = nn.Parameter(torch.empty(num_experts, hidden, d_model))  # (E, H, D)
        # The routing bias changes outputs, so it is saved with the weights.
        self.register_buffer("routing_bias", torch.zeros(num_experts))  # (E,)
        # Assignments counted in training mode since the last bias update (not saved).
        self.register_buffer("pending_counts", torch.zeros(num_experts), persistent=False)
        self.last_stats: RoutingStats | None = None
        nn.init.normal_(self.gate_up, std=0.02)
        nn.init.normal_(self.down, std=0.02)

    @property
    def num_experts(self) -> int:
        return self.router.out_features

    def route(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Chosen experts (N, k) int64 and their gates (N, k) float32 (rows sum to 1)."""
        affinity = torch.sigmoid(self.router(x).float())  # (N, E)
        chosen = (affinity + self.routing_bias).topk(self.experts_active, dim=-1).indices
        gates = affinity.gather(-1, chosen)  # (N, k)
        return chosen, gates / gates.sum(-1, keepdim=True)

    def forward(self, x: Tensor, token_mask: Tensor | None = None) -> Tensor:
        """(..., D) -> (..., D); tokens where `token_mask` (...) is False get zeros.

        Masked tokens (padding) are neither computed nor counted in the load statistics.
        """
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # (N, D)
        if token_mask is not None:
            kept = token_mask.reshape(-1).nonzero().squeeze(1)  # (N',)
            flat = flat[kept]
        chosen, gates = self.route(flat)  # (N', k) each
        counts = torch.bincount(chosen.reshape(-1), minlength=self.num_experts)  # (E,)
        self.last_stats = routing_stats(counts.detach())
        if self.training:
            self.pending_counts += counts.detach().to(self.pending_counts.dtype)

        # Dispatch: sort the (token, expert) assignments by expert, run each expert once on
        # its contiguous block, scale by the gates and add back to the tokens.
        assignment_expert = chosen.reshape(-1)  # (N' k,)
        order = assignment_expert.argsort(stable=True)
        token_of = order // self.experts_active  # (N' k,)
        # An expert with no tokens still runs on its empty block, so every weight takes part
        # in the graph (data-parallel training expects a gradient for each parameter).
        blocks = flat[token_of].split(counts.tolist())
        expert_out = torch.cat([self._expert(e, block) for e, block in enumerate(blocks)])
        expert_out = expert_out * gates.reshape(-1)[order, None].to(expert_out.dtype)  # (N' k, D)
        mixed = torch.zeros(flat.shape, dtype=expert_out.dtype, device=flat.device)
        mixed = mixed.index_add(0, token_of, expert_out).to(x.dtype)  # (N', D)
        if token_mask is None:
            return mixed.view(shape)
        full = torch.zeros(shape[:-1].numel(), shape[-1], dtype=x.dtype, device=x.device)
        return full.index_copy(0, kept, mixed).view(shape)

    def _expert(self, expert: int, tokens: Tensor) -> Tensor:
        """SwiGLU of one expert on its tokens (n, D) -> (n, D)."""
        gate, up = (tokens @ self.gate_up[expert]).chunk(2, dim=-1)
        return (F.silu(gate) * up) @ self.down[expert]

    @torch.no_grad()
    def update_balance(self) -> RoutingStats | None:
        """Apply b += gamma * sign(mean_load - load) from the loads counted since the last call.

        Call once after each optimizer step. Returns the statistics of the counted period,
        or None when nothing was routed in training mode since the last call.
        """
        counts = self.pending_counts
        if counts.sum() == 0:
            return None
        stats = routing_stats(counts)
        self.routing_bias += self.balance_update_rate * torch.sign(counts.mean() - counts)
        counts.zero_()
        return stats
