"""TRL 1.16's loss types (`trainers.trl_losses`) equal TRL's, computed by TRL's own code.

`GRPOTrainer._compute_loss` runs on a stand-in for the trainer whose per-token
log-probabilities are ours: each item is a completion of L code tokens, a masked-out item a
completion whose mask is all zero. Same log-probabilities, advantages and settings in, same
loss and gradients out, for every loss type, importance-sampling level, asymmetric clip and
TRL's two-sided delta.
"""

from __future__ import annotations

import os
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from trainers.trl_losses import TRL_LOSS_TYPES, TRLLossSettings, trl_policy_loss

os.environ.setdefault("HF_HUB_OFFLINE", "1")

USERS, GROUP, LEVELS = 3, 4, 3


def _trl_loss(settings: TRLLossSettings, log_probs: torch.Tensor, old_log_probs: torch.Tensor,
              advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """TRL's loss on (B G, L) completions, through `GRPOTrainer._compute_loss`."""
    from trl.trainer.grpo_trainer import GRPOTrainer

    rows = advantages.numel()
    completion_mask = mask.reshape(rows, 1).expand(rows, LEVELS).long()
    upper = settings.epsilon if settings.epsilon_high is None else settings.epsilon_high
    trainer = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *args, **kwargs: (
            log_probs.reshape(rows, LEVELS), torch.zeros(rows, LEVELS), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level=settings.importance_sampling_level, beta=0.0,
        loss_type=settings.loss_type, epsilon_low=settings.epsilon, epsilon_high=upper,
        args=SimpleNamespace(delta=settings.delta, steps_per_generation=1,
                             sapo_temperature_pos=settings.sapo_temperature_pos,
                             sapo_temperature_neg=settings.sapo_temperature_neg),
        use_vllm=False, vllm_importance_sampling_correction=False,
        model=SimpleNamespace(training=True), current_gradient_accumulation_steps=1,
        max_completion_length=LEVELS, _entropy_bonus_enabled=False, aux_loss_enabled=False,
        _metrics={"train": defaultdict(list)},
        accelerator=SimpleNamespace(reduce=lambda tensor, reduction: tensor,
                                    gather=lambda tensor: tensor, num_processes=1),
    )
    inputs = {
        "prompt_ids": torch.zeros(rows, 2, dtype=torch.long),
        "prompt_mask": torch.ones(rows, 2, dtype=torch.long),
        "completion_ids": torch.zeros(rows, LEVELS, dtype=torch.long),
        "completion_mask": completion_mask,
        "advantages": advantages.reshape(rows),
        "old_per_token_logps": old_log_probs.reshape(rows, LEVELS),
        "num_items_in_batch": completion_mask.sum(),
    }
    return GRPOTrainer._compute_loss(trainer, None, inputs)


CASES = [
    {"epsilon_high": None, "delta": None},
    {"epsilon_high": 0.28, "delta": None},  # DAPO's clip-higher
    {"epsilon_high": 0.28, "delta": 1.3},  # TRL's two-sided cap
]


@pytest.mark.parametrize("loss_type", TRL_LOSS_TYPES)
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_each_loss_type_equals_trls_in_value_and_gradient(loss_type: str, level: str,
                                                         case: int) -> None:
    options = dict(CASES[case])
    if loss_type == "cispo" and options["epsilon_high"] is not None:
        options["epsilon_high"] = 1.5  # CISPO's eps_max caps the ratio itself
    settings = TRLLossSettings(loss_type=loss_type, importance_sampling_level=level, **options)
    generator = torch.Generator().manual_seed(case)
    old = -2 * torch.rand(USERS, GROUP, LEVELS, generator=generator)
    # per-code ratios between 0.45 and 2.2: inside and outside every clip bound
    start = old + torch.empty(USERS, GROUP, LEVELS).uniform_(-0.8, 0.8, generator=generator)
    advantages = torch.randn(USERS, GROUP, generator=generator)
    mask = torch.rand(USERS, GROUP, generator=generator) > 0.2
    ours_log_probs = start.clone().requires_grad_(True)
    trl_log_probs = start.clone().requires_grad_(True)
    ours = trl_policy_loss(ours_log_probs, old, advantages, settings, mask).loss
    theirs = _trl_loss(settings, trl_log_probs, old, advantages, mask)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours_log_probs.grad, trl_log_probs.grad)
    assert ours_log_probs.grad.abs().sum() > 0
    assert (ours_log_probs.grad[~mask] == 0).all()


def test_a_sequence_ratio_is_the_geometric_mean_of_its_codes() -> None:
    """GSPO by hand: code ratios 2, 0.5, 1 give the item one ratio, (2 x 0.5 x 1)^(1/3) = 1;
    with A = 1 and no clip active, dapo's loss is -1 (mean over the 3 counted codes)."""
    old = torch.zeros(1, 1, 3)
    log_probs = torch.log(torch.tensor([[[2.0, 0.5, 1.0]]]))
    output = trl_policy_loss(log_probs, old, torch.ones(1, 1),
                             TRLLossSettings(importance_sampling_level="sequence"))
    assert output.loss.item() == pytest.approx(-1.0)
    assert output.ratio.item() == pytest.approx(1.0)


def test_bad_settings_and_shapes_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="loss_type must be one of"):
        TRLLossSettings(loss_type="grpo")
    with pytest.raises(ValueError, match="importance_sampling_level"):
        TRLLossSettings(importance_sampling_level="item")
    with pytest.raises(ValueError, match="delta"):
        TRLLossSettings(delta=0.5)
    with pytest.raises(ValueError, match=r"\(B, G, L\)"):
        trl_policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3),
                        TRLLossSettings())
