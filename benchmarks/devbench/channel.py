"""Recording channels: one :class:`Session` of parameters per (speaker, session), one distribution.

Signal chain of an utterance (16 kHz float32 in and out), in the order real recordings apply it:

1. room: with p=0.45, convolution with an exponentially decaying noise impulse response
   (RT60 0.1-0.6 s, direct-to-reverberant ratio 0-12 dB);
2. environment noise at SNR 5-30 dB: white, pink or brown (1/f^a spectra) or babble (3-6
   other utterances of the same split, reverberated by the same room);
3. microphone/amplifier EQ: 1-3 peaking biquads (150-6000 Hz, +-6 dB, Q 0.5-3) and a low and
   a high shelf (+-4 dB), RBJ cookbook formulas;
4. band limit: telephone with p=0.2 (300-3400 Hz band-pass, 8 kHz round trip with soxr),
   a cheap-microphone low-pass at 3.5-7.5 kHz with p=0.25, else a 50-120 Hz high-pass only;
5. gain (-24..-12 dBFS RMS) and a -65..-45 dBFS electronic noise floor;
6. codec damage: 8-bit mu-law with p=0.15, hard clipping (2-8 dB over full scale) with p=0.1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import soxr
from scipy import fft as sfft
from scipy import signal

SR = 16000


@dataclass
class Session:
    """Channel parameters shared by all utterances of one recording session."""

    rt60: float  # s; 0 = no reverb
    drr_db: float
    noise: str  # white | pink | brown | babble
    snr_db: float
    peaks: list[tuple[float, float, float]] = field(default_factory=list)  # (Hz, dB, Q)
    shelves: tuple[float, float] = (0.0, 0.0)  # (low dB at 200 Hz, high dB at 4 kHz)
    band: str = "wide"  # wide | phone | lowpass
    band_hz: float = 0.0  # low-pass cutoff, or the high-pass cutoff of "wide"
    level_db: float = -20.0  # RMS dBFS
    floor_db: float = -60.0
    mulaw: bool = False
    clip_db: float = 0.0  # > 0: boost by this much then clip to [-1, 1]

    def as_dict(self) -> dict:
        return asdict(self)


def draw_session(rng: np.random.Generator) -> Session:
    """One session from the (single, split-independent) channel distribution."""
    band = rng.choice(["phone", "lowpass", "wide"], p=[0.2, 0.25, 0.55])
    return Session(
        rt60=float(rng.uniform(0.1, 0.6)) if rng.random() < 0.45 else 0.0,
        drr_db=float(rng.uniform(0.0, 12.0)),
        noise=str(rng.choice(["white", "pink", "brown", "babble"], p=[0.2, 0.3, 0.2, 0.3])),
        snr_db=float(rng.uniform(5.0, 30.0)),
        peaks=[
            (
                float(np.exp(rng.uniform(np.log(150), np.log(6000)))),
                float(rng.uniform(-6, 6)),
                float(rng.uniform(0.5, 3.0)),
            )
            for _ in range(int(rng.integers(1, 4)))
        ],
        shelves=(float(rng.uniform(-4, 4)), float(rng.uniform(-4, 4))),
        band=str(band),
        band_hz=float(rng.uniform(3500, 7500) if band == "lowpass" else rng.uniform(50, 120)),
        level_db=float(rng.uniform(-24, -12)),
        floor_db=float(rng.uniform(-65, -45)),
        mulaw=bool(rng.random() < 0.15),
        clip_db=float(rng.uniform(2, 8)) if rng.random() < 0.1 else 0.0,
    )


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12)


def room_ir(rt60: float, drr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Direct impulse + exponentially decaying Gaussian tail (-60 dB at ``rt60``), 2.5 ms gap."""
    n = int(1.2 * rt60 * SR)
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)
    tail[: int(0.0025 * SR)] = 0.0
    tail *= 10 ** (-drr_db / 20) / np.sqrt(np.sum(tail**2) + 1e-12)
    tail[0] = 1.0
    return tail


def colored_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """White (a=0), pink (a=1) or brown (a=2) noise with a 1/f^a power spectrum."""
    alpha = {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind]
    if alpha == 0.0:
        return rng.standard_normal(n)
    m = sfft.next_fast_len(n, real=True)
    spec = sfft.rfft(rng.standard_normal(m))
    f = np.maximum(sfft.rfftfreq(m, 1 / SR), 20.0)
    return sfft.irfft(spec / f ** (alpha / 2), m)[:n]


def babble(others: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of other utterances, each looped to ``n`` samples from a random offset, equal RMS."""
    out = np.zeros(n)
    for o in others:
        rep = np.tile(o, int(np.ceil(n / len(o))) + 1)
        s = int(rng.integers(0, len(o)))
        seg = rep[s : s + n]
        out += seg / _rms(seg)
    return out


def _peaking(f0: float, gain_db: float, q: float) -> np.ndarray:
    a = 10 ** (gain_db / 40)
    w = 2 * np.pi * f0 / SR
    al = np.sin(w) / (2 * q)
    b = [1 + al * a, -2 * np.cos(w), 1 - al * a]
    den = [1 + al / a, -2 * np.cos(w), 1 - al / a]
    return np.concatenate([np.array(b) / den[0], np.array(den) / den[0]])


def _shelf(f0: float, gain_db: float, high: bool) -> np.ndarray:
    a = 10 ** (gain_db / 40)
    w = 2 * np.pi * f0 / SR
    al = np.sin(w) / 2 * np.sqrt(2)
    c, s2 = np.cos(w), 2 * np.sqrt(a) * al
    sg = -1 if high else 1  # RBJ low shelf; the high shelf flips the sign of the cos terms
    b = [
        a * ((a + 1) - sg * (a - 1) * c + s2),
        sg * 2 * a * ((a - 1) - sg * (a + 1) * c),
        a * ((a + 1) - sg * (a - 1) * c - s2),
    ]
    den = [
        (a + 1) + sg * (a - 1) * c + s2,
        -sg * 2 * ((a - 1) + sg * (a + 1) * c),
        (a + 1) + sg * (a - 1) * c - s2,
    ]
    return np.concatenate([np.array(b) / den[0], np.array(den) / den[0]])


def equalize(x: np.ndarray, ses: Session) -> np.ndarray:
    sos = [_peaking(f, g, q) for f, g, q in ses.peaks if f < 0.45 * SR]
    sos += [_shelf(200.0, ses.shelves[0], False), _shelf(4000.0, ses.shelves[1], True)]
    return signal.sosfilt(np.stack(sos), x)


def band_limit(x: np.ndarray, ses: Session) -> np.ndarray:
    if ses.band == "phone":
        y = signal.sosfilt(signal.butter(6, [300, 3400], "bandpass", fs=SR, output="sos"), x)
        return soxr.resample(soxr.resample(y, SR, 8000), 8000, SR)[: len(x)]
    if ses.band == "lowpass":
        x = signal.sosfilt(signal.butter(8, ses.band_hz, "lowpass", fs=SR, output="sos"), x)
    return signal.sosfilt(
        signal.butter(
            2, ses.band_hz if ses.band == "wide" else 60.0, "highpass", fs=SR, output="sos"
        ),
        x,
    )


def mulaw8(x: np.ndarray) -> np.ndarray:
    """8-bit mu-law (G.711-like) quantisation round trip."""
    mu = 255.0
    y = np.sign(x) * np.log1p(mu * np.abs(np.clip(x, -1, 1))) / np.log1p(mu)
    y = np.round((y + 1) / 2 * mu) / mu * 2 - 1
    return np.sign(y) * ((1 + mu) ** np.abs(y) - 1) / mu


def apply(
    clean: np.ndarray, ses: Session, others: list[np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """The session's channel applied to one clean utterance (fresh noise each call)."""
    x = clean.astype(np.float64)
    n = len(x)
    ir = room_ir(ses.rt60, ses.drr_db, rng) if ses.rt60 > 0 else None
    if ir is not None:
        x = signal.fftconvolve(x, ir)[:n]
    if ses.noise == "babble" and others:
        noise = babble(others, n, rng)
        if ir is not None:
            noise = signal.fftconvolve(noise, ir)[:n]
    else:
        noise = colored_noise(ses.noise if ses.noise != "babble" else "pink", n, rng)
    x = x + noise * (_rms(x) / _rms(noise)) * 10 ** (-ses.snr_db / 20)
    x = band_limit(equalize(x, ses), ses)
    x = x * (10 ** (ses.level_db / 20) / _rms(x))
    x = x + rng.standard_normal(n) * 10 ** (ses.floor_db / 20)
    if ses.clip_db > 0:
        x = np.clip(x * 10 ** (ses.clip_db / 20) / (np.abs(x).max() + 1e-12), -1, 1)
    if ses.mulaw:
        x = mulaw8(x)
    return np.clip(x, -1, 1).astype(np.float32)
