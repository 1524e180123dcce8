"""Handcrafted streams at 100 Hz: Kaldi log-mel (``mfbe``), Kaldi "hires" MFCC and Praat pitch.

Frame timing (16 kHz): Kaldi frames with ``snip_edges`` -- frame ``i`` covers samples
``[160 i, 160 i + 400)`` (25 ms window, 10 ms hop, centre ``0.0125 + 0.01 i`` s), so ``n``
samples give ``1 + (n - 400) // 160`` frames and fewer than 400 samples give none. Pitch is
sampled at those same centres. Values are those of Kaldi's ``compute-fbank-feats`` /
``compute-mfcc-feats`` on 16-bit audio (samples scaled by 32768), no dither.

Each stream registers a :class:`Handcrafted` extractor in ``HANDCRAFTED``; the pipeline looks
streams up by name, so a new one (e.g. a Kaldi pitch) is one registration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from e2espk.extract.audio import SAMPLE_RATE
from e2espk.registry import Registry

HOP = 160  # samples: 10 ms at 16 kHz
WINDOW = 400  # samples: 25 ms at 16 kHz
FRAME_RATE_HZ = SAMPLE_RATE / HOP  # 100 Hz
INT16 = 32768.0  # Kaldi reads wavs in int16 units
PITCH_FLOOR_HZ = 60.0
PITCH_CEILING_HZ = 500.0
UNVOICED_LOG_F0 = float(np.log(120.0))  # log F0 of an utterance without any voiced frame


@dataclasses.dataclass(frozen=True)
class Handcrafted:
    """A handcrafted stream: ``compute(wav16k) -> (frames, dims)`` float32 at 100 Hz."""

    name: str
    dims: int
    compute: Callable[[np.ndarray], np.ndarray]
    description: str


HANDCRAFTED: Registry[Handcrafted] = Registry("handcrafted stream")


def kaldi_frames(samples: int) -> int:
    """Frames Kaldi (``snip_edges``) makes of ``samples`` 16 kHz samples."""
    return 0 if samples < WINDOW else 1 + (samples - WINDOW) // HOP


def _frame_options(opts: Any) -> None:
    opts.samp_freq = SAMPLE_RATE
    opts.dither = 0.0
    opts.frame_shift_ms = 1000.0 * HOP / SAMPLE_RATE
    opts.frame_length_ms = 1000.0 * WINDOW / SAMPLE_RATE
    opts.snip_edges = True


def _run(computer: Any, wav: np.ndarray, dims: int) -> np.ndarray:
    computer.accept_waveform(SAMPLE_RATE, (wav * INT16).astype(np.float32))
    computer.input_finished()
    n = computer.num_frames_ready
    if n == 0:
        return np.zeros((0, dims), np.float32)
    return np.stack([np.asarray(computer.get_frame(i), np.float32) for i in range(n)])


def log_mel(wav: np.ndarray, bins: int = 80) -> np.ndarray:
    """(T, bins) Kaldi log-mel filterbank energies (20 Hz .. Nyquist, povey window, 0.97
    pre-emphasis, power spectrum, natural log), as ``compute-fbank-feats --num-mel-bins``."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    _frame_options(opts.frame_opts)
    opts.mel_opts.num_bins = bins
    return _run(knf.OnlineFbank(opts), wav, bins)


def mfcc_hires(wav: np.ndarray, ceps: int = 40) -> np.ndarray:
    """(T, 40) Kaldi "hires" MFCC (``mfcc_hires.conf``: 40 bins, 40 ceps, 20 Hz .. Nyquist
    - 400 Hz, no energy, lifter 22), what Kaldi's x-vector/i-vector recipes use."""
    import kaldi_native_fbank as knf

    opts = knf.MfccOptions()
    _frame_options(opts.frame_opts)
    opts.mel_opts.num_bins = ceps
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = -400.0
    opts.num_ceps = ceps
    opts.use_energy = False
    return _run(knf.OnlineMfcc(opts), wav, ceps)


def log_f0_voicing(wav: np.ndarray) -> np.ndarray:
    """(T, 2): [log F0 in log-Hz, voicing 0/1] at the Kaldi frame centres.

    Praat's autocorrelation pitch tracker (60-500 Hz, 10 ms steps). Log F0 is interpolated
    linearly through unvoiced stretches (and held at the ends), so the first column is a
    continuous feature; the second says which frames Praat found voiced. An utterance without
    any voiced frame gets log(120 Hz) everywhere and voicing 0.
    """
    import parselmouth

    n_frames = kaldi_frames(len(wav))
    out = np.zeros((n_frames, 2), np.float32)
    out[:, 0] = UNVOICED_LOG_F0
    if n_frames == 0:
        return out
    sound = parselmouth.Sound(wav.astype(np.float64), SAMPLE_RATE)
    try:
        pitch = sound.to_pitch(
            time_step=1.0 / FRAME_RATE_HZ,
            pitch_floor=PITCH_FLOOR_HZ,
            pitch_ceiling=PITCH_CEILING_HZ,
        )
    except parselmouth.PraatError:  # shorter than Praat's 3-period window: no pitch
        return out
    f0 = pitch.selected_array["frequency"]  # Hz, 0 = unvoiced
    times = pitch.xs()  # s, Praat frame centres
    centres = (WINDOW / 2 + HOP * np.arange(n_frames)) / SAMPLE_RATE
    voiced = f0 > 0
    if voiced.any():
        out[:, 0] = np.interp(centres, times[voiced], np.log(f0[voiced]))
        out[:, 1] = np.interp(centres, times, voiced.astype(np.float64)) >= 0.5
    return out


HANDCRAFTED.register("mfbe")(
    Handcrafted("mfbe", 80, log_mel, "80 Kaldi log-mel filterbank energies")
)
HANDCRAFTED.register("mfcc")(Handcrafted("mfcc", 40, mfcc_hires, "40 Kaldi hires MFCCs"))
HANDCRAFTED.register("pitch")(
    Handcrafted("pitch", 2, log_f0_voicing, "Praat log F0 (interpolated) and voicing")
)
