"""Rollouts: G items per user from the policy, and the simulated users they are drawn for.

`generate_group` is the old policy's side of GRPO/ECPO: `rollout="beam"` takes the G most
likely items (beam search of width G, the report's better choice), `"sampling"` draws G
items with temperature / top-k / top-p. Decoding is unconstrained by default: an illegal code
(no item has it) can come out, which is what the format reward is for. The reported
log-probabilities are the model's own (temperature 1, no truncation), i.e. log pi_old.

`SimulatedUsers` hands out B fresh users per step from the vector env, seeded by
(seed, step, rank), so that a resumed run sees the same users and each torchrun rank its
own shard; it also gives the oracle's expected outcome of any item for those users.

Letters used in shape comments: B users, G samples per user, L levels, F feedback fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from envs.catalog import Catalog
from envs.response import NUM_DRAWS
from envs.simulator import SessionConfig
from envs.spec import BLANK
from envs.vector_env import OneRecVectorEnv
from policies.encoder import Context
from policies.generation import beam_search, sample
from policies.onerec import OneRecPolicy

RolloutMethod = Literal["beam", "sampling"]
# First user seed of training run `seed`: 10^7 users apart, away from the logged sessions
# (seeds 0, 1, ...) and the evaluation users (trainers.evaluate.EVALUATION_SEED).
TRAINING_USERS_PER_SEED = 10_000_000


@dataclass(frozen=True)
class RolloutConfig:
    """How the old policy proposes a group."""

    method: RolloutMethod = "beam"  # beam search of width G beat top-k/top-p in the report
    num_generations: int = 16  # G: items per user (the report: 512; CPU-sized here)
    temperature: float = 1.0  # sampling only: the proposal's temperature
    top_k: int | None = None  # sampling only: keep the k most likely codes per level
    top_p: float | None = None  # sampling only: nucleus mass per level

    def __post_init__(self) -> None:
        if self.method not in ("beam", "sampling"):
            raise ValueError(f"rollout must be 'beam' or 'sampling', got {self.method!r}")
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be >= 2 for group-relative advantages, got "
                f"{self.num_generations}"
            )


class Rollout(NamedTuple):
    """G items per user and their log-probabilities under the policy that generated them."""

    codes: Tensor  # (B, G, L) int64
    items: Tensor  # (B, G) int64, -1 where the codes name no item (illegal)
    log_probs: Tensor  # (B, G) log pi_old(o_i | u), the sum of the item's code log-probs
    legacy: Tensor | None = None  # (B, G) bool: exposures of the logging policy, pi_old unknown


def mix_legacy(policy: OneRecPolicy, context: Context, rollout: Rollout, legacy_items: Tensor
               ) -> Rollout:
    """`rollout` with its last K samples per group replaced by the logging policy's items
    (B, K) for the same users (OneRec-V2's legacy exposures), where it has one (a BLANK keeps
    the policy's sample). Their log-probabilities are the policy's now, and `legacy` marks
    them: their pi_old is unknown, so the losses take sg(pi_theta) (ratio 1)."""
    batch, group = rollout.items.shape
    keep = group - legacy_items.shape[1]
    legacy_items = legacy_items.to(rollout.items.device)
    slots = torch.zeros(batch, group, dtype=torch.bool, device=rollout.items.device)
    slots[:, keep:] = legacy_items != BLANK  # (B, G)
    items = rollout.items.clone()
    items[:, keep:] = torch.where(slots[:, keep:], legacy_items, items[:, keep:])
    codes = torch.where(slots[..., None], policy.codec.encode(items.clamp(min=0)).to(
        rollout.codes.device), rollout.codes)  # (B, G, L)
    with torch.no_grad():
        now = policy.log_prob(context, codes)  # (B, G)
    log_probs = torch.where(slots, now, rollout.log_probs)
    return Rollout(codes, items, log_probs, slots)


def generate_group(
    policy: OneRecPolicy, context: Context, config: RolloutConfig,
    generator: torch.Generator | None = None,
) -> Rollout:
    """G items per user from `policy` in eval mode (its training mode is restored after),
    unconstrained: illegal codes can come out."""
    training = policy.training
    policy.eval()
    try:
        if config.method == "beam":
            result = beam_search(policy, context, config.num_generations)
        else:
            result = sample(policy, context, config.num_generations, config.temperature,
                            config.top_k, config.top_p, generator)
    finally:
        policy.train(training)
    return Rollout(result.codes, result.items, result.log_probs)


class SimulatedUsers:
    """B new users of the simulated world per step, and the oracle's view of them."""

    def __init__(self, catalog: Catalog, session_config: SessionConfig, users_per_step: int,
                 seed: int, rank: int = 0, world_size: int = 1) -> None:
        if users_per_step < 1:
            raise ValueError(f"users_per_step must be >= 1, got {users_per_step}")
        self.users_per_step, self.rank, self.world_size = users_per_step, rank, world_size
        self.first_seed = (seed + 1) * TRAINING_USERS_PER_SEED
        self.env = OneRecVectorEnv(num_envs=users_per_step, catalog=catalog,
                                   config=session_config)

    def observe(self, step: int) -> dict[str, np.ndarray]:
        """The observations (B, ...) of this rank's users of `step` (1-based), at their
        session's first request. User seeds follow each other across steps and ranks."""
        first = self.first_seed + ((step - 1) * self.world_size + self.rank) * self.users_per_step
        observation, _ = self.env.reset(seed=first)
        return observation

    def expected_feedback(self, items: Tensor) -> Tensor:
        """The true expected feedback of each item (B, G) for the current users, each shown
        alone (`SessionSimulator.expected_feedback`): (B, G, F) float32, 0 for illegal items."""
        rows = np.arange(self.users_per_step)
        feedback = self.env.simulator.expected_feedback(rows, items.cpu().numpy())
        return torch.as_tensor(feedback, dtype=torch.float32)

    def observed_feedback(self, items: Tensor, generator: torch.Generator) -> Tensor:
        """One drawn reaction of each current user to each item (B, G), shown alone
        (`SessionSimulator.observed_feedback`): what production would log of an exposure, not
        the expectation the oracle reads. Draws come from `generator`. (B, G, F) float32."""
        rows = np.arange(self.users_per_step)
        uniforms = torch.rand((*items.shape, NUM_DRAWS), generator=generator,
                              dtype=torch.float64, device=generator.device)
        draws = uniforms.cpu().numpy().clip(1e-12, 1 - 1e-12)  # (B, G, D) inside (0, 1)
        feedback = self.env.simulator.observed_feedback(rows, items.cpu().numpy(), draws)
        return torch.as_tensor(feedback, dtype=torch.float32)

    def close(self) -> None:
        self.env.close()
