"""Feature-level augmentation of training crops: small pure functions on arrays (time on axis 0).

We train on precomputed features, so the waveform augmentations of speaker recipes (MUSAN noise,
RIR reverberation, speed perturbation) are out of reach; what is left acts on the stored arrays:

* SpecAugment-style time and frequency masks over the *spectral* columns (log-mel, MFCC) of the
  handcrafted stream, filled with the crop's per-column mean (0 after mean CMN). Pitch columns
  are never touched: a frequency mask over pitch would mean nothing, and a time mask there
  would blank the very cue that survives noise.
* Random gain and spectral tilt of log-mel (a constant and a linear-in-frequency offset in the
  log domain). Both are constant over time, so the per-crop CMN (``--cmvn mean`` or
  ``meanvar``) removes them exactly: they only change anything with ``--cmvn none``.
* Mixing a crop of another speaker's log-mel at low weight as "babble":
  ``log(exp(a) + g * exp(b))`` in the natural-log power domain, before CMN.
The PTM augmentations live in the PTM encoder instead (``ptm_time_masks`` and
``ptm_layer_dropout`` in ``e2espk.models.config.ModelConfig``, training mode only): layer
dropout changes the learned layer mix, and a time mask filled with the crop mean commutes with
that (linear) mix, so masking after it is the same augmentation at 1/L of the cost, on the
device. Filling raw float16 ``(T, 13, 768)`` crops with their mean here tripled the loader's
time per crop (5 -> 17 ms).

Every random draw comes from a generator seeded by the crop's seed (one independent stream per
stage, see ``stage_rng``), so augmented runs stay reproducible whatever ``--workers`` is, and
switching one augmentation on or off changes neither the crops nor the other augmentations.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from e2espk.config import option
from e2espk.data.transforms import concatenated_columns as stream_columns  # noqa: F401 (API)
from e2espk.errors import ConfigError

SPECTRAL_STREAMS = frozenset({"mfbe", "mfcc"})  # frequency-like columns: masks apply
LOG_MEL_STREAMS = frozenset({"mfbe"})  # log power per band: gain, tilt and mixing apply
DB_TO_LOG_POWER = math.log(10.0) / 10.0  # 1 dB of power in natural-log units (Kaldi fbank)

# Independent random streams of one crop (the crop position uses the seed itself).
MIX, GAIN_TILT, SPEC_MASKS = 2, 3, 4

Span = tuple[int, int]  # [start, stop) along one axis


@dataclasses.dataclass
class AugmentConfig:
    """Augmentation of training crops (validation and eval crops are never augmented).

    A part of train.py's options (``TrainConfig.augment``): the fields are its flags.
    """

    spec_time_masks: int = option(
        0, help="SpecAugment time masks per crop over log-mel/MFCC (0: off)"
    )
    spec_time_mask_frames: int = option(
        10, help="widest time mask, in handcrafted frames (10 = 100 ms)"
    )
    spec_freq_masks: int = option(
        0, help="frequency masks per crop over log-mel/MFCC bins (0: off)"
    )
    spec_freq_mask_bins: int = option(
        8, help="widest frequency mask, in bins of 80 log-mel / 40 MFCC (never over pitch)"
    )
    spec_gain_db: float = option(
        0.0, help="random log-mel gain in [-x, x] dB (needs --cmvn none: CMN removes it)"
    )
    spec_tilt_db: float = option(
        0.0,
        help="random log-mel tilt, lowest to highest band in [-x, x] dB (needs --cmvn none)",
    )
    spec_mix_prob: float = option(
        0.0, help="probability of adding another speaker's log-mel crop as noise (0: off)"
    )
    spec_mix_snr_db: tuple[float, float] = option(
        (13.0, 20.0), metavar="DB", help="SNR range (LOW HIGH) of that mix"
    )

    @property
    def enabled(self) -> bool:
        """Whether any array augmentation is switched on."""
        return bool(
            (self.spec_time_masks and self.spec_time_mask_frames)
            or (self.spec_freq_masks and self.spec_freq_mask_bins)
            or self.spec_gain_db
            or self.spec_tilt_db
            or self.spec_mix_prob
        )

    def validate(self, cmvn: str = "none") -> AugmentConfig:
        """Reject negative sizes and options that the per-crop normalisation ``cmvn`` undoes."""
        for name in ("spec_time_masks", "spec_time_mask_frames"):
            _check_non_negative(name, getattr(self, name))
        for name in ("spec_freq_masks", "spec_freq_mask_bins"):
            _check_non_negative(name, getattr(self, name))
        for name in ("spec_gain_db", "spec_tilt_db"):
            _check_non_negative(name, getattr(self, name))
            if getattr(self, name) and cmvn != "none":
                raise ConfigError(
                    f"--{name.replace('_', '-')} has no effect with --cmvn {cmvn}: a gain or "
                    "tilt constant over the crop is removed exactly by per-crop mean "
                    "normalisation; use --cmvn none, or leave it at 0"
                )
        if not 0.0 <= self.spec_mix_prob <= 1.0:
            raise ConfigError(f"--spec-mix-prob must be in [0, 1], got {self.spec_mix_prob}")
        snr = list(self.spec_mix_snr_db)
        if len(snr) != 2 or snr[0] > snr[1]:
            raise ConfigError(f"--spec-mix-snr-db wants LOW HIGH (dB), got {snr}")
        return self


def _check_non_negative(name: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {value}")


def stage_rng(seed: int, stage: int) -> np.random.Generator:
    """The generator of one augmentation stage of the crop seeded ``seed``."""
    return np.random.default_rng([seed, stage])


def draw_spans(rng: np.random.Generator, length: int, count: int, max_width: int) -> list[Span]:
    """``count`` spans of width uniform in ``[0, max_width]`` (at most ``length``), placed
    uniformly inside ``[0, length)``, as in SpecAugment. Zero-width spans mask nothing."""
    spans = []
    for _ in range(count):
        width = int(rng.integers(0, min(max_width, length) + 1))
        start = int(rng.integers(0, length - width + 1))
        spans.append((start, start + width))
    return spans


def crop_mean(frames: np.ndarray) -> np.ndarray:
    """The fill value of masks: the crop's mean over time (per column; 0 after mean CMN)."""
    return frames.mean(axis=0, dtype=np.float32).astype(frames.dtype)


def time_mask(
    frames: np.ndarray,
    spans: Sequence[Span],
    columns: slice = slice(None),
    fill: np.ndarray | None = None,
) -> np.ndarray:
    """Frames in ``spans`` of ``(T, F)`` frames set to ``fill`` (default: the crop mean), in
    ``columns`` only; returns a copy."""
    out = frames.copy()
    fill = crop_mean(frames) if fill is None else fill
    for start, stop in spans:
        out[start:stop, columns] = fill[columns]
    return out


def freq_mask(
    frames: np.ndarray, spans: Sequence[Span], columns: slice, fill: np.ndarray | None = None
) -> np.ndarray:
    """Bins ``spans`` (counted from ``columns.start``) of ``(T, F)`` frames set to ``fill``
    (default: the crop mean); returns a copy."""
    out = frames.copy()
    fill = crop_mean(frames) if fill is None else fill
    first = columns.start or 0
    for start, stop in spans:
        band = slice(first + start, first + stop)
        out[:, band] = fill[band]
    return out


def gain_and_tilt(frames: np.ndarray, gain: float, tilt: float, columns: slice) -> np.ndarray:
    """Add ``gain`` to every band and a ramp from ``-tilt/2`` (lowest) to ``tilt/2`` (highest)
    to the log-mel ``columns``; natural-log power units (a copy)."""
    out = frames.copy()
    bands = out[:, columns].shape[1]
    ramp = np.linspace(-0.5, 0.5, bands) if bands > 1 else np.zeros(1)
    out[:, columns] += (gain + tilt * ramp).astype(frames.dtype)
    return out


def mix_log_mel(frames: np.ndarray, other: np.ndarray, weight: float, columns: slice) -> np.ndarray:
    """``log(exp(a) + weight * exp(b))`` on the log-mel ``columns``: ``other`` as additive noise."""
    out = frames.copy()
    noise = other.astype(np.float32) + np.float32(math.log(weight))
    out[:, columns] = np.logaddexp(frames[:, columns].astype(np.float32), noise)
    return out


def draw_mix_weight(rng: np.random.Generator, config: AugmentConfig) -> float | None:
    """Power weight ``g`` of the mixed-in crop (SNR uniform in the configured range), or None."""
    if not config.spec_mix_prob or rng.random() >= config.spec_mix_prob:
        return None
    snr_db = rng.uniform(*config.spec_mix_snr_db)
    return float(10.0 ** (-snr_db / 10.0))


def level_log_mel(
    frames: np.ndarray,
    columns: dict[str, slice],
    config: AugmentConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """Random gain and tilt of each log-mel stream in ``(T, F)`` frames, before CMN."""
    if not (config.spec_gain_db or config.spec_tilt_db):
        return frames
    for name, cols in columns.items():
        if name in LOG_MEL_STREAMS:
            gain = rng.uniform(-config.spec_gain_db, config.spec_gain_db) * DB_TO_LOG_POWER
            tilt = rng.uniform(-config.spec_tilt_db, config.spec_tilt_db) * DB_TO_LOG_POWER
            frames = gain_and_tilt(frames, gain, tilt, cols)
    return frames


def mask_spectral(
    frames: np.ndarray,
    columns: dict[str, slice],
    config: AugmentConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """SpecAugment on ``(T, F)`` normalised frames: time masks across all spectral columns,
    then frequency masks within each spectral stream; other columns (pitch) stay as they are."""
    spectral = [cols for name, cols in columns.items() if name in SPECTRAL_STREAMS]
    if not spectral:
        return frames
    fill = crop_mean(frames)  # of the unmasked crop, so overlapping masks agree
    if config.spec_time_masks and config.spec_time_mask_frames:
        spans = draw_spans(
            rng, frames.shape[0], config.spec_time_masks, config.spec_time_mask_frames
        )
        for cols in spectral:
            frames = time_mask(frames, spans, cols, fill)
    if config.spec_freq_masks and config.spec_freq_mask_bins:
        for cols in spectral:
            bins = cols.stop - cols.start
            spans = draw_spans(rng, bins, config.spec_freq_masks, config.spec_freq_mask_bins)
            frames = freq_mask(frames, spans, cols, fill)
    return frames
