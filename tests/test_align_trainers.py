"""The online trainers (GRPO, ECPO, Dr. GRPO, RSFT, DPO) on a toy problem: they learn, they
repeat, they resume; the format rule; rewards that break are clear errors."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.logs import LoggedSessions
from policies.codec import SemanticIdCodec
from policies.encoder import Context
from policies.onerec import OneRecPolicy
from rewards import register
from tests.test_checkpoint import as_version_1
from tests.test_pretrain import SESSIONS, small_policy
from trainers.checkpoint import read_checkpoint, training_metadata
from trainers.dpo import DPOConfig, DPOTrainer, preference_pairs
from trainers.group_rewards import GroupRewards
from trainers.grpo import GRPOConfig, GRPOTrainer, grpo_advantages
from trainers.online import OnlineConfig, OnlineTrainer, RolloutBatch
from trainers.pretrain import CHECKPOINT_FILE, load_policy
from trainers.pretrain_data import LoggedExamples
from trainers.rollout import SimulatedUsers
from trainers.rsft import (
    RSFTConfig,
    RSFTTrainer,
    RWSFTConfig,
    RWSFTTrainer,
    rsft_examples,
    top_sessions,
)

LOW_CODES = 4  # the toy reward: 1 for an item whose first code is below this (half of 8)
TOY = "toy_low_first_code"
FAST = {"users_per_step": 4, "num_generations": 8, "learning_rate": 3e-3, "ntp_weight": 0.0,
        "progress": False}


@register(TOY)
def toy_reward(codec: SemanticIdCodec):
    """1.0 for an item whose first code is low, 0 otherwise: learnable in a few steps."""
    low = torch.as_tensor(codec.item_codes[:, 0] < LOW_CODES)

    def reward(batch):
        return torch.where(batch.items >= 0, low[batch.items.clamp(min=0)].float(), 0.0).mean(1)

    return reward


@register("toy_nan")
def nan_reward():
    return lambda batch: torch.full((batch.items.shape[0],), float("nan"))


def make_trainer(kind: type[OnlineTrainer], config: OnlineConfig, logs: LoggedSessions,
                 codec: SemanticIdCodec, reward: str = TOY) -> OnlineTrainer:
    return kind(small_policy(codec), reward, {"catalog": logs.catalog}, logs.catalog, SESSIONS,
                config, LoggedExamples(logs), metadata={"logs": "in memory"})


def low_code_mass(policy: OneRecPolicy, logs: LoggedSessions) -> float:
    """The policy's probability of a low first code, averaged over fixed logged users: the
    expected toy reward of a sampled item."""
    context = Context.from_observation(logs.contexts(np.arange(0, 40, 5)))
    with torch.no_grad():
        logits = policy(context, torch.zeros(context.batch_size, 3, dtype=torch.long))
    return float(logits[:, 0].softmax(-1)[:, :LOW_CODES].sum(-1).mean())


METHODS = [
    (GRPOTrainer, GRPOConfig(loss_type="ecpo", **FAST)),
    (GRPOTrainer, GRPOConfig(loss_type="grpo", **FAST)),
    (GRPOTrainer, GRPOConfig(loss_type="dr_grpo", **FAST)),
    (GRPOTrainer, GRPOConfig(loss_type="gbpo", **FAST)),
    (GRPOTrainer, GRPOConfig(loss_type="ecpo", multi_objective_aggregation="normalize_then_sum",
                             **FAST)),
    (GRPOTrainer, GRPOConfig(loss_type="dapo", **FAST)),
    (GRPOTrainer, GRPOConfig(loss_type="cispo", importance_sampling_level="sequence",
                             epsilon_high=5.0, **FAST)),
    (RSFTTrainer, RSFTConfig(**FAST)),
    (RWSFTTrainer, RWSFTConfig(**FAST)),
    (DPOTrainer, DPOConfig(beta=1.0, **FAST)),
]


@pytest.mark.heavy
@pytest.mark.parametrize(("kind", "config"), METHODS,
                         ids=[getattr(c, "loss_type", k.method) for k, c in METHODS])
def test_a_few_steps_move_the_parameters_and_raise_the_reward(
    kind: type[OnlineTrainer], config: OnlineConfig, logs: LoggedSessions,
    codec: SemanticIdCodec
) -> None:
    trainer = make_trainer(kind, dataclasses.replace(config, max_steps=6), logs, codec)
    before_state = {key: value.clone() for key, value in trainer.policy.state_dict().items()}
    before = low_code_mass(trainer.policy, logs)
    result = trainer.train()
    after = low_code_mass(trainer.policy, logs)
    assert result.steps == 6 and len(result.history) == 6
    assert any(not torch.equal(value, before_state[key])
               for key, value in trainer.policy.state_dict().items())
    assert after > before + 0.05, (before, after)


def test_same_seed_same_run_other_seed_other_run(logs: LoggedSessions,
                                                 codec: SemanticIdCodec) -> None:
    config = GRPOConfig(max_steps=2, rollout="sampling", format_selection_k=2,
                        **{**FAST, "ntp_weight": 0.5})
    runs = [make_trainer(GRPOTrainer, dataclasses.replace(config, seed=seed), logs, codec,
                         reward=f"{TOY} + 0.5*format") for seed in (0, 0, 1)]
    histories = [trainer.train().history for trainer in runs]
    assert histories[0] == histories[1] and histories[0] != histories[2]
    first, second = runs[0].policy.state_dict(), runs[1].policy.state_dict()
    assert all(torch.equal(value, second[key]) for key, value in first.items())


def test_negative_advantage_charts_bound_ecpo_and_track_grpo(logs: LoggedSessions,
                                                             codec: SemanticIdCodec) -> None:
    """With several updates per rollout at a large lr, ratios leave 1. ECPO's factor on a
    negative-advantage sample stays within (1 + eps + delta) max |A|; GRPO's follows the
    ratio past that bound (same seed, same rollouts). The negative part's gradient norm is
    charted when asked for: positive exactly where something is pushed down."""
    config = GRPOConfig(max_steps=2, num_iterations=4, max_grad_norm=0.0,
                        log_negative_gradient=True, **{**FAST, "learning_rate": 3e-2})
    bound = (1 + config.epsilon + config.delta) * math.sqrt(config.num_generations - 1)
    largest = {}
    for loss_type in ("ecpo", "grpo"):
        trainer = make_trainer(GRPOTrainer, dataclasses.replace(config, loss_type=loss_type),
                               logs, codec)
        history = trainer.train().history
        for step in history:  # |A| <= sqrt(G - 1) for a group normalised by its std
            assert (step["charts/negative_grad_norm"] > 0) == (
                step["charts/negative_weight_max"] > 0)
        largest[loss_type] = max(step["charts/negative_weight_max"] for step in history)
    assert 0 < largest["ecpo"] <= bound + 1e-5
    assert largest["grpo"] > bound, largest


@pytest.mark.parametrize("loss_type", ["dapo", "sapo"])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_a_trl_loss_type_starts_on_policy_at_ratio_one(loss_type: str, level: str,
                                                      logs: LoggedSessions,
                                                      codec: SemanticIdCodec) -> None:
    """pi_old per code is the policy before the update: at the first update every ratio is
    1, so the loss is -mean(A) x (sapo: sigmoid(0) 4 / tau = 2 / tau, one tau for both
    signs here), zero for advantages centred in each group, and the clip is inactive."""
    config = GRPOConfig(loss_type=loss_type, importance_sampling_level=level, max_steps=1,
                        sapo_temperature_neg=1.0, **FAST)
    step = make_trainer(GRPOTrainer, config, logs, codec).train().history[0]
    assert abs(step["losses/policy"]) < 1e-5 and step["charts/clip_fraction"] == 0.0
    assert step["charts/ratio_max"] == pytest.approx(1.0, abs=1e-5)


class Interrupted(Exception):
    """Stands in for a kill: raised from inside the training loop."""


class InterruptedGRPO(GRPOTrainer):
    """Dies while preparing step `die_at`."""

    die_at = 4

    def prepare(self, batch: RolloutBatch):
        if len(self.prepared_steps) + 1 == self.die_at:
            raise Interrupted
        self.prepared_steps.append(True)
        return super().prepare(batch)


@pytest.mark.heavy
@pytest.mark.parametrize("version", [2, 1])
def test_a_run_killed_mid_way_resumes_from_its_checkpoint(
    logs: LoggedSessions, codec: SemanticIdCodec, tmp_path: Path, version: int
) -> None:
    config = GRPOConfig(max_steps=5, save_steps=2, reference="pretrained", num_iterations=2,
                        **{**FAST, "ntp_weight": 0.5})
    whole = make_trainer(GRPOTrainer, dataclasses.replace(config, output_dir=str(tmp_path / "a")),
                         logs, codec)
    uninterrupted = whole.train()
    output_dir = str(tmp_path / "b")
    dying = make_trainer(InterruptedGRPO, dataclasses.replace(config, output_dir=output_dir),
                         logs, codec)
    dying.prepared_steps = []
    with pytest.raises(Interrupted):  # killed in step 4: the checkpoint holds step 2
        dying.train()
    path = Path(output_dir) / CHECKPOINT_FILE
    if version == 1:  # as the code before the shared loop wrote it
        as_version_1(path)
        assert read_checkpoint(path).extra["logs"] == "in memory"  # metadata at the top level
    resumed_trainer = make_trainer(GRPOTrainer, dataclasses.replace(config, output_dir=output_dir),
                                   logs, codec)  # a fresh process
    resumed = resumed_trainer.train()
    assert resumed.resumed_from_step == 2 and resumed.steps == 5
    assert resumed.history == uninterrupted.history
    expected = whole.policy.state_dict()
    assert all(torch.equal(value, expected[key])
               for key, value in resumed_trainer.policy.state_dict().items())
    # the checkpoint is a policy checkpoint too, and records what it was told to
    loaded = load_policy(path)
    assert all(torch.equal(value, expected[key]) for key, value in loaded.state_dict().items())
    assert training_metadata(path) == {"logs": "in memory", "method": "ecpo", "reward": TOY}


def test_resuming_with_other_settings_is_a_clear_error(
    logs: LoggedSessions, codec: SemanticIdCodec, tmp_path: Path
) -> None:
    config = GRPOConfig(max_steps=1, output_dir=str(tmp_path), **FAST)
    make_trainer(GRPOTrainer, config, logs, codec).train()
    other = dataclasses.replace(config, max_steps=2, epsilon=0.3)
    with pytest.raises(ValueError, match="epsilon"):
        make_trainer(GRPOTrainer, other, logs, codec).train()


def test_tensorboard_gets_the_namespaced_scalars(
    logs: LoggedSessions, codec: SemanticIdCodec, tmp_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = GRPOConfig(max_steps=2, logging_steps=2, output_dir=str(tmp_path),
                        **{**FAST, "ntp_weight": 0.5})
    make_trainer(GRPOTrainer, config, logs, codec, reward=f"{TOY} + format").train()
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"losses/policy", "losses/ntp", "rewards/proxy", f"rewards/{TOY}", "rewards/format",
            "charts/true_watch_time", "charts/true_engagement", "charts/legality",
            "charts/clip_fraction", "charts/grad_norm"} <= tags
    assert [event.step for event in events.Scalars("rewards/proxy")] == [2]
    assert any("hyperparameters" in tag for tag in events.Tags()["tensors"])


def _group(total: list[list[float]], legal: list[list[bool]], fmt: float | None) -> RolloutBatch:
    """A RolloutBatch holding only rewards (what advantages read)."""
    legal_tensor = torch.tensor(legal)
    totals = torch.tensor(total)
    terms = {"pscore": torch.where(legal_tensor, totals, torch.nan)}
    if fmt is not None:
        terms["format"] = legal_tensor.float()
        totals = torch.where(legal_tensor, totals + fmt, 0.0)
    nothing = torch.zeros_like(totals)
    rewards = GroupRewards(totals, legal_tensor if fmt is None else torch.ones_like(legal_tensor),
                           terms, legal_tensor, nothing, nothing)
    return RolloutBatch(None, None, None, rewards, torch.Generator().manual_seed(0))


def test_format_selection_never_gives_an_illegal_sample_a_negative_advantage() -> None:
    legal = [[True, False, True, False, True, True]] * 64
    total = [[0.2, 0.0, 0.5, 0.0, 0.1, 0.3]] * 64
    config = GRPOConfig(num_generations=6, format_selection_k=3)
    advantages, mask = grpo_advantages(_group(total, legal, fmt=1.0), config, format_weight=1.0)
    illegal = ~torch.tensor(legal)
    assert (advantages[illegal] == 0).all() and not mask[illegal].any()
    # legal samples: the P-score's group advantage, plus 1 where picked (some are, some not)
    proxy = torch.tensor([0.2, 0.5, 0.1, 0.3])
    base = (proxy - proxy.mean()) / (proxy.std() + 1e-4)
    extra = advantages[~illegal].view(64, 4) - base
    assert ((extra.abs() < 1e-5) | ((extra - 1).abs() < 1e-5)).all() and (extra > 0.5).any()
    # as a plain reward (K = 0) illegal samples are scored 0 and pushed down instead
    plain, plain_mask = grpo_advantages(_group(total, legal, fmt=1.0),
                                        GRPOConfig(num_generations=6), format_weight=1.0)
    assert plain_mask.all() and (plain[illegal] < 0).all()
    # without a format term an illegal sample is unscorable: left out, neither way pushed
    alone, alone_mask = grpo_advantages(_group(total, legal, fmt=None),
                                        GRPOConfig(num_generations=6), format_weight=0.0)
    assert (alone[illegal] == 0).all() and not alone_mask[illegal].any()


def test_dpo_pairs_are_best_and_worst_of_groups_that_prefer() -> None:
    rewards = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.3, 0.3], [0.2, 0.0, 0.7]])
    scorable = torch.tensor([[True, True, True], [True, True, True], [True, False, True]])
    pairs = preference_pairs(rewards, scorable)
    assert pairs.users.tolist() == [0, 2]
    assert pairs.chosen.tolist() == [1, 2] and pairs.rejected.tolist() == [0, 0]


def test_logged_rsft_keeps_the_top_sessions_by_play_duration(logs: LoggedSessions) -> None:
    duration = np.bincount(logs.columns["session"], weights=logs.columns["true_watch_time"])
    kept = top_sessions(logs, 0.5)
    assert kept.size == 20 and duration[kept].min() >= np.delete(duration, kept).max()
    examples = rsft_examples(logs, 0.5)
    assert set(np.unique(logs.columns["session"][examples.rows])) <= set(kept)
    assert 0 < examples.num_examples < LoggedExamples(logs).num_examples


def test_bad_settings_and_broken_rewards_are_clear_errors(logs: LoggedSessions,
                                                          codec: SemanticIdCodec) -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        make_trainer(GRPOTrainer, GRPOConfig(max_steps=1, **FAST), logs, codec,
                     reward="toy_nan").train()
    with pytest.raises(ValueError, match="needs a format term"):
        make_trainer(GRPOTrainer, GRPOConfig(format_selection_k=2, **FAST), logs, codec)
    with pytest.raises(ValueError, match="no logged exposures"):
        GRPOTrainer(small_policy(codec), TOY, {}, logs.catalog, SESSIONS,
                    GRPOConfig(**{**FAST, "ntp_weight": 1.0}))
    with pytest.raises(ValueError, match="dropout"):
        GRPOTrainer(small_policy(codec, dropout=0.1), TOY, {}, logs.catalog, SESSIONS,
                    GRPOConfig(**FAST))
    with pytest.raises(ValueError, match="one weight per term"):
        make_trainer(GRPOTrainer, GRPOConfig(reward_weights=(1.0,), **FAST), logs, codec,
                     reward=f"{TOY} + format")
    with pytest.raises(ValueError, match="reference must be"):
        GRPOConfig(reference="frozen")


def test_users_are_a_function_of_seed_step_and_rank(logs: LoggedSessions) -> None:
    single = SimulatedUsers(logs.catalog, SESSIONS, users_per_step=4, seed=3)
    ranks = [SimulatedUsers(logs.catalog, SESSIONS, 2, seed=3, rank=rank, world_size=2)
             for rank in range(2)]
    whole = single.observe(2)
    shards = [users.observe(2) for users in ranks]
    for key in whole:
        assert np.array_equal(whole[key], np.concatenate([shard[key] for shard in shards]))
    assert not np.array_equal(single.observe(1)["static"], whole["static"])
