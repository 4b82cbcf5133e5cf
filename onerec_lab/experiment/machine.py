"""What a run ran on, in one line: results mean little without it."""

from __future__ import annotations

import os
import platform

import torch


def hardware_description() -> str:
    """The GPU when torch sees one, else the CPU and torch's thread count."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    return (
        f"CPU {cpu}, {torch.get_num_threads()} torch threads of {os.cpu_count()} cores, "
        f"torch {torch.__version__}"
    )

