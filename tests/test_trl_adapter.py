"""The TRL-convention adapter: what TRL passes in, what it gets back."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rewards import RewardInput, SemanticIdVocabulary, TRLRewardFunction, build
from tests.test_reward_doubles import single_threaded_torch  # noqa: F401
from tests.test_reward_properties import CODEC, RESOURCES, random_context

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SLATE = 3
VOCABULARY = SemanticIdVocabulary.from_codec(CODEC, offset=2)  # tokens 0, 1: BOS/EOS
CONTEXTS = random_context(np.random.default_rng(0), 4)


def contexts(indices: np.ndarray) -> dict[str, np.ndarray]:
    return {key: value[indices] for key, value in CONTEXTS.items()}


def completion(items: list[int]) -> list[int]:
    return VOCABULARY.tokens(CODEC.encode(torch.tensor([items]))).flatten().tolist()


def test_one_float_per_completion_with_trl_extras_passed_through() -> None:
    reward = build("pscore + 0.5*format", **RESOURCES)
    function = TRLRewardFunction(reward, CODEC, VOCABULARY, SLATE, contexts)
    metrics: dict[str, float] = {}
    completion_ids = [completion([1, 2, 3]), completion([4, 4, 5]) + [1], completion([6, 7])]
    values = function(
        prompts=["u0", "u1", "u2"],
        completions=["a", "b", "c"],
        completion_ids=completion_ids,
        user_index=[0, 1, 3],
        trainer_state=object(),
        log_extra=lambda *_: None,
        log_metric=lambda name, value: metrics.__setitem__(name, value),
    )
    assert len(values) == 3 and all(isinstance(value, float) for value in values)
    codes = VOCABULARY.codes(completion_ids, SLATE)
    direct = reward(RewardInput.from_codes(codes, CODEC, contexts(np.array([0, 1, 3]))))
    torch.testing.assert_close(torch.tensor(values), direct.total)
    # the repeat in completion 1 and the missing third item of completion 2 are illegal
    torch.testing.assert_close(direct.components["format"], torch.tensor([1.0, 2 / 3, 2 / 3]))
    assert set(metrics) == {"rewards/pscore", "rewards/format"}
    assert function.__name__ == "pscore + 0.5*format"


def test_tokens_outside_their_level_make_the_item_illegal() -> None:
    function = TRLRewardFunction(build("format", codec=CODEC), CODEC, VOCABULARY, SLATE)
    good = completion([1, 2, 3])
    level_swapped = good[:2] + [good[3], good[2]] + good[4:]  # item 2's tokens in wrong levels
    values = function(completion_ids=[good, level_swapped, [0, 1]])
    assert values == pytest.approx([1.0, 2 / 3, 0.0])


def test_format_needs_no_context_but_pscore_does() -> None:
    with pytest.raises(ValueError, match="needs the user context; pass contexts="):
        TRLRewardFunction(build("pscore", **RESOURCES), CODEC, VOCABULARY, SLATE)
    function = TRLRewardFunction(build("pscore", **RESOURCES), CODEC, VOCABULARY, SLATE, contexts)
    with pytest.raises(ValueError, match="needs a 'user_index' dataset column"):
        function(completion_ids=[completion([1, 2, 3])])
    assert function(completion_ids=[completion([1, 2, 3])], user_index=[None]) == [None]


def test_the_oracle_is_refused_because_trl_cannot_supply_the_truth() -> None:
    with pytest.raises(ValueError, match="cannot supply"):
        TRLRewardFunction(build("oracle"), CODEC, VOCABULARY, SLATE)


def test_trls_own_reward_loop_gets_our_numbers() -> None:
    """GRPOTrainer._calculate_rewards, the code TRL runs, on a stand-in for the trainer: our
    values arrive unchanged and a None becomes NaN (TRL's "no opinion")."""
    from accelerate import PartialState
    from trl.trainer.grpo_trainer import GRPOTrainer

    PartialState()  # single process, CPU: what TRL's gather and logger expect to find
    reward = build("pscore + 0.5*format", **RESOURCES)
    function = TRLRewardFunction(reward, CODEC, VOCABULARY, SLATE, contexts)
    trainer = SimpleNamespace(
        accelerator=SimpleNamespace(device="cpu", is_main_process=True),
        args=SimpleNamespace(report_to=[]),
        state=SimpleNamespace(global_step=0),
        reward_funcs=[function],
        reward_processing_classes=[None],
        reward_func_names=[function.__name__],
        environments=None,
        _log_completion_extra=lambda column, values: None,
        _log_metric=lambda name, value: None,
    )
    completion_ids = [completion([1, 2, 3]), completion([8, 9, 10])]
    inputs = [{"prompt": "u0", "user_index": 2}, {"prompt": "u1", "user_index": None}]
    rewards = GRPOTrainer._calculate_rewards(
        trainer, inputs, ["u0", "u1"], ["a", "b"], completion_ids
    )
    direct = function(completion_ids=completion_ids[:1], user_index=[2])
    assert rewards.shape == (2, 1)
    assert float(rewards[0, 0]) == pytest.approx(direct[0]) and torch.isnan(rewards[1, 0])
