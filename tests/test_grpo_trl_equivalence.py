"""Our `grpo` and `dr_grpo` losses equal TRL's, computed by TRL's own code.

`GRPOTrainer._compute_loss` runs on a stand-in for the trainer whose per-token
log-probabilities are ours: each item is one "token" whose log-probability is
log pi(item | user), the sum of its codes' (an item is the unit our ratio is taken over).
Same log-probabilities, advantages and settings in, same loss and gradients out.
"""

from __future__ import annotations

import os
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from trainers.losses import POLICY_LOSSES

os.environ.setdefault("HF_HUB_OFFLINE", "1")

USERS, GROUP = 3, 4


def _trl_loss(loss_type: str, log_probs: torch.Tensor, old_log_probs: torch.Tensor,
              advantages: torch.Tensor, epsilon: float, epsilon_high: float) -> torch.Tensor:
    """TRL's GRPO loss on (B G, 1) one-token completions, through `_compute_loss`."""
    from trl.trainer.grpo_trainer import GRPOTrainer

    rows = log_probs.numel()
    trainer = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *args, **kwargs: (
            log_probs.reshape(rows, 1), torch.zeros(rows, 1), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level="token", beta=0.0, loss_type=loss_type,
        epsilon_low=epsilon, epsilon_high=epsilon_high, args=SimpleNamespace(delta=None),
        use_vllm=False, vllm_importance_sampling_correction=False,
        model=SimpleNamespace(training=True), current_gradient_accumulation_steps=1,
        max_completion_length=1, _entropy_bonus_enabled=False, aux_loss_enabled=False,
        _metrics={"train": defaultdict(list)},
        accelerator=SimpleNamespace(reduce=lambda tensor, reduction: tensor,
                                    gather=lambda tensor: tensor),
    )
    inputs = {
        "prompt_ids": torch.zeros(rows, 2, dtype=torch.long),
        "prompt_mask": torch.ones(rows, 2, dtype=torch.long),
        "completion_ids": torch.zeros(rows, 1, dtype=torch.long),
        "completion_mask": torch.ones(rows, 1, dtype=torch.long),
        "advantages": advantages.reshape(rows),
        "old_per_token_logps": old_log_probs.reshape(rows, 1),
    }
    return GRPOTrainer._compute_loss(trainer, None, inputs)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo"])
@pytest.mark.parametrize("epsilon_high", [0.2, 0.28])
def test_our_loss_equals_trls_in_value_and_gradient(loss_type: str, epsilon_high: float) -> None:
    generator = torch.Generator().manual_seed(0)
    old_log_probs = -3 * torch.rand(USERS, GROUP, generator=generator)
    # ratios between 0.5 and 2: inside and outside both clip bounds
    start = old_log_probs + torch.empty(USERS, GROUP).uniform_(-0.7, 0.7, generator=generator)
    advantages = torch.randn(USERS, GROUP, generator=generator)
    ours_log_probs = start.clone().requires_grad_(True)
    trl_log_probs = start.clone().requires_grad_(True)
    ours = POLICY_LOSSES[loss_type](ours_log_probs, old_log_probs, advantages, epsilon=0.2,
                                    epsilon_high=epsilon_high).loss
    theirs = _trl_loss(loss_type, trl_log_probs, old_log_probs, advantages, 0.2, epsilon_high)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours_log_probs.grad, trl_log_probs.grad)
    assert ours_log_probs.grad.abs().sum() > 0
