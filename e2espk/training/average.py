"""Checkpoint averaging and the exported ``final.pt``.

Averaging the weights of the last few epochs (as WeSpeaker and ESPnet recipes do) smooths the
noise of the last optimizer steps and usually transfers to unseen speakers better than the
checkpoint that validation on a few held-out speakers happened to pick. Every float tensor of
the state dicts is averaged elementwise: weights, and BatchNorm running means and variances
too (they are averaged, not recomputed on training data; integer buffers such as
``num_batches_tracked`` are taken from the newest checkpoint, and tensors equal in every
checkpoint, such as the verifier's fixed random projection, are kept as they are).

During training the last N epochs' weights are kept in ``RUN/recent/epoch_NNN.pt``: weights-only
checkpoints (no optimizer, RNG or history), each one loadable by eval and embed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from e2espk.errors import ConfigError
from e2espk.fileio import atomic_path
from e2espk.inference.checkpoint_file import load_checkpoint, save_checkpoint
from e2espk.training.init_from import MODEL_NEUTRAL_KEYS, config_differences

LOG = logging.getLogger(__name__)

RECENT_DIR = "recent"
TRAINING_STATE = ("optimizer", "schedule", "scaler", "rng", "history")  # not in weights-only files
FINAL_SOURCES = {"averaged": "averaged.pt", "last": "last.pt", "best": "best.pt"}
_EPOCH_FILE = re.compile(r"epoch_(\d+)\.pt")


def average_state_dicts(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The elementwise mean of state dicts with the same keys and shapes (see module doc).

    Means are taken in float64 and cast back, so the result does not depend on summation order
    beyond float64 rounding.
    """
    if not states:
        raise ValueError("nothing to average")
    keys = list(states[0])
    for k, state in enumerate(states[1:], start=1):
        if list(state) != keys:
            raise ConfigError(f"state {k} has other keys: {sorted(set(state) ^ set(keys))}")
    averaged = {}
    for key in keys:
        tensors = [state[key] for state in states]
        if any(t.shape != tensors[0].shape for t in tensors):
            raise ConfigError(f"{key}: shapes differ ({[tuple(t.shape) for t in tensors]})")
        if all(torch.equal(t, tensors[0]) for t in tensors[1:]):
            averaged[key] = tensors[0].clone()
        elif tensors[0].is_floating_point():
            mean = torch.stack([t.double() for t in tensors]).mean(dim=0)
            averaged[key] = mean.to(tensors[0].dtype)
        else:
            averaged[key] = tensors[-1].clone()
    return averaged


def weights_only(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint payload without the state that only resuming needs."""
    return {key: value for key, value in payload.items() if key not in TRAINING_STATE}


def average_checkpoints(paths: Sequence[str | Path], out: str | Path) -> Path:
    """Average the weights of ``paths`` (same architecture) into checkpoint ``out``.

    ``out`` describes itself like the newest input (model and verifier config, layout, train
    config), with ``averaged_from`` listing the inputs; eval, embed and ``--init-from`` load it
    like any checkpoint, ``--resume`` cannot (it holds no optimizer). The margin head is
    averaged when every input has the same one, and left out otherwise.
    """
    if not paths:
        raise ConfigError("give at least one checkpoint to average")
    payloads = [load_checkpoint(path) for path in paths]
    newest = max(range(len(payloads)), key=lambda k: (int(payloads[k].get("epoch", 0)), k))
    template = payloads[newest]
    for path, payload in zip(paths, payloads, strict=True):
        differences = config_differences(
            template["model_config"], payload["model_config"], MODEL_NEUTRAL_KEYS
        )
        differences += config_differences(
            template.get("verifier_config") or {},
            payload.get("verifier_config") or {},
            ("dropout",),
        )
        if differences:
            raise ConfigError(
                f"cannot average {path} with {paths[newest]}: {'; '.join(differences)}"
            )
    result = weights_only(template)
    result["model"] = average_state_dicts([p["model"] for p in payloads])
    if template.get("verifier") is not None:
        result["verifier"] = average_state_dicts([p["verifier"] for p in payloads])
    try:
        result["loss"] = average_state_dicts([p["loss"] for p in payloads])
    except (ConfigError, KeyError, TypeError):
        LOG.warning("the checkpoints' margin heads differ: %s holds none", out)
        result["loss"] = None
    result["averaged_from"] = [
        {"path": str(path), "epoch": payload.get("epoch")}
        for path, payload in zip(paths, payloads, strict=True)
    ]
    return save_checkpoint(out, result)


def recent_checkpoints(run_dir: Path, up_to_epoch: int | None = None) -> list[Path]:
    """The kept weights-only epoch checkpoints of a run, oldest first."""
    found = []
    for path in (run_dir / RECENT_DIR).glob("epoch_*.pt"):
        match = _EPOCH_FILE.fullmatch(path.name)
        if match and (up_to_epoch is None or int(match[1]) <= up_to_epoch):
            found.append((int(match[1]), path))
    return [path for _, path in sorted(found)]


def keep_recent(run_dir: Path, epoch: int, payload: Mapping[str, Any], n: int) -> None:
    """Save epoch ``epoch``'s weights into the rolling set and drop all but the newest ``n``."""
    if n < 2:
        return
    save_checkpoint(run_dir / RECENT_DIR / f"epoch_{epoch:03d}.pt", weights_only(payload))
    for old in recent_checkpoints(run_dir, epoch)[:-n]:
        old.unlink()


def export_checkpoints(
    run_dir: Path,
    average_last: int,
    final: str,
    last_epoch: int | None,
    validate: Callable[[Path], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Write ``averaged.pt`` (validated once by ``validate``) and ``final.pt``.

    Returns the ``results.json`` entries: ``averaged`` (epochs, and ``valid/...`` metrics) and
    ``final`` (which checkpoint it is).
    """
    results: dict[str, Any] = {}
    recent = recent_checkpoints(run_dir, last_epoch)[-average_last:] if average_last >= 2 else []
    if recent:
        averaged = average_checkpoints(recent, run_dir / "averaged.pt")
        epochs = [int(_EPOCH_FILE.fullmatch(p.name)[1]) for p in recent]  # type: ignore[index]
        results["averaged"] = {"checkpoint": str(averaged), "epochs": epochs}
        if validate is not None:
            metrics = validate(averaged)
            results["averaged"].update({f"valid/{k}": v for k, v in metrics.items()})
        LOG.info("averaged epochs %s -> %s", epochs, averaged)
    source = run_dir / FINAL_SOURCES[final]
    if source.exists():
        link_or_copy(source, run_dir / "final.pt")
        results["final"] = {"checkpoint": final, "source": source.name}
        LOG.info("final.pt = %s", source.name)
    else:
        LOG.warning("no %s to export as final.pt", source.name)
    return results


def link_or_copy(source: Path, target: Path) -> None:
    """Make ``target`` the same file as ``source`` (a hard link, a copy where links fail),
    atomically: readers see the old or the new file, never a partial one."""
    with atomic_path(target) as tmp:
        tmp.unlink()  # atomic_path made it; a link needs the name free
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
