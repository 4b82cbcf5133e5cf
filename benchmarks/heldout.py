"""Held-out sessions for the pre-training studies (`benchmarks.scaling`, `benchmarks.codebook`).

The data: the synthetic world's cascade (fitted on popularity-policy logs, as `quickstart`
does) logs one round of sessions; every high-quality exposure of a session is a (context,
item) example (`trainers.pretrain_data.LoggedExamples`). Sessions, not exposures, are split
into training and held-out sets: a session is one simulated user, so no held-out user was
seen in training.

Held-out figures of a trained policy:
- next-token loss: the mean over held-out examples and code levels of -log p(c_l | c_<l, user),
  the quantity pre-training minimises, on unseen users;
- item NLL: -log p(item | user), the sum over the item's codes (nats per item);
- Recall@K / NDCG@K of next-item prediction: beam search with K beams, constrained to legal
  codes (`policy.codec`), against the example's item (`trainers.offline_eval` metrics), on
  all held-out examples or a subset (e.g. targets outside the most popular items).

Letters in shape comments: B batch, L levels, K beams.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from envs.catalog import Catalog
from envs.logs import LoggedSessions
from envs.simulator import SessionConfig
from policies.cascade import CascadeConfig, bootstrap_cascade
from policies.generation import beam_search
from policies.onerec import OneRecPolicy
from trainers.offline_eval import metrics_from_ranks, ranks_from_lists
from trainers.pretrain_data import LoggedExamples

# Shorter pathways than the report's (20 / 256 / 128 of 2,000): 1 + 20 + 64 + 16 = 101 encoder
# tokens instead of 405 make a CPU step ~4x cheaper; every model of a study sees the same.
SESSION_CONFIG = SessionConfig(positive_length=64, lifelong_history=500, lifelong_length=32)
LIFELONG_QUERIES = 16  # learned queries compressing the 32 lifelong entries (the report: 128)


class SplitExamples(NamedTuple):
    """Training and held-out examples of disjoint sessions (users)."""

    train: LoggedExamples
    held_out: LoggedExamples
    held_out_sessions: int


def cascade_logs(catalog: Catalog, users: int, requests: int, seed: int,
                 cascade_steps: int = CascadeConfig.retrieval_steps) -> LoggedSessions:
    """Sessions logged by a cascade fitted (`cascade_steps` retrieval and ranking steps) on
    the popularity policy's logs (one round)."""
    config = CascadeConfig(retrieval_steps=cascade_steps, ranking_steps=cascade_steps, seed=seed)
    _, rounds = bootstrap_cascade(catalog, config, users, requests, seed, rounds=1,
                                  session_config=SESSION_CONFIG)
    return rounds[-1]


def split_sessions(logs: LoggedSessions, held_out_share: float, seed: int) -> SplitExamples:
    """A seeded random `held_out_share` of the sessions is held out; the rest trains."""
    if not 0.0 < held_out_share < 1.0:
        raise ValueError(f"held_out_share must be in (0, 1), got {held_out_share}")
    order = np.random.default_rng(seed).permutation(logs.num_sessions)
    held = max(1, round(held_out_share * logs.num_sessions))
    return SplitExamples(LoggedExamples(logs, sessions=order[held:]),
                         LoggedExamples(logs, sessions=order[:held]), held)


def _batches(examples: LoggedExamples, limit: int | None,
             batch_size: int) -> list[np.ndarray]:
    """Index batches over the first `limit` held-out examples (all when None), in order."""
    count = examples.num_examples if limit is None else min(limit, examples.num_examples)
    return [np.arange(start, min(start + batch_size, count))
            for start in range(0, count, batch_size)]


@torch.no_grad()
def held_out_loss(policy: OneRecPolicy, examples: LoggedExamples, limit: int | None = None,
                  batch_size: int = 256) -> dict[str, float]:
    """Next-token loss (nats per code, mean over levels), per level, and item NLL (nats)."""
    policy.eval()
    token_nll = []
    for indices in _batches(examples, limit, batch_size):
        context, items = examples.examples(indices)
        codes = policy.item_codes[items].unsqueeze(1)  # (B, 1, L)
        token_nll.append(-policy.token_log_probs(context, codes)[:, 0])  # (B, L)
    per_token = torch.cat(token_nll).double()  # (examples, L)
    return {"loss": float(per_token.mean()),
            "level_losses": per_token.mean(0).tolist(),
            "item_nll": float(per_token.sum(1).mean()),
            "examples": int(per_token.shape[0])}


class HeldOutRanking(NamedTuple):
    """Beam-search results on held-out examples, for Recall@K / NDCG@K on any subset."""

    ranks: torch.Tensor  # (P,) int64: 0-based position of the target among K beams, K if absent
    targets: torch.Tensor  # (P,) int64 held-out items
    generated: torch.Tensor  # (P, K) int64 items of the beams, best first (-1: no legal item)


@torch.no_grad()
def held_out_ranking(policy: OneRecPolicy, examples: LoggedExamples, beams: int,
                     limit: int | None = None, batch_size: int = 128) -> HeldOutRanking:
    """`beams` constrained beams per held-out example; the target's rank among them."""
    policy.eval()
    ranks, targets, generated = [], [], []
    for indices in _batches(examples, limit, batch_size):
        context, items = examples.examples(indices)
        beam_items = beam_search(policy, context, beams, constraint=policy.codec).items  # (B, K)
        ranks.append(ranks_from_lists(beam_items, items))
        targets.append(items)
        generated.append(beam_items)
    return HeldOutRanking(torch.cat(ranks), torch.cat(targets), torch.cat(generated))


def ranking_metrics(ranks: torch.Tensor, ks: Sequence[int]) -> dict[str, float]:
    """Mean Recall@K and NDCG@K of ranks (P,) (`trainers.offline_eval` definitions)."""
    count = max(int(ranks.numel()), 1)
    return {name: value / count for name, value in metrics_from_ranks(ranks, ks).items()}
