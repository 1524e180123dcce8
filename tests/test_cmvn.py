"""CMN normalises the spectral streams and leaves log F0 absolute (its level is the speaker's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from e2espk.data.features import resolve_layout
from e2espk.data.loader import CropDataset
from e2espk.data.transforms import Normalization, as_normalization, concatenated_columns
from e2espk.errors import ConfigError, E2eSpkError
from e2espk.inference.extraction import _utterance_windows
from e2espk.training.checkpoint import EmbeddingSystem
from e2espk.training.config import TrainConfig
from tests.test_loader import clock_corpus

COLUMNS = concatenated_columns(("mfbe", "pitch"), (4, 1))


def frames(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(50, 5)) + np.arange(5) * 3.0).astype(np.float32)


@pytest.mark.parametrize("mode", ["mean", "meanvar"])
def test_skipped_streams_keep_their_values_and_the_others_are_normalised(mode: str) -> None:
    x = frames()
    out = Normalization(mode, ("pitch",)).apply(x, COLUMNS)
    np.testing.assert_array_equal(out[:, 4], x[:, 4])  # log F0 as stored
    np.testing.assert_allclose(out[:, :4].mean(axis=0), 0.0, atol=1e-5)
    if mode == "meanvar":
        np.testing.assert_allclose(out[:, :4].std(axis=0), 1.0, atol=1e-3)
    np.testing.assert_array_equal(x, frames())  # the input is not modified in place


def test_a_bare_mode_normalises_every_stream_as_before() -> None:
    x = frames()
    old = as_normalization("mean").apply(x, COLUMNS)
    np.testing.assert_allclose(old, x - x.mean(axis=0), atol=1e-6)
    assert as_normalization("mean").cache_key() == "mean"  # caches written before stay valid
    assert Normalization("mean", ("pitch",)).cache_key() != "mean"
    np.testing.assert_array_equal(Normalization("none", ("pitch",)).apply(x, COLUMNS), x)


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(E2eSpkError, match="cmvn"):
        Normalization("median")


def test_training_default_keeps_pitch_absolute_and_the_flag_can_restore_the_old_way() -> None:
    assert TrainConfig().normalization() == Normalization("mean", ("pitch",))
    assert TrainConfig.from_flat(dict(cmvn_skip_streams=())).normalization().skip == ()


def test_crops_and_eval_windows_keep_the_pitch_level(tmp_path: Path) -> None:
    corpus = clock_corpus(tmp_path / "c.hdf", [150, 80, 200])  # every value = its frame time
    layout = resolve_layout(corpus, "handcrafted", "mfbe_pitch")
    norm = TrainConfig().normalization()
    crop = CropDataset(corpus, layout, crop_seconds=1.0, cmvn=norm)[(2, 7)]["handcrafted"]
    assert crop[:, 4].mean() > 0.4  # the pitch column still holds times, not their deviation
    np.testing.assert_allclose(crop[:, :4].mean(axis=0), 0.0, atol=1e-5)
    windows = list(_utterance_windows(corpus, layout, 2, 1.0, 1.0, norm))
    assert len(windows) > 1
    for window in windows:
        np.testing.assert_allclose(window["handcrafted"][:, :4].mean(axis=0), 0.0, atol=1e-5)
    assert windows[-1]["handcrafted"][:, 4].mean() > windows[0]["handcrafted"][:, 4].mean() + 0.5


def test_checkpoints_from_before_the_option_normalise_every_stream() -> None:
    def system(train_config: dict) -> EmbeddingSystem:
        return EmbeddingSystem(None, None, None, train_config, 0)  # type: ignore[arg-type]

    assert system({"cmvn": "mean"}).normalization == Normalization("mean", ())
    assert system({"cmvn": "mean", "cmvn_skip_streams": ["pitch"]}).normalization.skip == ("pitch",)


def test_a_misspelt_skipped_stream_is_refused_with_the_corpus_streams(tmp_path: Path) -> None:
    corpus = clock_corpus(tmp_path / "c.hdf", [150])
    layout = resolve_layout(corpus, "handcrafted", "mfbe_pitch")
    with pytest.raises(ConfigError, match=r"ptich: .*c\.hdf has no such stream .*mfbe, pitch"):
        CropDataset(corpus, layout, 1.0, cmvn=Normalization("mean", ("ptich",)))
