"""The step the online alignment methods share: users -> group -> rewards -> loss -> update.

One step of GRPO, ECPO, RSFT or DPO (`trainers.grpo`, `trainers.rsft`, `trainers.dpo`):

1. B new simulated users (`SimulatedUsers`, seeded by seed, step and rank);
2. G items per user from the policy before this step (`generate_group`: beam or sampling,
   unconstrained);
3. every item scored by each term of the reward spec (`GroupScorer`: P-score, format, ...),
   and its TRUE expected outcome from the simulator, so each run logs the reward it
   optimises next to the truth of the same rollouts (reward hacking shows as a gap);
4. pi_old: the log-probabilities of the rollout policy (`reference="current"`, on-policy) or
   of the frozen starting policy (`"pretrained"`);
5. `num_iterations` optimizer steps on the method's loss + `ntp_weight` x the next-token loss
   on high-quality logged exposures (OneRec co-trains instead of a KL term), each followed by
   `update_routing_balance()`.

The loop around the steps is `trainers.loop`'s, shared with pre-training: TensorBoard
(rank 0, with `output_dir`, under `output_dir/tensorboard`): `losses/*`, `rewards/proxy` and
`rewards/<term>`, `charts/true_watch_time`, `charts/true_engagement`, `charts/legality`,
`charts/grad_norm`, `charts/learning_rate` and the method's own charts (`charts/clip_fraction`,
...); a step's figure is the mean over its updates and ranks, the largest for `*_max` charts,
and each point the mean (the largest) over the steps since the previous write; the
hyper-parameters as text at the start. Checkpoints (`output_dir/checkpoint.pt`, every
`save_steps` and at the end) hold the model (with its config, so `load_policy` reads them),
AdamW, the schedule, every step's metrics, the next-token sampler and the frozen reference;
users and rollout draws are functions of (seed, step, rank), so a resumed run continues the
same curve. Divergence (`TrainingDiverged`) and interrupts (`TrainingInterrupted`, a
checkpoint saved at the step boundary) are the loop's, as in pre-training.

Data parallelism (`torchrun`, gloo on CPU, NCCL on GPU): rank r takes its own B users each
step, gradients are all-reduced (averaged) before the optimizer step and the MoE load counts
summed before the bias update, so every rank keeps the same weights; rank 0 writes.

Letters used in shape comments: B users, G samples per user, L levels.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from envs.catalog import Catalog
from envs.simulator import SessionConfig
from policies.encoder import Context
from policies.onerec import OneRecPolicy
from rewards import RewardModel
from trainers.group_rewards import GroupRewards, GroupScorer
from trainers.loop import (
    Metrics,
    TrainingLoop,
    TrainingResult,
    TrainingTask,
    reduce_records,
    run_training,
)
from trainers.pretrain_data import BatchSampler, ExampleSource
from trainers.rollout import Rollout, RolloutConfig, RolloutMethod, SimulatedUsers, generate_group

Reference = Literal["current", "pretrained"]
# Settings that only say how a run is watched or where it runs: a resumed run may change them.
RUN_SETTINGS = frozenset({"max_steps", "logging_steps", "save_steps", "output_dir", "device",
                          "progress", "log_negative_gradient"})


@dataclass
class OnlineConfig:
    """What every online method shares (names as in TRL's GRPOConfig where they exist)."""

    learning_rate: float = 1e-4  # AdamW step size, constant after warm-up (RL moves little)
    max_steps: int = 50  # optimizer-step rounds (each: one rollout, num_iterations updates)
    users_per_step: int = 16  # B: users (TRL's prompts) per step and process
    num_generations: int = 16  # G: items per user (the report: 512; 512 beat 128)
    num_iterations: int = 1  # TRL's mu: updates per rollout; > 1 moves the ratio away from 1
    rollout: RolloutMethod = "beam"  # beam search of width G (the report's better choice) or sampling
    temperature: float = 1.0  # sampling only: temperature of the proposal
    top_k: int | None = None  # sampling only: top-k codes per level
    top_p: float | None = None  # sampling only: nucleus mass per level
    reference: Reference = "current"  # pi_old: the policy before this step (on-policy, the
    # report's better choice) or the frozen starting policy ("pretrained")
    reward_weights: tuple[float, ...] | None = None  # replace the spec's term weights, in order
    ntp_weight: float = 1.0  # weight of the next-token loss on logged exposures (co-training)
    ntp_batch_size: int = 32  # logged exposures per step and process for that loss
    max_grad_norm: float = 1.0  # clip the gradient norm to this; 0 = off
    weight_decay: float = 0.0  # AdamW decay of matrices: 0, fine-tuning should not shrink weights
    warmup_steps: int = 0  # linear warm-up of the learning rate over these steps
    logging_steps: int = 1  # TensorBoard scalars every this many steps (means over the window)
    save_steps: int = 25  # checkpoint every this many steps (and at the end)
    seed: int = 0  # seeds the users, the rollout draws and the next-token batches
    output_dir: str | None = None  # checkpoint + TensorBoard folder, resumed from; None = no files
    device: str | None = None  # None: cuda:LOCAL_RANK when CUDA is available, else cpu
    progress: bool = True  # progress on rank 0: a bar on a terminal, else plain lines on stderr

    def __post_init__(self) -> None:
        if self.reward_weights is not None:
            self.reward_weights = tuple(float(weight) for weight in self.reward_weights)
        for name in ("max_steps", "users_per_step", "num_iterations", "ntp_batch_size",
                     "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.learning_rate < math.inf:  # NaN too: it would diverge at step 1
            raise ValueError(f"learning_rate must be > 0 and finite, got {self.learning_rate}")
        for name in ("ntp_weight", "max_grad_norm", "weight_decay", "warmup_steps"):
            if not getattr(self, name) >= 0:  # NaN too
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.reference not in ("current", "pretrained"):
            raise ValueError(
                f"reference must be 'current' or 'pretrained', got {self.reference!r}"
            )
        self.rollout_config()  # validates num_generations and the rollout settings

    def rollout_config(self) -> RolloutConfig:
        return RolloutConfig(self.rollout, self.num_generations, self.temperature, self.top_k,
                             self.top_p)


class RolloutBatch(NamedTuple):
    """One step's users, their groups, rewards and pi_old."""

    context: Context  # B users, on the training device
    rollout: Rollout  # codes (B, G, L), items (B, G), rollout log-probs (B, G)
    old_log_probs: Tensor  # (B, G) log pi_old per `reference`
    rewards: GroupRewards  # terms, total, legality, true outcome (on the CPU)
    generator: torch.Generator  # this step's draws (format selection, ...)


# What an online run reports: the loop's result (history, steps, resumed_from_step, ...).
OnlineResult = TrainingResult


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """The generator of one rank's step: a function of (seed, step, rank) only."""
    state = np.random.SeedSequence([seed, step, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device=device).manual_seed(int(state[0]) << 32 | int(state[1]))


def _mean(values: Tensor, mask: Tensor) -> float:
    """Mean over `mask` (NaN when it is empty)."""
    return float(values[mask].double().mean()) if mask.any() else float("nan")


def reward_metrics(rewards: GroupRewards) -> dict[str, float]:
    """`rewards/proxy`, `rewards/<term>`, `charts/true_*` and `charts/legality` of a group."""
    metrics = {"rewards/proxy": _mean(rewards.total, rewards.scorable),
               "charts/legality": float(rewards.legal.float().mean()),
               "charts/true_watch_time": float(rewards.true_watch_time.double().mean()),
               "charts/true_engagement": float(rewards.true_engagement.double().mean())}
    for name, values in rewards.terms.items():
        metrics[f"rewards/{name}"] = _mean(values, ~values.isnan())
    return metrics


class OnlineTrainer(TrainingTask):
    """The online step (users -> group -> rewards -> updates) as a task of the shared loop
    (`trainers.loop`); a method says what it keeps of a rollout and what loss it takes."""

    kind = "online"
    method: str  # the method's name, recorded in checkpoints

    def __init__(
        self,
        policy: OneRecPolicy,
        reward: str | RewardModel,
        resources: Mapping[str, Any],
        catalog: Catalog,
        session_config: SessionConfig,
        config: OnlineConfig,
        ntp_data: ExampleSource | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """`reward` is a spec (`rewards.build`) or a built reward, `resources` what a spec's
        factories need (pscore_model, codec, catalog); `catalog` and `session_config` make the
        simulated users; `ntp_data` the logged exposures of the next-token loss; `metadata` is
        stored in checkpoints as is (e.g. the logs folder)."""
        if policy.config.dropout > 0:
            raise ValueError(
                f"the policy has dropout {policy.config.dropout}; RL needs exact log-probs "
                "(pi_theta / pi_old), build it with dropout=0"
            )
        if policy.codec is None:
            raise ValueError("the policy has no item codes; call policy.set_item_codes first")
        if config.ntp_weight > 0 and ntp_data is None:
            raise ValueError(
                f"ntp_weight is {config.ntp_weight} but no logged exposures were given for the "
                "next-token loss; pass ntp_data (LoggedExamples) or set ntp_weight=0"
            )
        self.policy, self.config, self.ntp_data = policy, config, ntp_data
        self.resources = dict(resources)  # what the rewards and methods may use
        self.scorer = GroupScorer(reward, {"codec": policy.codec, **resources},
                                  config.reward_weights)
        self.reward = self.scorer.spec  # the spec, or a reward object's name (checkpoints)
        self.catalog, self.session_config = catalog, session_config
        self.metadata = dict(metadata or {})
        self.device = torch.device("cpu")
        self.reference: OneRecPolicy | None = None
        self.sampler: BatchSampler | None = None  # the next-token batches of a run
        self.users: SimulatedUsers | None = None  # the simulated users of a run

    @abstractmethod
    def prepare(self, batch: RolloutBatch) -> Any:
        """What the method keeps of a rollout (advantages, a selection, pairs), once per step."""

    @abstractmethod
    def loss(self, batch: RolloutBatch, prepared: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """The method's loss and its charts, once per optimisation iteration."""

    @property
    def label(self) -> str:
        return self.method

    def train(self) -> OnlineResult:
        """Train the policy in place (moved to the training device); resumes from
        `config.output_dir` when it holds a checkpoint."""
        return run_training(self.policy, self.config, self,
                            min_lr_rate=1.0)  # the learning rate is constant after the warm-up

    def start(self, loop: TrainingLoop) -> None:
        config, policy = self.config, self.policy
        self.device = loop.device
        self.sampler = None if self.ntp_data is None else BatchSampler(
            self.ntp_data, policy.item_codes, config.ntp_batch_size,
            torch.Generator().manual_seed(config.seed), loop.rank, loop.world_size)
        if config.reference == "pretrained":
            self.reference = copy.deepcopy(policy).eval().requires_grad_(False)
        self.users = SimulatedUsers(self.catalog, self.session_config, config.users_per_step,
                                    config.seed, loop.rank, loop.world_size)
        loop.cleanup.callback(self.users.close)

    def settings(self) -> dict[str, Any]:
        """What a resumed run must share with the checkpoint."""
        fields = {key: value for key, value in dataclasses.asdict(self.config).items()
                  if key not in RUN_SETTINGS}
        return json.loads(json.dumps({**fields, "method": self.method, "reward": self.reward}))

    def hyperparameters(self) -> Mapping[str, Any]:
        return {**self.settings(), **self.run_metadata()}

    def run_metadata(self) -> dict[str, Any]:
        return {"logs": getattr(self.ntp_data, "folder", None), "method": self.method,
                "reward": self.reward, **self.metadata}

    def trainer_state(self) -> dict[str, Any]:
        return {"sampler": {} if self.sampler is None else self.sampler.state_dict(),
                "reference": None if self.reference is None else self.reference.state_dict()}

    def restore(self, state: dict[str, Any]) -> None:
        if self.sampler is not None:
            self.sampler.load_state_dict(state["sampler"])
        if self.reference is not None:
            self.reference.load_state_dict(state["reference"])

    def progress_text(self, record: Mapping[str, float], window: Mapping[str, float]) -> str:
        return (f"proxy {record['rewards/proxy']:.4f}, true watch "
                f"{record['charts/true_watch_time']:.2f} s")

    def make_rollout(self, context: Context, observation: Mapping[str, np.ndarray],
                     generator: torch.Generator) -> Rollout:
        """This step's G items per user (a subclass may mix in others, `Rollout.legacy`)."""
        return generate_group(self.policy, context, self.config.rollout_config(), generator)

    def step(self, step: int, loop: TrainingLoop) -> Metrics:
        """One rollout and `num_iterations` updates on it (module docstring)."""
        config, policy, device, users = self.config, self.policy, self.device, self.users
        observation = users.observe(step)
        context = Context.from_observation(observation, device)
        generator = step_generator(config.seed, step, loop.rank, device)
        rollout = self.make_rollout(context, observation, generator)
        rewards = self.scorer(observation, rollout.codes, rollout.items,
                              users.expected_feedback(rollout.items))
        old_log_probs = rollout.log_probs
        if self.reference is not None:
            with torch.no_grad():
                old_log_probs = self.reference.log_prob(context, rollout.codes)
        if rollout.legacy is not None:  # the logging policy's samples: pi_old unknown
            old_log_probs = torch.where(rollout.legacy.to(old_log_probs.device),
                                        rollout.log_probs.to(old_log_probs.device), old_log_probs)
        batch = RolloutBatch(context, rollout, old_log_probs.detach(), rewards, generator)
        prepared = self.prepare(batch)
        updates: list[dict[str, float]] = []  # each update's losses and charts
        for _ in range(config.num_iterations):
            method_loss, charts = self.loss(batch, prepared)
            loss = method_loss
            if self.sampler is not None and config.ntp_weight > 0:
                examples = self.sampler.next_batch()
                ntp = policy.ntp_loss(examples.context.to(device),
                                      examples.target_codes.to(device)).loss
                loss = loss + config.ntp_weight * ntp
                charts["losses/ntp"] = ntp.detach()
            update = loop.update(loss)
            updates.append({"losses/total": float(loss.detach()),
                            "charts/grad_norm": float(update.grad_norm),
                            **{name: float(value) for name, value in charts.items()}})
        # Over a step's updates: the mean, the largest of a `*_max` chart.
        return {**reward_metrics(rewards), **reduce_records(updates)}
