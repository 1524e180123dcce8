"""Checkpoint files: written atomically, read with clear errors, tagged with format and version.

Training writes them (``e2espk.training``); eval, embed and ``--init-from`` read them. Both sides
meet here, below training, so that using a trained system never imports training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
