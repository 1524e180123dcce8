"""Self-describing checkpoints, written atomically.

A checkpoint holds everything to resume training (model, verifier, head, optimizer, schedule,
AMP scaler, RNG states, epoch, step, best metric, history) and everything to rebuild the
embedding model on its own (model config, input layout, verifier config), so eval and embed
need nothing but the file. Reading and writing the file, and rebuilding the system from it,
live in the inference layer (``e2espk.inference``); this module adds what only training needs.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from e2espk.inference.checkpoint_file import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    load_checkpoint,
    save_checkpoint,
)
from e2espk.inference.system import EmbeddingSystem, load_embedding_system

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "EmbeddingSystem",
    "load_checkpoint",
    "load_embedding_system",
    "restore_rng_state",
    "rng_state",
    "save_checkpoint",
]


def rng_state() -> dict[str, Any]:
    """Every RNG a training step touches, so a resumed run continues the same random streams."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()  # the current (training) device's generator
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if isinstance(cuda, torch.Tensor) and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda.cpu())  # older checkpoints stored a list per GPU: skipped
