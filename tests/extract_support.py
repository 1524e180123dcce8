"""Helpers of the extraction tests: synthetic audio, an independent numpy Kaldi fbank/MFCC,
and tiny randomly initialised PTMs saved to a directory (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SR = 16000


def harmonic(f0: float, seconds: float, sr: int = SR, harmonics: int = 8) -> np.ndarray:
    """A voiced, speech-like tone: ``harmonics`` partials of ``f0`` with 1/k amplitudes."""
    t = np.arange(int(seconds * sr)) / sr
    wave = sum(np.sin(2 * np.pi * k * f0 * t + k) / k for k in range(1, harmonics + 1))
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def noise(seconds: float, level: float = 0.05, seed: int = 0) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(
        np.float32
    )


# --------------------------------------------------------------- Kaldi fbank/MFCC in numpy
# Written from Kaldi's feature-window.cc / mel-computations.cc / feature-mfcc.cc, in float64.


def _mel(freq: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + freq / 700.0)


def kaldi_mel_banks(bins: int, low: float, high: float, fft: int = 512) -> np.ndarray:
    """(bins, fft // 2) triangular weights, equally spaced in Kaldi's mel scale."""
    nyquist = SR / 2
    high = high if high > 0 else nyquist + high
    freqs = np.arange(fft // 2) * SR / fft
    mels = _mel(freqs)
    low_mel, high_mel = _mel(np.array(low)), _mel(np.array(high))
    delta = (high_mel - low_mel) / (bins + 1)
    banks = np.zeros((bins, fft // 2))
    for b in range(bins):
        left, centre, right = (
            low_mel + b * delta,
            low_mel + (b + 1) * delta,
            low_mel + (b + 2) * delta,
        )
        up = (mels - left) / (centre - left)
        down = (right - mels) / (right - centre)
        inside = (mels > left) & (mels < right)
        banks[b] = np.where(inside, np.where(mels <= centre, up, down), 0.0)
    return banks


def kaldi_log_mel(
    wav: np.ndarray, bins: int = 80, low: float = 20.0, high: float = 0.0
) -> np.ndarray:
    """compute-fbank-feats --dither=0 (snip edges, povey window, preemph 0.97, power)."""
    x = wav.astype(np.float64) * 32768.0
    n = 1 + (len(x) - 400) // 160
    frames = np.stack([x[160 * i : 160 * i + 400] for i in range(n)])
    frames = frames - frames.mean(axis=1, keepdims=True)
    shifted = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = frames - 0.97 * shifted
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 399)) ** 0.85
    power = np.abs(np.fft.rfft(frames * window, n=512, axis=1)) ** 2
    energies = power[:, :256] @ kaldi_mel_banks(bins, low, high).T
    return np.log(np.maximum(energies, np.finfo(np.float32).eps))


def kaldi_mfcc(wav: np.ndarray, ceps: int = 40, lifter: float = 22.0) -> np.ndarray:
    """compute-mfcc-feats with mfcc_hires.conf (40 bins, 40 ceps, 20 .. -400 Hz, no energy)."""
    log_mel = kaldi_log_mel(wav, bins=ceps, low=20.0, high=-400.0)
    k = np.arange(ceps)[:, None]
    j = np.arange(ceps)[None, :]
    dct = np.sqrt(2.0 / ceps) * np.cos(np.pi / ceps * (j + 0.5) * k)
    dct[0] = np.sqrt(1.0 / ceps)
    lift = 1.0 + 0.5 * lifter * np.sin(np.pi * np.arange(ceps) / lifter)
    return (log_mel @ dct.T) * lift


# --------------------------------------------------------------- tiny PTMs


def tiny_ptm(directory: Path, family: str, seed: int = 0, **overrides: object) -> Path:
    """A randomly initialised 3-layer, 32-dim model of ``family`` saved to ``directory``.

    The convolution stack keeps the real kernels and strides (400-sample field, 320 hop) so
    frame timing is that of the real models; base-style families use the GroupNorm encoder.
    """
    import torch
    import transformers

    classes = {
        "wavlm": (transformers.WavLMConfig, transformers.WavLMModel, "group"),
        "hubert": (transformers.HubertConfig, transformers.HubertModel, "group"),
        "wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model, "layer"),
    }
    config_cls, model_cls, norm = classes[family]
    options: dict = dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        feat_extract_norm=norm, do_stable_layer_norm=norm == "layer",
    )  # fmt: skip
    options.update(overrides)
    torch.manual_seed(seed)
    model_cls(config_cls(**options)).eval().save_pretrained(directory)
    return directory
