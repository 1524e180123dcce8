"""Feature extractors: Kaldi fbank/MFCC, Praat pitch and resemblyzer LSTM states, all at 100 Hz.

Frame alignment (16 kHz, 10 ms hop): Kaldi frames use ``snip_edges`` (frame ``i`` covers samples
``[160 i, 160 i + 400)``, centre ``160 i + 200``), so an utterance of ``n`` samples has
``1 + (n - 400) // 160`` frames. resemblyzer's mel (librosa ``center=True``) puts frame ``j`` at
centre ``160 j``, ``1 + n // 160`` frames; its frame ``j = i + 1`` is 40 samples (2.5 ms) from Kaldi
frame ``i``. So the LSTM runs on the whole utterance and its first output frame is dropped; pitch
is sampled at the Kaldi frame centres. Every stream is finally cut to the shortest frame count.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import parselmouth
import torch

SR = 16000
HOP = 160  # samples, 10 ms
INT16 = 32768.0  # Kaldi reads wavs in int16 units; fbank/MFCC values match compute-*-feats


def _frame_opts(opts: knf.FrameExtractionOptions) -> None:
    opts.samp_freq = SR
    opts.dither = 0.0
    opts.frame_shift_ms = 10.0
    opts.frame_length_ms = 25.0
    opts.snip_edges = True


def _run_online(computer, wav: np.ndarray) -> np.ndarray:
    computer.accept_waveform(SR, (wav * INT16).astype(np.float32))
    computer.input_finished()
    n = computer.num_frames_ready
    if n == 0:
        return np.zeros((0, 0), np.float32)
    return np.stack([np.asarray(computer.get_frame(i), np.float32) for i in range(n)])


def fbank80(wav: np.ndarray) -> np.ndarray:
    """(T, 80) Kaldi log-mel fbank, 25 ms / 10 ms, no dither."""
    opts = knf.FbankOptions()
    _frame_opts(opts.frame_opts)
    opts.mel_opts.num_bins = 80
    return _run_online(knf.OnlineFbank(opts), wav)


def mfcc40(wav: np.ndarray) -> np.ndarray:
    """(T, 40) Kaldi "hires" MFCC (mfcc_hires.conf: 40 bins, 40 ceps, 20 Hz .. Nyquist-400)."""
    opts = knf.MfccOptions()
    _frame_opts(opts.frame_opts)
    opts.mel_opts.num_bins = 40
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = -400.0
    opts.num_ceps = 40
    opts.use_energy = False
    return _run_online(knf.OnlineMfcc(opts), wav)


def pitch2(wav: np.ndarray, n_frames: int) -> np.ndarray:
    """(n_frames, 2) [log F0 interpolated through unvoiced frames, voicing 0/1] at Kaldi centres.

    Praat's autocorrelation pitch (60-500 Hz) at 10 ms steps; values are linearly interpolated
    onto the Kaldi frame centres ``0.0125 + 0.01 i`` s. An utterance with no voiced frame gets
    log(120 Hz) and voicing 0.
    """
    snd = parselmouth.Sound(wav.astype(np.float64), SR)
    pit = snd.to_pitch(time_step=0.01, pitch_floor=60.0, pitch_ceiling=500.0)
    f0 = pit.selected_array["frequency"]  # Hz, 0 = unvoiced
    xs = pit.xs()  # s, frame centres
    t = 0.0125 + 0.01 * np.arange(n_frames)
    voiced = f0 > 0
    out = np.zeros((n_frames, 2), np.float32)
    if voiced.sum() >= 1:
        out[:, 0] = np.interp(t, xs[voiced], np.log(f0[voiced]))
        out[:, 1] = np.interp(t, xs, voiced.astype(np.float64)) >= 0.5
    else:
        out[:, 0] = np.log(120.0)
    return out


# ---------------------------------------------------------------- resemblyzer VoiceEncoder


def _slaney_mel(n_mels: int, n_fft: int) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) Slaney mel filterbank with Slaney area norm (librosa's default)."""

    def hz_to_mel(f):
        f = np.asarray(f, np.float64)
        lin = 3.0 * f / 200.0
        logstep = np.log(6.4) / 27.0
        return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / logstep, lin)

    def mel_to_hz(m):
        m = np.asarray(m, np.float64)
        logstep = np.log(6.4) / 27.0
        return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), 200.0 * m / 3.0)

    fft_f = np.linspace(0.0, SR / 2.0, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(SR / 2.0), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_f[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    w = np.maximum(0.0, np.minimum(lower, upper))
    w *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return w.astype(np.float32)


_N_FFT = 400
_MEL = _slaney_mel(40, _N_FFT)
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_N_FFT) / _N_FFT)).astype(np.float32)


def resemblyzer_mel(wav: np.ndarray) -> np.ndarray:
    """(1 + n // 160, 40) power mel exactly as resemblyzer's ``wav_to_mel_spectrogram``.

    resemblyzer calls ``librosa.feature.melspectrogram(sr=16000, n_fft=400, hop_length=160,
    n_mels=40)``: periodic Hann window, ``center=True`` with zero padding (librosa >= 0.10),
    power 2, Slaney mel with area norm, no log. Its ``preprocess_wav`` first raises the level to
    -30 dBFS (increase only); we do that too but skip its VAD trimming to keep frames aligned.
    """
    rms = np.sqrt(np.mean((wav * 32767.0) ** 2)) + 1e-9
    change = -30.0 - 20.0 * np.log10(rms / 32767.0)
    if change > 0:
        wav = wav * (10.0 ** (change / 20.0))
    x = np.pad(wav.astype(np.float32), _N_FFT // 2)
    n = 1 + (len(x) - _N_FFT) // HOP
    idx = np.arange(_N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * _WINDOW, axis=1)) ** 2
    return (spec.astype(np.float32) @ _MEL.T).astype(np.float32)


@dataclass
class VoiceEncoderLayers:
    """The 3 LSTM layers + projection of resemblyzer's ``pretrained.pt``, run one layer at a time."""

    layers: list[torch.nn.LSTM]
    linear: torch.nn.Linear

    @classmethod
    def load(cls) -> VoiceEncoderLayers:
        spec = importlib.util.find_spec("resemblyzer")  # not imported: its audio.py needs librosa
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("resemblyzer is not installed (pip install --no-deps resemblyzer)")
        path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
        state = torch.load(path, map_location="cpu", weights_only=False)["model_state"]
        layers = []
        for k in range(3):
            lstm = torch.nn.LSTM(40 if k == 0 else 256, 256, 1, batch_first=True)
            lstm.load_state_dict(
                {
                    f"{n}_l0": state[f"lstm.{n}_l{k}"]
                    for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                }
            )
            layers.append(lstm.eval())
        linear = torch.nn.Linear(256, 256)
        linear.load_state_dict({"weight": state["linear.weight"], "bias": state["linear.bias"]})
        return cls(layers, linear.eval())

    @torch.inference_mode()
    def hidden_states(self, mel: np.ndarray) -> np.ndarray:
        """(T, 3, 256) outputs of each LSTM layer over the whole utterance (float32)."""
        x = torch.from_numpy(mel)[None]
        outs = []
        for lstm in self.layers:
            x, _ = lstm(x)
            outs.append(x[0])
        return torch.stack(outs, dim=1).numpy()

    @torch.inference_mode()
    def dvector(self, mel: np.ndarray, win: int = 160, step: int = 80) -> np.ndarray:
        """(256,) resemblyzer-style utterance d-vector: mean of L2-normed ReLU(linear(h_last))
        over 1.6 s partials with 50 % overlap (the package uses 1.3 partials/s), L2-normed."""
        T = mel.shape[0]
        starts = list(range(0, max(T - win, 0) + 1, step)) or [0]
        parts = np.stack(
            [np.pad(mel[s : s + win], ((0, max(0, win - (T - s))), (0, 0))) for s in starts]
        )
        x = torch.from_numpy(parts.astype(np.float32))
        h = None
        for lstm in self.layers:
            x, (h, _) = lstm(x)
        e = torch.relu(self.linear(h[-1]))
        e = e / (e.norm(dim=1, keepdim=True) + 1e-9)
        m = e.mean(0)
        return (m / (m.norm() + 1e-9)).numpy()


def extract_all(
    wav: np.ndarray, enc: VoiceEncoderLayers, dvector: bool = True
) -> tuple[dict[str, np.ndarray], dict]:
    """All four streams of one 16 kHz utterance, cut to a common frame count.

    Returns ``({"mfbe", "mfcc", "pitch", "ptm"}, info)``; ``info`` holds the frame counts before
    trimming (``ptm_minus_mfbe``) and the sanity statistics (``mean_mfbe``, ``mean_l3``, and
    ``dvec`` when ``dvector``: it costs as much as the hidden states).
    """
    fb = fbank80(wav)
    mf = mfcc40(wav)
    mel = resemblyzer_mel(wav)
    hs = enc.hidden_states(mel)[1:]  # drop frame 0: centre 0 has no Kaldi counterpart
    n = min(len(fb), len(mf), len(hs))
    pt = pitch2(wav, n)
    feats = {
        "mfbe": fb[:n],
        "mfcc": mf[:n],
        "pitch": pt,
        "ptm": hs[:n].astype(np.float16),
    }
    info = {
        "frames": n,
        "ptm_minus_mfbe": len(hs) - len(fb),
        "mean_mfbe": fb[:n].mean(0),
        "mean_l3": hs[:n, 2].mean(0),
        "dvec": enc.dvector(mel) if dvector else None,
    }
    return feats, info
