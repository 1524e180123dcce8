"""``--init-from``: start a new run from another run's weights (a second training stage).

Large-margin fine-tuning (longer crops, a larger margin, a small learning rate, a few epochs)
starts from a trained model but is a run of its own: its optimizer, learning-rate and margin
schedules, epochs and history start fresh, and only the weights come from the parent. The
parent must have the same architecture; keys that change no parameter (dropout, the random
projection's seed, whose matrix is loaded anyway) may differ.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from e2espk.errors import ConfigError
from e2espk.inference.checkpoint_file import load_checkpoint
from e2espk.losses.joint import JointLoss
from e2espk.losses.margin import MARGIN_HEADS

LOG = logging.getLogger(__name__)

MODEL_NEUTRAL_KEYS = ("dropout",)  # ModelConfig keys that no parameter depends on
VERIFIER_NEUTRAL_KEYS = ("dropout", "seed")
RESUME_NEUTRAL_KEYS = ("resume", "progress")  # train options a resume is expected to change


def config_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], ignore: Iterable[str] = ()
) -> list[str]:
    """``key: old -> new`` for every key whose value differs (missing keys count as None)."""
    keys = sorted((set(old) | set(new)) - set(ignore))
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in keys
        if old.get(key) != new.get(key)
    ]


def check_resume_config(
    state: Mapping[str, Any],
    path: str | Path,
    model_config: Mapping[str, Any],
    verifier_config: Mapping[str, Any] | None,
    train_config: Mapping[str, Any],
) -> None:
    """Check that ``--resume`` from checkpoint ``state`` fits this run's options.

    A different architecture (model or verifier config, apart from keys no parameter
    depends on) cannot load the saved weights: refused, naming the keys. ``state``'s model
    config must be complete (older checkpoints: filled with the defaults by the caller). Any other option
    that differs is named in a warning: the run continues with the new value, so it no longer
    matches an uninterrupted run.

    Raises:
        ConfigError: the model or verifier differs.
    """
    differences = config_differences(state["model_config"], model_config, MODEL_NEUTRAL_KEYS)
    if verifier_config is not None and state.get("verifier_config") is not None:
        differences += config_differences(
            state["verifier_config"], verifier_config, VERIFIER_NEUTRAL_KEYS
        )
    if differences:
        raise ConfigError(
            f"cannot --resume {path}: its model differs from these options in "
            f"{'; '.join(differences)}; give the architecture options it was trained with "
            "(its config.yaml has them)"
        )
    saved_train = state.get("train_config") or {}
    changed = config_differences(saved_train, train_config, RESUME_NEUTRAL_KEYS)
    if saved_train and changed:
        LOG.warning(
            "resuming %s with options that differ from the run's: %s", path, "; ".join(changed)
        )


def initialize_from(
    path: str | Path,
    model: Any,
    loss: JointLoss,
    model_config: Mapping[str, Any],
    verifier_config: Mapping[str, Any] | None,
    speakers: list[str],
) -> dict[str, Any]:
    """Load the model, verifier and margin-head weights of checkpoint ``path`` in place.

    The model must match (ConfigError naming the differing model-config keys otherwise), and
    so must the verifier where both runs have one. The margin head is loaded when the runs
    share the head type and the training speakers (same corpus); otherwise it starts fresh, as
    does a verifier the parent did not have.

    Returns:
        What the run records about its parent: path, epoch, step, run directory, what loaded.
    """
    state = load_checkpoint(path, "cpu")
    differences = config_differences(state["model_config"], model_config, MODEL_NEUTRAL_KEYS)
    if differences:
        raise ConfigError(
            f"--init-from {path}: the checkpoint's model differs from this run's in "
            f"{'; '.join(differences)}; give the architecture flags it was trained with"
        )
    _load(path, "model", model, state["model"])
    loaded = ["model"]
    if loss.verifier is not None and verifier_config is not None:
        if state.get("verifier") is None:
            LOG.warning("--init-from %s has no verifier: the verifier starts fresh", path)
        else:
            differences = config_differences(
                state["verifier_config"], verifier_config, VERIFIER_NEUTRAL_KEYS
            )
            if differences:
                raise ConfigError(
                    f"--init-from {path}: the checkpoint's verifier differs from this run's in "
                    f"{'; '.join(differences)}"
                )
            _load(path, "verifier", loss.verifier, state["verifier"])
            loaded.append("verifier")
    if loss.margin_head is not None and _load_head(path, state, loss, speakers):
        loaded.append("margin_head")
    LOG.info("initialised from %s (epoch %s): %s", path, state.get("epoch"), ", ".join(loaded))
    return {
        "path": str(Path(path).resolve()),
        "epoch": state.get("epoch"),
        "step": state.get("step"),
        "run_dir": state.get("train_config", {}).get("checkpoint_path"),
        "loaded": loaded,
    }


def _load_head(
    path: str | Path, state: dict[str, Any], loss: JointLoss, speakers: list[str]
) -> bool:
    head = loss.margin_head
    assert head is not None
    prefix = "margin_head."
    head_state = {
        key[len(prefix) :]: value
        for key, value in (state.get("loss") or {}).items()
        if key.startswith(prefix)
    }
    parent_head = state.get("train_config", {}).get("softmax")
    reason = None
    if not head_state:
        reason = "the checkpoint has no margin head"
    elif state.get("speakers") != speakers:
        reason = "its training speakers differ from this corpus's"
    elif parent_head is None or MARGIN_HEADS.get(parent_head) is not type(head):
        reason = f"its head {parent_head!r} is another type"
    elif _shapes(head_state) != _shapes(head.state_dict()):
        reason = "its classes differ from this run's (another --speaker-perturb?)"
    if reason:
        LOG.warning("--init-from %s: the margin head starts fresh (%s)", path, reason)
        return False
    _load(path, "margin head", head, head_state)
    return True


def _shapes(state: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state.items()}


def _load(path: str | Path, what: str, module: Any, state_dict: Mapping[str, Any]) -> None:
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ConfigError(f"--init-from {path}: cannot load its {what} ({error})") from None
