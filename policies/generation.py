"""Generating items from a OneRec policy: beam search and sampling (Pass@K), optionally
constrained to legal codes by a prefix trie (any object with `allowed_next`, e.g. the codec).

Both run the encoder once per user, compute the cross-attention keys/values once per user
(shared by its K beams or samples) and keep a self-attention KV cache. The log-probabilities
they report are the model's (temperature 1, no top-k/top-p truncation; renormalised over
legal codes when constrained), so they equal `policy.log_prob(context, codes, constraint)`:
what the RL ratio pi_theta / pi_old needs. Call `policy.eval()` first: dropout would make
them noisy and training-mode MoE layers would count generation tokens as training load.

Letters in shape comments: B users, K beams or samples per user, N = B x K rows, M items per
session, L levels, P = M x L decoded positions, K_l codes of level l.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from policies.decoder import DecoderCache, DecoderMemory, PrefixConstraint, next_code_log_probs
from policies.encoder import Context
from policies.onerec import OneRecPolicy


class GenerationResult(NamedTuple):
    """K generated items (or sessions) per user."""

    codes: Tensor  # (B, K, L) int64, or (B, K, M, L) session-wise
    log_probs: Tensor  # (B, K) float32: log pi(item | user), the sum of token_log_probs
    token_log_probs: Tensor  # shaped like codes: log p of each code given the earlier ones
    items: Tensor  # (B, K) int64, or (B, K, M); -1 where the codes map to no item (illegal)


def _next_log_probs(
    policy: OneRecPolicy,
    prefix: Tensor,
    memory: DecoderMemory,
    cache: DecoderCache,
    constraint: PrefixConstraint | None,
) -> Tensor:
    """Log-probabilities (N, K_l) of the code after `prefix` (N, n), level l = n mod L."""
    position = prefix.shape[1]
    level = position % policy.config.num_levels
    logits = policy.decoder(prefix, memory, cache)[:, -1, : policy.config.codebook_sizes[level]]
    return next_code_log_probs(logits, prefix[:, position - level :], constraint)


def _result(
    policy: OneRecPolicy, prefix: Tensor, token_log_probs: Tensor, users: int
) -> GenerationResult:
    """Package (N, P) codes and log-probs as (B, K, [M,] L) tensors."""
    codes = prefix.view(users, -1, *policy.config.item_shape)
    token_log_probs = token_log_probs.view(codes.shape)
    return GenerationResult(
        codes=codes,
        log_probs=token_log_probs.flatten(2).sum(-1),
        token_log_probs=token_log_probs,
        items=policy.items_from_codes(codes),
    )


def _start(policy: OneRecPolicy, context: Context) -> tuple[DecoderMemory, DecoderCache, Tensor]:
    """Encode once per user; an empty cache and an empty prefix (B, 0)."""
    memory = policy.decoder_memory(context)
    prefix = torch.zeros(context.batch_size, 0, dtype=torch.long, device=memory.mask.device)
    return memory, DecoderCache(), prefix


@torch.no_grad()
def beam_search(
    policy: OneRecPolicy,
    context: Context,
    beam_size: int,
    constraint: PrefixConstraint | None = None,
) -> GenerationResult:
    """The `beam_size` most likely items per user, best first (distinct code sequences).

    With a constraint every beam stays a legal prefix; if fewer legal items than beams
    exist, the surplus beams come last with log-prob -inf and item -1.
    """
    config = policy.config
    sequences = math.prod(config.codebook_sizes) ** config.session_items
    if not 1 <= beam_size <= sequences:
        raise ValueError(
            f"beam_size must be in [1, {sequences}] (the number of distinct code sequences), "
            f"got {beam_size}"
        )
    users = context.batch_size
    memory, cache, prefix = _start(policy, context)
    token_log_probs = torch.zeros(users, 0, device=prefix.device)
    scores = torch.zeros(users, 1, device=prefix.device)  # (B, beams): one beam (BOS) at first
    for _ in range(config.decoder_length):
        log_probs = _next_log_probs(policy, prefix, memory, cache, constraint)  # (B beams, K_l)
        beams, codes = scores.shape[1], log_probs.shape[1]
        candidates = (scores.unsqueeze(-1) + log_probs.view(users, beams, codes)).view(users, -1)
        scores, chosen = candidates.topk(min(beam_size, beams * codes), dim=1)  # (B, beams')
        rows = (torch.arange(users, device=prefix.device).unsqueeze(1) * beams
                + chosen // codes).view(-1)  # (B beams',) row of each new beam's parent
        new_codes = (chosen % codes).view(-1, 1)
        chosen_log_probs = log_probs.view(users, -1).gather(1, chosen).view(-1, 1)
        prefix = torch.cat([prefix[rows], new_codes], dim=1)
        token_log_probs = torch.cat([token_log_probs[rows], chosen_log_probs], dim=1)
        cache.select_rows(rows)
    return _result(policy, prefix, token_log_probs, users)


@torch.no_grad()
def sample(
    policy: OneRecPolicy,
    context: Context,
    num_samples: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    constraint: PrefixConstraint | None = None,
) -> GenerationResult:
    """`num_samples` items per user drawn code by code (Pass@K; duplicates are possible).

    `temperature`, `top_k` and `top_p` shape the proposal only; the reported log-probs are
    the model's (see the module docstring). Draws come from `generator` (its device must be
    the policy's), so the same generator state gives the same samples.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if temperature <= 0:
        raise ValueError(
            f"temperature must be > 0, got {temperature}; use beam_search for greedy decoding"
        )
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")
    users = context.batch_size
    memory, cache, prefix = _start(policy, context)
    token_log_probs = torch.zeros(users * num_samples, 0, device=prefix.device)
    for position in range(policy.config.decoder_length):
        log_probs = _next_log_probs(policy, prefix, memory, cache, constraint)  # (N, K_l)
        if position == 0:  # every sample of a user shares the BOS step: expand only now
            rows = torch.arange(users, device=prefix.device).repeat_interleave(num_samples)
            log_probs, prefix = log_probs[rows], prefix[rows]
            cache.select_rows(rows)
        proposal = _truncate(log_probs / temperature, top_k, top_p)
        new_codes = torch.multinomial(proposal.softmax(-1), 1, generator=generator)  # (N, 1)
        prefix = torch.cat([prefix, new_codes], dim=1)
        token_log_probs = torch.cat([token_log_probs, log_probs.gather(1, new_codes)], dim=1)
    return _result(policy, prefix, token_log_probs, users)


def _truncate(logits: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    """Keep the top_k largest logits, then the smallest set holding top_p of the mass."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        mass_before = probs.cumsum(-1) - probs  # mass of the strictly more likely codes
        sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))
        logits = torch.empty_like(logits).scatter(-1, order, sorted_logits)
    return logits
