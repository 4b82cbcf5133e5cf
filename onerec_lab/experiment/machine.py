"""What a run ran on, in one line: results mean little without it."""

from __future__ import annotations

import os
import platform

import torch

SIMD_LEVELS = ("avx512f", "avx2", "avx")  # widest first: what float kernels vectorise with


def cpu_model() -> str:
    """The CPU's model name and widest vector unit (Linux's /proc/cpuinfo), else what
    `platform` knows. Results that depend on float rounding (a world built from scratch)
    differ between CPU models: the kernels sum in another order."""
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not name:
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    simd = next((level for level in SIMD_LEVELS if level in flags), None)
    name = name or platform.processor() or platform.machine()
    return f"{name}, {simd}" if simd else name


def hardware_description() -> str:
    """The GPU when torch sees one, else the CPU and torch's thread count."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA), torch {torch.__version__}"
    cpu = cpu_model()
    return (
        f"CPU {cpu}, {torch.get_num_threads()} torch threads of {os.cpu_count()} cores, "
        f"torch {torch.__version__}"
    )

