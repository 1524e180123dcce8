"""Utterance statistics of the pitch stream joined to the pooled vector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from e2espk.errors import ConfigError
from e2espk.inference.system import load_embedding_system
from e2espk.models.config import ModelConfig
from e2espk.models.input_stats import InputStatistics
from e2espk.models.speaker_model import build_speaker_model
from e2espk.training.trainer import train
from tests.test_generalisation import config


def test_statistics_are_the_mean_and_std_of_the_chosen_columns() -> None:
    frames = torch.randn(6, 50, 5)
    frames[:, :, 3] += torch.arange(6.0)[:, None]  # a per-utterance level in column 3
    stats = InputStatistics((3, 4)).train()
    out = stats(frames)
    assert out.shape == (6, 4)
    raw = torch.cat([frames[:, :, 3:].mean(1), frames[:, :, 3:].std(1, unbiased=False)], 1)
    expected = (raw - raw.mean(0)) / (raw.var(0, unbiased=False) + 1e-5).sqrt()  # BatchNorm
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_the_embedding_moves_with_the_pitch_level_only_through_the_statistics() -> None:
    base = {"mode": "handcrafted", "handcrafted_dim": 6, "backbone": "ecapa_tdnn_tiny",
            "hidden_size": 8, "latent_size": 4}  # fmt: skip
    with_stats = build_speaker_model(ModelConfig(**base, input_stats_columns=(4,))).eval()
    assert with_stats.embedding[1].in_features == with_stats.pooling.out_dim + 2
    frames = torch.randn(2, 40, 6)
    shifted = frames.clone()
    shifted[:, :, 4] += 0.3
    # zero the backbone path's view of column 4, so only the statistics can see the shift
    with torch.no_grad():
        with_stats.handcrafted_encoder.blocks[0].weight[:, 4] = 0.0
        a, b = with_stats({"handcrafted": frames}), with_stats({"handcrafted": shifted})
    assert not torch.allclose(a, b)
    with pytest.raises(ConfigError, match="input_stats_columns"):
        build_speaker_model(ModelConfig(**base, input_stats_columns=(6,)))
    assert "input_stats_columns" not in ModelConfig(**base).to_dict()  # old dict kept


def test_trained_with_pitch_statistics_and_rebuilt_from_the_checkpoint(
    demo_hdf: dict[str, Path], tmp_path: Path
) -> None:
    result = train(config(demo_hdf, tmp_path / "run", epochs=1, mode="handcrafted",
                          input_stats_streams=("pitch",)))  # fmt: skip
    columns = result.model.config.input_stats_columns
    assert len(columns) >= 1 and max(columns) == result.model.config.handcrafted_dim - 1
    system = load_embedding_system(tmp_path / "run" / "final.pt")
    assert system.model.config.input_stats_columns == columns
    assert np.isfinite(result.history[0]["valid/cosine/eer"])
    with pytest.raises(ConfigError, match="--input-stats-streams mfcc"):
        train(config(demo_hdf, tmp_path / "bad", mode="handcrafted",
                     input_stats_streams=("mfcc",)))  # fmt: skip
