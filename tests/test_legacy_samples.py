"""Legacy exposures (OneRec-V2): the logging policy's items mixed into each group, with
pi_old unknown and taken as sg(pi_theta), for GBPO, ECPO and GRPO."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from policies.encoder import Context
from tests.test_align_trainers import FAST, TOY, make_trainer
from tests.test_pretrain import SESSIONS, small_policy
from trainers.grpo import Advantages, GRPOConfig, GRPOTrainer, TokenAdvantages
from trainers.online import RolloutBatch
from trainers.pretrain_data import LoggedExamples
from trainers.rollout import Rollout, mix_legacy


class FixedLegacy:
    """A stand-in logging policy: the same items, best first, for every user."""

    slate_size = 4

    def __init__(self, items: list[int]) -> None:
        self.items = items
        self.calls = 0

    def recommend(self, observation, k, rng):
        self.calls += 1
        users = len(next(iter(observation.values())))
        return np.tile(np.array(self.items[:k]), (users, 1))

    def act(self, observation, rng):
        return self.recommend(observation, self.slate_size, rng)


def test_mix_legacy_replaces_the_last_samples_and_marks_them(logs, codec) -> None:
    """Group of 4, two legacy items (7, BLANK): slot 3 becomes item 7 with its code and the
    policy's current log-probability; the BLANK keeps the policy's sample in slot 4."""
    policy = small_policy(codec)
    context = Context.from_observation(logs.contexts(np.arange(2)))
    codes = codec.encode(torch.tensor([[1, 2, 3, 4], [5, 6, 8, 9]]))
    rollout = Rollout(codes, torch.tensor([[1, 2, 3, 4], [5, 6, 8, 9]]), torch.zeros(2, 4))
    mixed = mix_legacy(policy, context, rollout, torch.tensor([[7, -1], [7, -1]]))
    assert mixed.items.tolist() == [[1, 2, 7, 4], [5, 6, 7, 9]]
    assert mixed.legacy.tolist() == [[False, False, True, False]] * 2
    torch.testing.assert_close(mixed.codes[:, 2], codec.encode(torch.tensor([7, 7])))
    with torch.no_grad():
        now = policy.log_prob(context, mixed.codes)
    torch.testing.assert_close(mixed.log_probs[:, 2], now[:, 2])
    assert (mixed.log_probs[:, [0, 1, 3]] == 0).all()  # the policy's own, untouched


@pytest.mark.parametrize(("loss_type", "share"), [("gbpo", 0.25), ("ecpo", 0.25),
                                                  ("grpo", 0.25), ("gbpo", 1.0)])
def test_legacy_samples_enter_the_group_at_ratio_one(loss_type: str, share: float, logs,
                                                     codec) -> None:
    """A quarter of each group (or all of it: V2's feedback RL without on-policy samples)
    from the logging policy: it is asked once per step and the run trains. (At a first update
    the frozen reference equals the policy, so the ratio of 1 checked here holds for every
    sample; `test_a_legacy_samples_pi_old_is_the_policy_itself` is the test of the rule.)"""
    legacy = FixedLegacy([3, 5, 11, 13, 17, 19, 23, 29])
    config = GRPOConfig(loss_type=loss_type, legacy_share=share, max_steps=2,
                        reference="pretrained", **FAST)
    trainer = GRPOTrainer(small_policy(codec), TOY, {"catalog": logs.catalog,
                                                     "legacy_policy": legacy},
                          logs.catalog, SESSIONS, config, LoggedExamples(logs),
                          metadata={"logs": "in memory"})
    history = trainer.train().history
    assert legacy.calls == 2 and trainer.legacy_count == round(share * 8)
    assert history[0]["charts/ratio_max"] == pytest.approx(1.0, abs=1e-5)


def test_legacy_share_needs_a_logging_policy(logs, codec) -> None:
    config = GRPOConfig(legacy_share=0.5, **FAST)
    with pytest.raises(ValueError, match="legacy_policy"):
        make_trainer(GRPOTrainer, config, logs, codec, reward=TOY)
    with pytest.raises(ValueError, match="legacy_share must be in"):
        dataclasses.replace(config, legacy_share=1.5)


@pytest.mark.parametrize("loss_type", ["gbpo", "grpo", "dapo"])
def test_a_legacy_samples_pi_old_is_the_policy_itself(loss_type: str, logs, codec) -> None:
    """Whatever pi_old the batch carries (here absurdly small: log -50), a legacy sample's
    ratio is exactly 1 (sg(pi_theta)); the same samples not marked legacy get e^50 under
    GRPO and DAPO (V2's motivation for GBPO, whose pi'_old keeps it at 1 either way)."""
    config = GRPOConfig(loss_type=loss_type, legacy_share=0.5, **FAST)
    trainer = GRPOTrainer(small_policy(codec), TOY, {"catalog": logs.catalog,
                                                     "legacy_policy": FixedLegacy([1, 2])},
                          logs.catalog, SESSIONS, config, LoggedExamples(logs),
                          metadata={"logs": "in memory"})
    context = Context.from_observation(logs.contexts(np.arange(2)))
    items = torch.tensor([[1, 2, 3, 4], [5, 6, 8, 9]])
    codes = codec.encode(items)
    advantages = Advantages(torch.tensor([[1.0, -1.0, 0.5, -0.5]] * 2),
                            torch.ones(2, 4, dtype=torch.bool))
    prepared = (advantages if loss_type != "dapo" else
                TokenAdvantages(*advantages, torch.full((2, 4, 3), -50.0)))
    ratios = {}
    for legacy in (torch.ones(2, 4, dtype=torch.bool), None):
        rollout = Rollout(codes, items, torch.zeros(2, 4), legacy)
        batch = RolloutBatch(context, rollout, torch.full((2, 4), -50.0), None,
                             torch.Generator())
        ratios[legacy is None] = trainer.loss(batch, prepared)[1]["charts/ratio_max"].item()
    assert ratios[False] == pytest.approx(1.0, abs=1e-5)
    if loss_type == "gbpo":  # GBPO needs no rescue: pi'_old >= sg(pi) for A >= 0 already
        assert ratios[True] == pytest.approx(1.0, abs=1e-5)
    else:
        assert ratios[True] > 1e6


def test_the_factor_on_grad_pi_of_a_legacy_negative(logs, codec) -> None:
    """V2's argument, charted: at ratio 1 GRPO pushes a negative sample down with |A| grad pi
    / pi (explodes as pi -> 0), GBPO with at most |A| grad pi / (1 - pi) (BCE's);
    `charts/negative_pi_weight_max` is the largest such factor, checked against the item
    probabilities of the policy itself."""
    context = Context.from_observation(logs.contexts(np.arange(2)))
    items = torch.tensor([[1, 2, 3, 4], [5, 6, 8, 9]])
    codes = codec.encode(items)
    advantages = torch.tensor([[1.0, -1.0, 0.5, -0.5], [-2.0, 1.0, 1.0, 0.0]])
    prepared = Advantages(advantages, torch.ones(2, 4, dtype=torch.bool))
    negative = advantages < 0
    factors = {}
    for loss_type in ("grpo", "gbpo"):
        config = GRPOConfig(loss_type=loss_type, legacy_share=1.0, **FAST)
        policy = small_policy(codec)
        trainer = GRPOTrainer(policy, TOY, {"catalog": logs.catalog,
                                            "legacy_policy": FixedLegacy([1, 2])},
                              logs.catalog, SESSIONS, config, LoggedExamples(logs),
                              metadata={"logs": "in memory"})
        rollout = Rollout(codes, items, torch.zeros(2, 4), torch.ones(2, 4, dtype=torch.bool))
        batch = RolloutBatch(context, rollout, torch.zeros(2, 4), None, torch.Generator())
        charts = trainer.loss(batch, prepared)[1]
        with torch.no_grad():
            pi = policy.log_prob(context, codes).double().exp()  # (2, 4)
        factors[loss_type] = float(charts["charts/negative_pi_weight_max"])
        bound = advantages.abs().double() / (pi if loss_type == "grpo" else 1 - pi)
        assert factors[loss_type] == pytest.approx(float(bound[negative].max()), rel=1e-4)
    assert factors["grpo"] > 100 * factors["gbpo"]  # an untrained policy: every pi is small
