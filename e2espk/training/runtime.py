"""Where a training run executes: mixed precision, seeds and CPU threads (the device:
``e2espk.device``)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

from e2espk.errors import ConfigError


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype: bf16 on CUDA when supported ('auto'), never on CPU."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise ConfigError(f"--amp {amp} needs a CUDA device; use --amp off (or auto) on {device}")
    if amp == "fp16":
        return torch.float16
    if amp == "auto" and torch.cuda.get_device_capability(device)[0] < 8:
        return torch.float16  # bf16 is only emulated (slow) before Ampere
    return torch.bfloat16


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` CPU threads, then restore the caller's setting."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
