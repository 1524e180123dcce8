"""Self-describing checkpoints, written atomically.

A checkpoint holds everything to resume training (model, verifier, head, optimizer, schedule,
AMP scaler, RNG states, epoch, step, best metric, history) and everything to rebuild the
embedding model on its own (model config, input layout, verifier config), so eval and embed
need nothing but the file.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2espk.errors import InputDataError
from e2espk.fileio import atomic_path

CHECKPOINT_FORMAT = "e2espk-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """torch.save ``payload`` (plus format tags) to a temp file, then rename it into place."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; clear errors for missing, foreign or newer files."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(path, "checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        raise InputDataError(
            path, f"cannot read checkpoint ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputDataError(path, "not an e2espk checkpoint")
    if int(payload.get("version", 0)) > CHECKPOINT_VERSION:
        raise InputDataError(
            path,
            f"checkpoint version {payload['version']} is newer than this e2espk reads ({CHECKPOINT_VERSION})",
        )
    return payload


def rng_state() -> dict[str, Any]:
    """Every RNG a training step touches, so a resumed run continues the same random streams."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
