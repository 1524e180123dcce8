"""A synthetic demo corpus with real speaker structure, in the formats users have.

Every utterance mixes four sources of variation, so verification is learnable but not trivial:
a speaker identity (fixed per speaker), a session/channel (shared by a few utterances of one
speaker, like a VoxCeleb video), time-varying "phonetic" content (an AR(1) process) and frame
noise. The speaker acts twice: a stationary offset (what mean pooling sees, and what cepstral
mean normalisation removes along with the channel) and a speaker-specific gain on the content
dimensions (how the frames move, which only a trained model picks up). Both streams see the
same latent variables:

- PTM-like hidden states at 50 Hz, [frames, layers, dims]: speaker information peaks in the
  middle layers and content in the upper ones, as in WavLM/HuBERT layer analyses;
- handcrafted-like streams at 100 Hz: log-mel energies (a smooth spectral envelope shaped by
  speaker, channel and content), MFCCs (the DCT of those), and log-F0 (speaker mean + intonation).

The files written are a Kaldi data dir (``feats.scp`` = log-mel, ``mfcc.scp``, ``pitch.scp``,
``utt2spk``, ``spk2utt``, ark files written with kaldiio) and a whole-corpus ``.pt`` dict of PTM
states, so packing the demo goes through the same readers as real data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from e2espk.config import option
from e2espk.fileio import atomic_path


@dataclasses.dataclass
class DemoConfig:
    """Size and difficulty of the synthetic corpus."""

    out_dir: str = option("demo_corpus", help="where to write the corpus")
    speakers: int = option(40, help="number of speakers")
    utterances: int = option(8, help="utterances per speaker")
    sessions: int = option(3, help="sessions (channels) per speaker")
    min_seconds: float = option(2.0, help="shortest utterance")
    max_seconds: float = option(4.0, help="longest utterance")
    ptm_layers: int = option(13, help="PTM layers (WavLM base: 13)")
    ptm_dims: int = option(64, help="PTM dims per layer (WavLM base: 768; small for the demo)")
    speaker_strength: float = option(0.6, help="scale of the speaker component (higher = easier)")
    session_strength: float = option(0.7, help="scale of the session/channel component")
    style_strength: float = option(
        1.0,
        help="how much a speaker modulates the time-varying content (0: speaker is a stationary offset only)",
    )
    seed: int = option(0, help="random seed")


@dataclasses.dataclass(frozen=True)
class DemoPaths:
    kaldi_dir: Path
    ptm_dict: Path
    utt2spk: Path


LATENT = 16  # dims of speaker, session and content latents


def _dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II, the MFCC transform of log-mel energies."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    matrix = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    matrix[0] /= np.sqrt(2.0)
    return matrix


def _smooth_basis(n_bins: int, n_basis: int) -> np.ndarray:
    """Smooth curves over frequency bins: how latents shape a spectral envelope."""
    bins = np.linspace(0.0, 1.0, n_bins)
    return np.stack([np.cos(np.pi * (k + 1) * bins) for k in range(n_basis)], axis=1)


def _content(rng: np.random.Generator, frames: int) -> np.ndarray:
    """AR(1) 'phonetic' trajectory at 50 Hz, (frames, LATENT)."""
    steps = rng.standard_normal((frames, LATENT))
    out = np.empty_like(steps)
    out[0] = steps[0]
    for t in range(1, frames):
        out[t] = 0.9 * out[t - 1] + np.sqrt(1 - 0.81) * steps[t]
    return out


class DemoGenerator:
    """Fixed random projections shared by all utterances (the 'pre-trained model')."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        rng = np.random.default_rng(config.seed + 1)
        layers, dims = config.ptm_layers, config.ptm_dims
        depth = np.linspace(0.0, 1.0, layers)
        self.speaker_gain = np.exp(-((depth - 0.4) ** 2) / 0.08)  # peaks in middle layers
        self.content_gain = 0.3 + depth  # grows with depth
        scale = 1.0 / np.sqrt(LATENT)
        self.ptm_speaker = rng.standard_normal((layers, LATENT, dims)) * scale
        self.ptm_session = rng.standard_normal((layers, LATENT, dims)) * scale
        self.ptm_content = rng.standard_normal((layers, LATENT, dims)) * scale
        # speakers also differ in how they articulate: a speaker-specific gain on each content
        # dimension. It changes the frames' dynamics, not their mean, so mean pooling misses it.
        self.speaker_style = rng.standard_normal((LATENT, LATENT)) * scale
        basis = _smooth_basis(80, 12)
        self.mel_speaker = rng.standard_normal((LATENT, 12)) @ basis.T * 0.5
        self.mel_session = rng.standard_normal((LATENT, 12)) @ basis.T * 0.5
        self.mel_content = rng.standard_normal((LATENT, 12)) @ basis.T * 0.7
        self.mel_base = 8.0 - 4.0 * np.linspace(0, 1, 80)  # spectral tilt
        self.dct = _dct_matrix(80, 40)

    def utterance(
        self, rng: np.random.Generator, speaker: np.ndarray, session: np.ndarray, seconds: float
    ) -> dict[str, np.ndarray]:
        """All streams of one utterance, consistent in time (50 Hz PTM, 100 Hz handcrafted)."""
        cfg = self.config
        ptm_frames = max(int(seconds * 50), 2)
        style = 1.0 + cfg.style_strength * np.tanh(speaker @ self.speaker_style)  # (LATENT,)
        content = _content(rng, ptm_frames) * style
        spk = cfg.speaker_strength * speaker
        ses = cfg.session_strength * session
        ptm = (
            np.einsum("k,lkd->ld", spk, self.ptm_speaker)[None] * self.speaker_gain[None, :, None]
            + np.einsum("k,lkd->ld", ses, self.ptm_session)[None]
            + np.einsum("tk,lkd->tld", content, self.ptm_content) * self.content_gain[None, :, None]
            + 0.5 * rng.standard_normal((ptm_frames, cfg.ptm_layers, cfg.ptm_dims))
        )
        hc_frames = 2 * ptm_frames + int(rng.integers(0, 2))  # off-by-one, as real front ends
        fine = np.linspace(0, ptm_frames - 1, hc_frames)
        content_100 = np.stack(
            [np.interp(fine, np.arange(ptm_frames), content[:, k]) for k in range(LATENT)], 1
        )
        mfbe = (
            self.mel_base
            + spk @ self.mel_speaker
            + ses @ self.mel_session
            + content_100 @ self.mel_content
            + 0.6 * rng.standard_normal((hc_frames, 80))
        )
        intonation = 0.08 * np.sin(np.linspace(0, rng.uniform(2, 6), hc_frames) + rng.uniform(0, 6))
        log_f0 = (
            np.log(150.0)
            + 0.25 * spk[0]
            + 0.1 * ses[1]
            + intonation
            + 0.05 * rng.standard_normal(hc_frames)
        )
        return {
            "ptm": ptm.astype(np.float32),
            "mfbe": mfbe.astype(np.float32),
            "mfcc": (mfbe @ self.dct.T).astype(np.float32),
            "pitch": log_f0[:, None].astype(np.float32),
        }


def write_demo_corpus(config: DemoConfig) -> DemoPaths:
    """Generate the corpus and write it as a Kaldi data dir plus a PTM ``.pt`` dict."""
    import kaldiio
    import torch

    out = Path(config.out_dir)
    kaldi_dir = out / "kaldi"
    kaldi_dir.mkdir(parents=True, exist_ok=True)
    generator = DemoGenerator(config)
    rng = np.random.default_rng(config.seed)
    ptm_states: dict[str, torch.Tensor] = {}
    utt2spk: list[tuple[str, str]] = []
    writers = {
        name: kaldiio.WriteHelper(
            f"ark,scp:{kaldi_dir / (name + '.ark')},{kaldi_dir / (name + '.scp')}"
        )
        for name in ("feats", "mfcc", "pitch")
    }
    with writers["feats"], writers["mfcc"], writers["pitch"]:
        for s in range(config.speakers):
            speaker_id = f"spk{s:04d}"
            speaker = rng.standard_normal(LATENT)
            sessions = rng.standard_normal((config.sessions, LATENT))
            for u in range(config.utterances):
                utt = f"{speaker_id}-s{u % config.sessions}-{u:03d}"
                seconds = rng.uniform(config.min_seconds, config.max_seconds)
                streams = generator.utterance(rng, speaker, sessions[u % config.sessions], seconds)
                writers["feats"](utt, streams["mfbe"])
                writers["mfcc"](utt, streams["mfcc"])
                writers["pitch"](utt, streams["pitch"])
                ptm_states[utt] = torch.from_numpy(streams["ptm"]).to(torch.float16)
                utt2spk.append((utt, speaker_id))
    (kaldi_dir / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in utt2spk))
    spk2utt: dict[str, list[str]] = {}
    for utt, spk in utt2spk:
        spk2utt.setdefault(spk, []).append(utt)
    (kaldi_dir / "spk2utt").write_text(
        "".join(f"{s} {' '.join(us)}\n" for s, us in spk2utt.items())
    )
    ptm_dir = out / "ptm"
    ptm_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(ptm_dir / "embedding.pt") as tmp:
        torch.save(ptm_states, tmp)
    (ptm_dir / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in utt2spk))
    return DemoPaths(
        kaldi_dir=kaldi_dir, ptm_dict=ptm_dir / "embedding.pt", utt2spk=ptm_dir / "utt2spk"
    )
