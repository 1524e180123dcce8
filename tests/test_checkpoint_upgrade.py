"""upgrade_checkpoint: earlier checkpoint formats read as the current one, filled as the earlier
version behaved; a freshly written checkpoint round-trips unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2espk.data.corpus import Corpus
from e2espk.data.transforms import Normalization
from e2espk.inference.checkpoint_file import (
    CHECKPOINT_VERSION,
    load_checkpoint,
    save_checkpoint,
    upgrade_checkpoint,
)
from e2espk.inference.contract import EmbeddingContract
from e2espk.inference.system import load_embedding_system

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "checkpoint_2026-12.pt"
CONTRACT_KEYS = ("model_config", "layout", "normalization", "window_seconds")


def plain(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload without tensors (state dicts, RNG states), which do not compare with ==."""
    return {
        key: value
        for key, value in payload.items()
        if key not in {"model", "verifier", "loss", "optimizer", "schedule", "scaler", "rng"}
    }


def test_the_2026_12_checkpoint_is_upgraded_as_that_version_behaved() -> None:
    raw = torch.load(FIXTURE, map_location="cpu", weights_only=False)
    assert raw["version"] == 1 and "normalization" not in raw
    assert "cmvn_skip_streams" not in raw["train_config"]
    payload = load_checkpoint(FIXTURE)  # every loader goes through upgrade_checkpoint
    assert payload["version"] == CHECKPOINT_VERSION
    # no cmvn_skip_streams: CMN over every stream; the validation window as the window
    assert payload["normalization"] == {"mode": "mean", "skip": []}
    assert payload["window_seconds"] == raw["train_config"]["valid_window_seconds"] == 1.0
    assert payload["score_fusion"] == raw["score_fusion"]  # kept where there is one
    assert plain(upgrade_checkpoint(payload)) == plain(payload)  # idempotent
    assert {k: v for k, v in plain(payload).items() if k in raw} == plain(raw) | {"version": 2}
    contract = load_embedding_system(FIXTURE).contract
    assert contract is not None and contract.normalization == Normalization("mean", ())


def test_missing_keys_are_filled_with_the_old_behaviour() -> None:
    old = {"format": "e2espk-checkpoint", "version": 1, "train_config": {"cmvn": "meanvar"}}
    upgraded = upgrade_checkpoint(old)
    assert upgraded["normalization"] == {"mode": "meanvar", "skip": []}
    assert upgraded["window_seconds"] == 4.0  # TrainConfig's default then
    assert upgraded["score_fusion"] is None  # fused = z-normalised mean of cosine and learned
    assert "normalization" not in old  # the input is left alone
    skipping = {"train_config": {"cmvn": "mean", "cmvn_skip_streams": ["pitch"]}}
    assert upgrade_checkpoint(skipping)["normalization"] == {"mode": "mean", "skip": ["pitch"]}


def test_a_fresh_checkpoint_round_trips(
    tiny_checkpoint: Path, demo_hdf: dict[str, Path], tmp_path: Path
) -> None:
    payload = load_checkpoint(tiny_checkpoint)
    raw = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)
    assert raw["version"] == CHECKPOINT_VERSION and all(key in raw for key in CONTRACT_KEYS)
    assert plain(payload) == plain(raw)  # nothing to upgrade
    system = load_embedding_system(tiny_checkpoint)
    contract = EmbeddingContract.from_checkpoint(payload)
    assert system.contract == contract
    assert contract.normalization == Normalization("mean", ("pitch",))  # TrainConfig's default
    assert contract.window_seconds == 1.0  # the run's valid_window_seconds
    assert contract.to_checkpoint() == {key: raw[key] for key in CONTRACT_KEYS}
    copy = save_checkpoint(tmp_path / "copy.pt", payload)
    assert plain(load_checkpoint(copy)) == plain(payload)
    again = load_embedding_system(copy)
    assert again.contract == contract
    with Corpus(demo_hdf["valid"]) as corpus:
        rows = np.arange(len(corpus))
        np.testing.assert_array_equal(again.extract(corpus, rows), system.extract(corpus, rows))
