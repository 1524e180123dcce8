"""Checkpoint files: written atomically, read with clear errors, tagged with format and version.

Training writes them (``e2espk.training``); eval, embed, ``--resume`` and ``--init-from`` read
them. Both sides meet here, below training, so that using a trained system never imports
training. Every read goes through ``upgrade_checkpoint``, so a checkpoint written by an earlier
version is seen in the current format.

Versions: 1 (to 2026-12) stored the embedding's CMN and window only inside ``train_config``, as
options (no ``cmvn_skip_streams`` there meant CMN over every stream); 2 stores the
``EmbeddingContract`` keys ``normalization`` and ``window_seconds`` beside ``model_config`` and
``layout``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from e2espk.data.transforms import Normalization
from e2espk.errors import InputDataError
from e2espk.fileio import atomic_path

CHECKPOINT_FORMAT = "e2espk-checkpoint"
CHECKPOINT_VERSION = 2


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """torch.save ``payload`` (plus format tags) to a temp file, then rename it into place."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint, upgraded to the current format; clear errors for missing,
    foreign or newer files."""
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
    return upgrade_checkpoint(payload)


def upgrade_checkpoint(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` (a checkpoint of this or an earlier version) in the current format: each key
    an earlier version did not write is filled with what that version did without it.

    - ``normalization``: the run's ``cmvn`` over every stream unless ``cmvn_skip_streams``
      says otherwise (``training_normalization``);
    - ``window_seconds``: the run's ``valid_window_seconds``, 4 s when unset;
    - ``score_fusion``: None, which fuses by the z-normalised mean (``e2espk.scoring.scores``).

    A new dict; an up-to-date payload comes back equal to itself.
    """
    upgraded = dict(payload)
    train_config = upgraded.get("train_config") or {}
    if "normalization" not in upgraded:
        normalization = training_normalization(train_config)
        upgraded["normalization"] = {"mode": normalization.mode, "skip": list(normalization.skip)}
    upgraded.setdefault("window_seconds", training_window_seconds(train_config))
    upgraded.setdefault("score_fusion", None)
    upgraded["version"] = CHECKPOINT_VERSION
    return upgraded


def training_normalization(train_config: Mapping[str, Any]) -> Normalization:
    """The CMN a run's saved options describe; options from before ``cmvn_skip_streams``
    existed normalised every stream."""
    skip = train_config.get("cmvn_skip_streams") or ()
    return Normalization(str(train_config.get("cmvn", "mean")), tuple(str(name) for name in skip))


def training_window_seconds(train_config: Mapping[str, Any]) -> float:
    """The window a run validated with, so eval embeds as training did (4 s when unset)."""
    return float(train_config.get("valid_window_seconds", 4.0))
