"""The torch device a command runs on, from its ``--device`` option.

Training, eval and embed all take ``--device``; one function resolves it for all of them.
"""

from __future__ import annotations

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
