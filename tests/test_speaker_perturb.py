"""Speaker augmentation: warped copies of every speaker, labelled as new speakers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from e2espk.data.features import resolve_layout
from e2espk.data.loader import CropDataset, SpeakerBatchSampler
from e2espk.data.speaker_perturb import (
    SpeakerPerturbation,
    hz_to_mel,
    mel_to_hz,
    stretch_time,
    virtual_speaker_offsets,
    warp_log_mel,
)
from e2espk.errors import ConfigError
from e2espk.training.config import TrainConfig
from e2espk.training.trainer import train
from tests.conftest import TINY_TRAIN
from tests.test_augment import MELS, random_corpus

EDGES = (20.0, 8000.0)


def band_centres_hz(n_bands: int) -> np.ndarray:
    low, high = hz_to_mel(EDGES[0]), hz_to_mel(EDGES[1])
    return mel_to_hz(low + (high - low) / (n_bands + 1) * np.arange(1, n_bands + 1))


def test_a_speed_factor_moves_a_formant_up_by_that_factor() -> None:
    centres = band_centres_hz(80)
    formant_hz = 1000.0
    envelope = -(((np.log(centres) - np.log(formant_hz)) / 0.1) ** 2)  # a peak at 1 kHz
    frames = np.tile(envelope.astype(np.float32), (3, 1))
    for factor in (0.9, 1.15):
        peak = centres[int(np.argmax(warp_log_mel(frames, factor, EDGES)[0]))]
        band_width = peak * 0.08  # mel bands near 1 kHz are ~6-8 % apart
        assert abs(peak - factor * formant_hz) < band_width, (factor, peak)
    assert np.array_equal(warp_log_mel(frames, 1.0, EDGES), frames)


def test_stretching_resamples_time_linearly_and_keeps_the_dtype() -> None:
    frames = np.arange(11, dtype=np.float16)[:, None, None] * np.ones((1, 2, 3), np.float16)
    out = stretch_time(frames, 6)
    assert out.shape == (6, 2, 3) and out.dtype == np.float16
    assert np.allclose(out[:, 0, 0], [0, 2, 4, 6, 8, 10])
    assert stretch_time(frames, 11) is frames


def test_virtual_offsets_repeat_the_corpus_once_per_copy() -> None:
    offsets = virtual_speaker_offsets(np.array([0, 3, 5]), 3)
    assert offsets.tolist() == [0, 3, 5, 8, 10, 13, 15]


def test_copies_are_new_speakers_with_warped_and_stretched_crops(tmp_path: Path) -> None:
    corpus = random_corpus(tmp_path / "c.hdf")
    layout = resolve_layout(corpus, "fusion", "mfbe_pitch")
    perturb = SpeakerPerturbation((0.9, 1.1), (20.0, 8000.0))
    dataset = CropDataset(corpus, layout, 0.5, "none", perturb=perturb)
    plain = CropDataset(corpus, layout, 0.5, "none")
    n_rows, n_speakers = len(corpus), len(corpus.speakers)
    assert len(dataset) == 3 * n_rows
    row = 1
    original, copy = dataset[(row, 7)], dataset[(2 * n_rows + row, 7)]
    assert original["label"] == plain[(row, 7)]["label"] == corpus.speaker_of[row]
    assert np.array_equal(original["handcrafted"], plain[(row, 7)]["handcrafted"])
    assert copy["label"] == corpus.speaker_of[row] + 2 * n_speakers and copy["row"] == row
    assert copy["handcrafted"].shape == original["handcrafted"].shape
    assert copy["ptm"].shape == original["ptm"].shape
    # copy 2 is factor 1.1: 0.55 s of stored frames, stretched to 0.5 s, log-mel warped
    start = 0  # utterances of 0.5-1 s: recompute the start the dataset drew
    rng = np.random.default_rng(7)
    seconds = corpus.frames("mfbe")[row] / 100.0
    start = int(float(rng.uniform(0.0, seconds - 0.55)) * 100) if seconds > 0.55 else 0
    stored = corpus.read(row, "mfbe", start, start + 55)
    expected = warp_log_mel(stretch_time(stored, 50), 1.1, (20.0, 8000.0))
    assert np.allclose(copy["handcrafted"][:, :MELS], expected, atol=1e-5)
    assert not np.allclose(copy["handcrafted"][:, :MELS], stretch_time(stored, 50), atol=1e-3)


def test_a_named_log_f0_column_moves_by_the_log_of_the_factor(tmp_path: Path) -> None:
    corpus = random_corpus(tmp_path / "c.hdf")
    layout = resolve_layout(corpus, "handcrafted", "mfbe_pitch")
    kept = CropDataset(corpus, layout, 0.5, "none", perturb=SpeakerPerturbation((0.9, 1.1)))
    shifted = CropDataset(
        corpus, layout, 0.5, "none", perturb=SpeakerPerturbation((0.9, 1.1), log_f0_column=0)
    )
    n_rows = len(corpus)
    for copy, factor in ((0, 1.0), (1, 0.9), (2, 1.1)):
        a, b = (
            kept[(copy * n_rows + 2, 3)]["handcrafted"],
            shifted[(copy * n_rows + 2, 3)]["handcrafted"],
        )
        np.testing.assert_allclose(b[:, MELS] - a[:, MELS], np.log(factor), atol=1e-6)
        np.testing.assert_array_equal(b[:, :MELS], a[:, :MELS])  # log-mel untouched by it
    with pytest.raises(ConfigError, match="has 1 column"):
        CropDataset(
            corpus, layout, 0.5, "none", perturb=SpeakerPerturbation((0.9,), log_f0_column=1)
        )


def test_single_kind_copies_change_one_thing_each(tmp_path: Path) -> None:
    """vtlp moves the envelope only, tempo stretches time only, pitch moves ln F0 only."""
    corpus = random_corpus(tmp_path / "c.hdf")
    layout = resolve_layout(corpus, "handcrafted", "mfbe_pitch")
    perturb = SpeakerPerturbation(vtlp=(1.1,), tempo=(1.1,), pitch=(1.1,), log_f0_column=0)
    assert perturb.copies == 4
    dataset = CropDataset(corpus, layout, 0.5, "none", perturb=perturb)
    n_rows, row, seed = len(corpus), 1, 7
    original = dataset[(row, seed)]["handcrafted"]
    vtlp, tempo, pitch = (dataset[(c * n_rows + row, seed)]["handcrafted"] for c in (1, 2, 3))
    labels = {dataset[(c * n_rows + row, seed)]["label"] for c in range(4)}
    assert len(labels) == 4  # four different speakers
    # vtlp: the same frames (same start, no stretch), envelope warped, pitch untouched
    np.testing.assert_allclose(
        vtlp[:, :MELS], warp_log_mel(original[:, :MELS], 1.1, EDGES), atol=1e-5
    )
    np.testing.assert_array_equal(vtlp[:, MELS:], original[:, MELS:])
    # tempo: 0.55 s of stored frames stretched to 0.5 s, values not warped
    seconds = corpus.frames("mfbe")[row] / 100.0
    rng = np.random.default_rng(seed)
    start = int(float(rng.uniform(0.0, seconds - 0.55)) * 100) if seconds > 0.55 else 0
    stored = corpus.read(row, "mfbe", start, start + 55)
    np.testing.assert_allclose(tempo[:, :MELS], stretch_time(stored, 50), atol=1e-5)
    # pitch: log-mel as the original, ln F0 up by ln 1.1, voicing kept
    np.testing.assert_array_equal(pitch[:, :MELS], original[:, :MELS])
    np.testing.assert_allclose(pitch[:, MELS] - original[:, MELS], np.log(1.1), atol=1e-6)


def test_pitch_copies_need_the_log_f0_column(tmp_path: Path) -> None:
    corpus = random_corpus(tmp_path / "c.hdf")
    layout = resolve_layout(corpus, "handcrafted", "mfbe_pitch")
    with pytest.raises(ConfigError, match="--speaker-perturb-log-f0-column"):
        CropDataset(corpus, layout, 0.5, "none", perturb=SpeakerPerturbation(pitch=(1.1,)))
    with pytest.raises(ConfigError, match="--speaker-vtlp factors repeat"):
        CropDataset(corpus, layout, 0.5, "none", perturb=SpeakerPerturbation(vtlp=(0.9, 0.9)))


def test_the_sampler_draws_copies_of_every_speaker(tmp_path: Path) -> None:
    corpus = random_corpus(tmp_path / "c.hdf", n_utts=9)
    offsets = virtual_speaker_offsets(corpus.speaker_offsets, 3)
    sampler = SpeakerBatchSampler(offsets, 4, 2, seed=0)
    rows = [row for batch in sampler for row, _ in batch]
    assert len(sampler) == int(np.ceil(3 * len(corpus) / 4))
    assert {row // len(corpus) for row in rows} == {0, 1, 2}


@pytest.mark.parametrize(
    ("factors", "feature_mode", "match"),
    [((1.0,), "mfbe_pitch", "not 1"), ((2.0,), "mfbe_pitch", r"\[0.7, 1.4\]"),
     ((0.9, 0.9), "mfbe_pitch", "repeat"), ((0.9,), "mfcc_pitch", "cannot warp")],
)  # fmt: skip
def test_bad_perturbations_are_refused(
    tmp_path: Path, demo_hdf: dict[str, Path], factors: tuple, feature_mode: str, match: str
) -> None:
    config = TrainConfig.from_flat(dict(
        train_hdf_file=str(demo_hdf["train"]), checkpoint_path=str(tmp_path / "run"),
        speaker_perturb=factors, feature_mode=feature_mode, epochs=1, **TINY_TRAIN,
    ))  # fmt: skip
    with pytest.raises(ConfigError, match=match):
        train(config)
    assert not (tmp_path / "run").exists()


def test_training_with_copies_has_a_class_per_copy(
    tmp_path: Path, demo_hdf: dict[str, Path]
) -> None:
    config = TrainConfig.from_flat(dict(
        train_hdf_file=str(demo_hdf["train"]), valid_hdf_file=str(demo_hdf["valid"]),
        checkpoint_path=str(tmp_path / "run"), backbone="ecapa_tdnn_tiny", epochs=1,
        max_steps_per_epoch=3, speaker_perturb=(0.9, 1.1), **TINY_TRAIN,
    ))  # fmt: skip
    result = train(config)
    assert np.isfinite(result.history[0]["train/loss"])
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    head = [v for k, v in state["loss"].items() if k.startswith("margin_head.")]
    assert head and head[0].shape[0] == 3 * len(state["speakers"])
