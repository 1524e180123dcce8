"""Speaker augmentation: every training speaker, speed-perturbed, becomes new speakers.

Too few training speakers is what makes an embedding learn the training population instead of
what separates voices. The field's answer (Kaldi/WeSpeaker recipes: speed perturbation with a
new speaker label per factor; Yamamoto et al., Interspeech 2019) multiplies the speakers. We
only have stored features, so we apply to them what a speed change by a factor ``a`` does:

* the spectral envelope moves up by ``a`` (``f -> a f``): each log-mel band reads the band
  energy at ``f / a``, interpolated linearly in mel between band centres. The centres are
  those of Kaldi's filterbank (``--speaker-perturb-mel-hz``, 20 Hz to Nyquist by default);
* time runs ``a`` times faster: a crop of ``a * T`` stored frames is resampled to ``T``.

Each factor is a separate copy of every speaker, with its own class in the margin head and in
pair mining (a copy is a *different* speaker from its source). PTM states cannot be warped in
frequency (they are not spectra), so they are only stretched in time. Pitch streams come in too
many conventions (raw Hz, log, normalised, Kaldi's three columns) to shift blindly: they are
stretched in time, and the column that holds natural-log F0, when named
(``--speaker-perturb-log-f0-column``), moves by ``log a`` as a real speed change would move it,
so that a copy's pitch agrees with the harmonics in its warped log-mel. MFCC is refused, since
warping it would need the DCT undone.

Real voices of one kind differ in vocal-tract length, pitch and rate *independently*, and a
speed change moves all three together. So copies can also change one of them alone (each kind
a factor list, each factor one more copy): ``vtlp`` moves the log-mel envelope only (vocal
tract length perturbation, Jaitly & Hinton 2013, here as a new speaker), ``tempo`` stretches
time only, ``pitch`` moves only the named ln-F0 column (the log-mel, harmonics included, is
kept: an approximation that teaches the model to read the pitch stream).

Virtual rows: copy ``c`` of corpus row ``r`` is row ``c * n_rows + r``, so the P x K batch
sampler works unchanged over ``virtual_speaker_offsets`` and stays seeded and resumable.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import numpy as np

from e2espk.errors import ConfigError

WARPABLE_STREAMS = frozenset({"mfbe"})  # log-mel: the envelope can be moved
TIME_ONLY_STREAMS = frozenset({"pitch", "ptm"})  # stretched in time, values kept
MIN_FACTOR, MAX_FACTOR = 0.7, 1.4


@dataclasses.dataclass(frozen=True)
class CopyWarp:
    """What one speaker copy changes, each as a factor: the spectral envelope (``f -> a f``),
    the speed of time (``a`` stored seconds become one) and F0."""

    frequency: float = 1.0
    time: float = 1.0
    f0: float = 1.0

    @property
    def identity(self) -> bool:
        return self.frequency == self.time == self.f0 == 1.0


IDENTITY = CopyWarp()  # the original speaker

# kind -> the copy a factor of that kind makes (the training flags are --speaker-KIND)
COPY_KINDS: dict[str, Callable[[float], CopyWarp]] = {
    "speed": lambda a: CopyWarp(a, a, a),
    "vtlp": lambda a: CopyWarp(frequency=a),
    "tempo": lambda a: CopyWarp(time=a),
    "pitch": lambda a: CopyWarp(f0=a),
}


@dataclasses.dataclass(frozen=True)
class SpeakerPerturbation:
    """Speaker copies (one per factor of each kind) and the mel layout of the stored log-mel."""

    factors: tuple[float, ...] = ()  # speed factors
    mel_hz: tuple[float, float] = (20.0, 8000.0)  # lowest and highest filterbank edge, Hz
    log_f0_column: int | None = None  # column of the pitch stream holding ln F0; None: kept
    vtlp: tuple[float, ...] = ()  # envelope-only factors
    tempo: tuple[float, ...] = ()  # time-only factors
    pitch: tuple[float, ...] = ()  # F0-only factors (need ``log_f0_column``)

    def kinds(self) -> dict[str, tuple[float, ...]]:
        return {"speed": self.factors, "vtlp": self.vtlp, "tempo": self.tempo, "pitch": self.pitch}

    @functools.cached_property
    def warps(self) -> tuple[CopyWarp, ...]:
        """The warp of every copy, the original (identity) first. F0 factors act only on a
        named ``log_f0_column`` (``shift_log_f0``), so without one speed copies keep F0."""
        kinds = self.kinds().items()
        return (IDENTITY, *(COPY_KINDS[k](float(f)) for k, factors in kinds for f in factors))

    @property
    def copies(self) -> int:
        """Speaker copies including the original."""
        return len(self.warps)

    def warp(self, copy: int) -> CopyWarp:
        return self.warps[copy]

    def validate(
        self, streams: Sequence[str], pitch_dims: int | None = None
    ) -> SpeakerPerturbation:
        """Reject factors out of a plausible speed range, streams that cannot be warped and a
        log-F0 column the pitch stream (``pitch_dims`` columns, when read) does not have."""
        for kind, factors in self.kinds().items():
            flag = "--speaker-perturb" if kind == "speed" else f"--speaker-{kind}"
            for factor in factors:
                if not MIN_FACTOR <= factor <= MAX_FACTOR or factor == 1.0:
                    raise ConfigError(
                        f"{flag} factors must be in [{MIN_FACTOR}, {MAX_FACTOR}] and not 1, got {factor}"
                    )
            if len(set(factors)) != len(factors):
                raise ConfigError(f"{flag} factors repeat: {list(factors)}")
        if self.pitch and self.log_f0_column is None:
            raise ConfigError(
                "--speaker-pitch shifts ln F0, so it needs --speaker-perturb-log-f0-column "
                "(the pitch stream's column that holds natural-log F0)"
            )
        low, high = self.mel_hz
        if not 0.0 <= low < high:
            raise ConfigError(
                f"--speaker-perturb-mel-hz wants LOW HIGH with LOW < HIGH, got {low} {high}"
            )
        if self.copies > 1:
            unknown = [s for s in streams if s not in WARPABLE_STREAMS | TIME_ONLY_STREAMS]
            if unknown:
                raise ConfigError(
                    f"--speaker-perturb warps log-mel (mfbe) and stretches pitch/PTM in time; it cannot warp {unknown}: "
                    "use a feature mode with mfbe, or leave --speaker-perturb empty"
                )
        column = self.log_f0_column
        if column is not None and pitch_dims is not None and not 0 <= column < pitch_dims:
            raise ConfigError(
                f"--speaker-perturb-log-f0-column {column}: the pitch stream has {pitch_dims} "
                f"column(s), numbered from 0"
            )
        return self


def shift_log_f0(pitch: np.ndarray, factor: float, column: int | None) -> np.ndarray:
    """Pitch frames of a copy at ``factor``: ln F0 in ``column`` moved by ``ln factor``."""
    if column is None or factor == 1.0:
        return pitch
    out = pitch.astype(np.float32, copy=True)
    out[:, column] += np.float32(np.log(factor))
    return out


def virtual_speaker_offsets(offsets: np.ndarray, copies: int) -> np.ndarray:
    """Speaker offsets over the virtual rows: ``copies`` blocks of the corpus, one per copy."""
    offsets = np.asarray(offsets, dtype=np.int64)
    n_rows = int(offsets[-1])
    blocks = [offsets[:-1] + copy * n_rows for copy in range(copies)]
    return np.concatenate([*blocks, [copies * n_rows]])


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Kaldi's mel scale, 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * np.expm1(np.asarray(mel, dtype=np.float64) / 1127.0)


@functools.lru_cache(maxsize=64)  # a few (bands, factor, edges) per run; called per crop
def mel_warp(
    n_bands: int, factor: float, mel_hz: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each band of the warped log-mel reads the original: (lower band, upper band, weight).

    Band ``k`` is centred at the ``k + 1``-th of ``n_bands + 2`` points equally spaced in mel
    between the edges; after the warp it holds the original envelope at ``centre / factor``,
    clamped to the outermost bands.
    """
    low, high = hz_to_mel(mel_hz[0]), hz_to_mel(mel_hz[1])
    step = (high - low) / (n_bands + 1)
    centres_hz = mel_to_hz(low + step * np.arange(1, n_bands + 1))
    source = (hz_to_mel(centres_hz / factor) - low) / step - 1.0  # fractional band index
    source = np.clip(source, 0.0, n_bands - 1)
    lower = np.floor(source).astype(np.int64)
    upper = np.minimum(lower + 1, n_bands - 1)
    return lower, upper, (source - lower).astype(np.float32)


def warp_log_mel(frames: np.ndarray, factor: float, mel_hz: tuple[float, float]) -> np.ndarray:
    """Log-mel ``(T, bands)`` with its envelope moved up by ``factor`` (interpolated in log)."""
    lower, upper, weight = mel_warp(frames.shape[1], factor, mel_hz)
    return frames[:, lower] * (1.0 - weight) + frames[:, upper] * weight


def stretch_time(frames: np.ndarray, length: int) -> np.ndarray:
    """``frames`` (time on axis 0) linearly resampled to ``length`` frames, dtype kept."""
    if len(frames) == length:
        return frames
    position = np.linspace(0.0, len(frames) - 1.0, length)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, len(frames) - 1)
    shape = (length,) + (1,) * (frames.ndim - 1)
    weight = (position - lower).reshape(shape).astype(np.float32)
    out = (
        frames[lower].astype(np.float32) * (1.0 - weight)
        + frames[upper].astype(np.float32) * weight
    )
    return out.astype(frames.dtype, copy=False)
