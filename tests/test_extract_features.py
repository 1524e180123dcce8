"""Handcrafted streams and audio decoding: Kaldi-compatible values, pitch accuracy, timing."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("kaldi_native_fbank")
pytest.importorskip("parselmouth")
soundfile = pytest.importorskip("soundfile")
pytest.importorskip("soxr")

from e2espk.errors import InputDataError  # noqa: E402
from e2espk.extract.audio import AudioItem, DecodeError, apply_segments, decode, parse_wav_scp  # noqa: E402
from e2espk.extract.handcrafted import (  # noqa: E402
    HANDCRAFTED,
    kaldi_frames,
    log_f0_voicing,
    log_mel,
    mfcc_hires,
)
from tests.extract_support import SR, harmonic, kaldi_log_mel, kaldi_mfcc, noise  # noqa: E402

# Tolerances against the float64 numpy Kaldi of tests/extract_support.py (natural-log units):
# kaldi-native-fbank computes in float32 like Kaldi itself; measured max 8e-5 (log-mel) and
# 1.2e-4 (MFCC, values up to ~130).
LOG_MEL_ATOL = 1e-3
MFCC_ATOL = 1e-3
DYNAMIC_RANGE = np.log(1e8)  # 80 dB: bands further below a frame's peak are float32 round-off


def speech_like(seed: int = 1) -> np.ndarray:
    """Voiced, noise and voiced stretches over a faint noise floor (every band has energy)."""
    wav = np.concatenate([harmonic(150, 0.7), noise(0.5), harmonic(230, 0.6)])
    return wav + noise(len(wav) / SR, 0.003, seed=seed)


def test_log_mel_equals_an_independent_kaldi_fbank() -> None:
    wav = speech_like()
    ours, reference = log_mel(wav), kaldi_log_mel(wav)
    assert ours.shape == reference.shape == (kaldi_frames(len(wav)), 80)
    assert np.abs(ours - reference).max() < LOG_MEL_ATOL


def test_log_mel_of_a_clean_tone_matches_within_80_db_of_each_frames_peak() -> None:
    wav = harmonic(150, 0.7)
    ours, reference = log_mel(wav), kaldi_log_mel(wav)
    strong = reference > reference.max(axis=1, keepdims=True) - DYNAMIC_RANGE
    assert strong.mean() > 0.5
    assert np.abs(ours - reference)[strong].max() < LOG_MEL_ATOL


def test_hires_mfcc_equals_an_independent_kaldi_mfcc() -> None:
    wav = speech_like(seed=2)
    ours, reference = mfcc_hires(wav), kaldi_mfcc(wav)
    assert ours.shape == reference.shape == (kaldi_frames(len(wav)), 40)
    assert np.abs(ours - reference).max() < MFCC_ATOL


@pytest.mark.parametrize("samples", [0, 399, 400, 559, 560, 16000, 16123])
def test_every_stream_has_kaldis_frame_count(samples: int) -> None:
    wav = noise(samples / SR) if samples else np.zeros(0, np.float32)
    expected = 0 if samples < 400 else 1 + (samples - 400) // 160
    assert kaldi_frames(samples) == expected
    for name in HANDCRAFTED.names():
        stream = HANDCRAFTED.get(name)
        assert stream.compute(wav).shape == (expected, stream.dims), name


@pytest.mark.parametrize("f0", [95.0, 150.0, 230.0, 340.0])
def test_pitch_of_a_harmonic_tone_is_within_2_percent(f0: float) -> None:
    pitch = log_f0_voicing(harmonic(f0, 1.0))
    inner = pitch[5:-5]  # away from the edges, where Praat's 50 ms window runs out
    assert inner[:, 1].min() == 1.0
    assert np.abs(np.exp(inner[:, 0]) / f0 - 1.0).max() < 0.02


@pytest.mark.parametrize("step_s", [0.5, 0.537, 0.61])
def test_pitch_frames_are_timed_at_the_kaldi_frame_centres(step_s: float) -> None:
    """An octave step at a known time shows up within two 10 ms frames of it."""
    pitch = log_f0_voicing(np.concatenate([harmonic(120, step_s), harmonic(240, 0.8)]))
    first_high = np.flatnonzero(np.exp(pitch[:, 0]) > np.sqrt(120 * 240))[0]
    centre_s = (200 + 160 * first_high) / SR
    assert abs(centre_s - step_s) <= 0.02


def test_noise_and_silence_frames_are_flagged_unvoiced() -> None:
    tone, hiss, silence = harmonic(150, 0.6), noise(0.6, 0.1), np.zeros(int(0.6 * SR), np.float32)
    pitch = log_f0_voicing(np.concatenate([tone, hiss, silence, tone]))
    span = int(0.6 * 100)
    assert pitch[10 : span - 10, 1].min() == 1.0
    assert pitch[span + 10 : 3 * span - 10, 1].max() == 0.0  # noise, then silence
    assert pitch[3 * span + 10 : -10, 1].min() == 1.0
    # log F0 runs on through the unvoiced stretch: continuous, finite, within the tone's pitch
    assert np.isfinite(pitch).all()
    assert np.allclose(np.exp(pitch[span + 10 : 3 * span - 10, 0]), 150.0, rtol=0.02)


def test_all_noise_gets_the_fallback_pitch_and_no_voicing() -> None:
    pitch = log_f0_voicing(noise(0.5, 0.1))
    assert pitch[:, 1].max() == 0.0
    assert np.allclose(pitch[:, 0], np.log(120.0))


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100])
def test_decoding_resamples_to_16k(tmp_path: Path, rate: int) -> None:
    seconds = 0.8
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * 150 * t) + 0.1 * np.sin(2 * np.pi * 450 * t)).astype(
        np.float32
    )
    path = tmp_path / "a.flac"
    soundfile.write(path, np.stack([wave, wave], axis=1), rate)  # stereo: channels averaged
    wav = decode(AudioItem("a", str(path)))
    assert wav.dtype == np.float32 and abs(len(wav) - seconds * SR) <= 1
    pitch = log_f0_voicing(wav)[5:-5]
    assert np.abs(np.exp(pitch[:, 0]) / 150.0 - 1.0).max() < 0.02


def test_wav_scp_pipes_and_segments(tmp_path: Path) -> None:
    wave = harmonic(150, 2.0)
    soundfile.write(tmp_path / "rec.wav", wave, SR)
    scp = tmp_path / "wav.scp"
    scp.write_text(f"recA {tmp_path / 'rec.wav'}\nrecB cat {tmp_path / 'rec.wav'} |\n")
    items = parse_wav_scp(scp)
    assert items["recB"].is_pipe and items["recB"].where().endswith("|")
    assert np.array_equal(decode(items["recA"]), decode(items["recB"]))
    segments = tmp_path / "segments"
    segments.write_text("u1 recA 0.25 1.00\nu2 recB 1.5 -1\n")
    parts = apply_segments(segments, items)
    assert np.allclose(decode(parts["u1"]), wave[4000:16000], atol=1e-4)
    assert np.allclose(decode(parts["u2"]), wave[24000:], atol=1e-4)


@pytest.mark.parametrize("stated", [0, 0x7FFFF000, 0xFFFFFFFF])
def test_a_piped_wav_with_unknown_sizes_decodes(tmp_path: Path, stated: int) -> None:
    samples = (harmonic(150, 0.5) * 32767).astype("<i2")
    header = b"RIFF" + struct.pack("<I", stated) + b"WAVE" + b"fmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, SR, 2 * SR, 2, 16)
    header += b"data" + struct.pack("<I", stated)
    (tmp_path / "streamed.bin").write_bytes(header + samples.tobytes())
    wav = decode(AudioItem("u", f"cat {tmp_path / 'streamed.bin'}", is_pipe=True))
    assert np.array_equal(np.round(wav * 32768).astype("<i2"), samples)


def test_bad_audio_names_what_went_wrong(tmp_path: Path) -> None:
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(DecodeError, match="cannot decode"):
        decode(AudioItem("u", str(tmp_path / "junk.wav")))
    with pytest.raises(DecodeError, match="status 3"):
        decode(AudioItem("u", "echo oops >&2; exit 3", is_pipe=True))
    scp = tmp_path / "wav.scp"
    scp.write_text("u1 a.ark:12\n")
    with pytest.raises(InputDataError, match="u1"):
        parse_wav_scp(scp)
    segments = tmp_path / "segments"
    segments.write_text("s1 nowhere 0 1\n")
    with pytest.raises(InputDataError, match=r"line 1: recording 'nowhere' not in wav\.scp"):
        apply_segments(segments, {})
