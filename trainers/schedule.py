"""Learning-rate schedule: linear warm-up, then cosine decay to a floor.

The factor multiplies the optimizer's base learning rate at optimizer step `step` (0-based,
the number of steps already taken):

    step < W:      (step + 1) / W                       (the first step already moves)
    W <= step:     r + (1 - r) * (1 + cos(pi * p)) / 2,  p = min(1, (step - W) / (T - W))

with W warm-up steps, T total steps and r the floor ratio (`min_lr_rate`, as in the
`cosine_with_min_lr` schedule of Hugging Face transformers). The factor is a pure function
of the step, so a resumed run only needs the scheduler's step count.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_lr_rate: float) -> float:
    """The learning-rate multiplier after `step` optimizer steps (see the module docstring)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_rate + (1.0 - min_lr_rate) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_schedule(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, min_lr_rate: float = 0.0
) -> LambdaLR:
    """A `LambdaLR` with linear warm-up over `warmup_steps` and cosine decay until
    `total_steps`, ending at `min_lr_rate` times the base learning rate."""
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(
            f"warmup_steps must be >= 0 and total_steps >= 1, got {warmup_steps} and "
            f"{total_steps}"
        )
    if not 0.0 <= min_lr_rate <= 1.0:
        raise ValueError(f"min_lr_rate must be in [0, 1] (a share of the peak), got {min_lr_rate}")
    return LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, total_steps, min_lr_rate)
    )
