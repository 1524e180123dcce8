"""Where a training run executes: device, mixed precision, seeds and CPU threads."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

from e2espk.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; a CUDA device becomes the current one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available on this machine")
        if device.index is None:  # plain "cuda": the current device, made explicit
            device = torch.device("cuda", torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        # the run's GPU becomes the current one, so pin-memory threads, the CUDA RNG saved in
        # checkpoints and capability checks all refer to it
        torch.cuda.set_device(device)
    return device


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
