"""Feature extraction from audio on CPU: real-time factor per stream and where the time goes.

    python benchmarks/bench_extract.py [--quick] [--threads 1] [--out benchmarks/results/extract.json]

Real-time factor (RTF) = processing seconds / audio seconds (lower is faster; 0.01 = 100x
faster than real time), measured on synthetic speech-like audio (harmonic tones with vibrato
over noise, 3-8 s utterances): half 16 kHz WAV, half 44.1 kHz FLAC that soxr resamples.

1. Each stage alone over every utterance: decoding (+ resampling), Kaldi log-mel, Kaldi hires
   MFCC, Praat pitch, and the PTM forward of a tiny random WavLM (3 x 32) and of a randomly
   initialised model of wavlm-base-plus's size (12 layers x 768, GroupNorm encoder), each in
   length-bucketed padded batches (``--ptm-batch-seconds``) and one utterance at a time.
2. The whole ``data_prep.py extract`` pipeline (all four streams, base-sized model, default
   batching: one utterance at a time on CPU, padded batches on CUDA), and the share of its time
   that decoding/resampling, the handcrafted streams and the model take.

No GPU figure here: run the same script on a GPU machine (``--device cuda``) for batching on/off.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
from _bench_util import environment, load_average, table, wait_for_quiet

from e2espk.extract.audio import AudioItem, decode
from e2espk.extract.config import ExtractConfig
from e2espk.extract.handcrafted import HANDCRAFTED
from e2espk.extract.pipeline import extract_corpus
from e2espk.extract.ptm import PtmRunner, plan_batches
from e2espk.fileio import write_json_atomic

BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
TINY = dict(
    hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
    conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
)  # fmt: skip


def make_audio(root: Path, count: int, seed: int = 0) -> tuple[list[AudioItem], float]:
    """``count`` speech-like files; returns their items and the total audio seconds."""
    rng = np.random.default_rng(seed)
    items, total = [], 0.0
    for k in range(count):
        rate = 16000 if k % 2 == 0 else 44100
        seconds = float(rng.uniform(3.0, 8.0))
        t = np.arange(int(seconds * rate)) / rate
        f0 = 100 + 60 * rng.random() + 8 * np.sin(2 * np.pi * 4 * t)
        phase = 2 * np.pi * np.cumsum(f0) / rate
        wave = sum(np.sin(h * phase) / h for h in range(1, 10)) * (
            0.5 + 0.5 * np.sin(2 * np.pi * 2 * t) ** 2
        )
        wave = 0.2 * wave / np.abs(wave).max() + 0.005 * rng.standard_normal(len(t))
        path = root / "audio" / f"spk{k % 4}" / f"u{k:03d}.{'wav' if rate == 16000 else 'flac'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, wave.astype(np.float32), rate)
        items.append(AudioItem(f"spk{k % 4}/u{k:03d}", str(path)))
        total += seconds
    return items, total


def best_of(repeats: int, fn: Callable[[], Any]) -> float:
    """Fastest wall time of ``repeats`` calls (the least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def save_model(directory: Path, size: dict) -> Path:
    from transformers import WavLMConfig, WavLMModel

    torch.manual_seed(0)
    WavLMModel(WavLMConfig(feat_extract_norm="group", **size)).eval().save_pretrained(directory)
    return directory


def ptm_passes(
    runner: PtmRunner, wavs: list[np.ndarray], batch_seconds: float
) -> dict[str, Callable[[], Any]]:
    batches = plan_batches([len(w) for w in wavs], int(batch_seconds * 16000))
    return {
        "batched": lambda: [runner([wavs[i] for i in batch]) for batch in batches],
        "one at a time": lambda: [runner([wav]) for wav in wavs],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 utterances, 1 repeat")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ptm-batch-seconds", type=float, default=60.0)
    parser.add_argument("--out", default="benchmarks/results/extract.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    count, repeats = (8, 1) if args.quick else (16, 2)
    load_before = wait_for_quiet()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        items, audio_s = make_audio(root, count)
        stages: dict[str, float] = {}
        stages["decode + resample"] = best_of(repeats, lambda: [decode(i) for i in items])
        wavs = [decode(i) for i in items]
        for name in HANDCRAFTED.names():
            stream = HANDCRAFTED.get(name)
            stages[name] = best_of(repeats, lambda s=stream: [s.compute(w) for w in wavs])
        models = {"tiny WavLM 3x32": TINY, "base-size WavLM 12x768": BASE}
        for label, size in models.items():
            runner = PtmRunner(str(save_model(root / label.split()[0], size)), None, device)
            for mode, fn in ptm_passes(runner, wavs, args.ptm_batch_seconds).items():
                stages[f"ptm {label}, {mode}"] = best_of(repeats, fn)
        config = ExtractConfig.from_flat(dict(
            audio_dir=str(root / "audio"), streams=["ptm", "mfbe", "mfcc", "pitch"],
            ptm_model=str(root / "base-size"), device=args.device, out_path=str(root / "hdf"), progress=False, overwrite=True,
        ))  # fmt: skip
        start = time.perf_counter()
        extract_corpus(config)
        pipeline_s = time.perf_counter() - start
    pipeline_mode = "batched" if device.type == "cuda" else "one at a time"  # the default
    rows = [
        [name, f"{seconds:.2f}", f"{seconds / audio_s:.4f}"] for name, seconds in stages.items()
    ]
    rows.append(
        [
            "whole pipeline (4 streams, base-size model)",
            f"{pipeline_s:.2f}",
            f"{pipeline_s / audio_s:.4f}",
        ]
    )
    parts = {
        "decode + resample": stages["decode + resample"],
        "handcrafted (mfbe+mfcc+pitch)": sum(stages[n] for n in HANDCRAFTED.names()),
        "PTM forward": stages[f"ptm base-size WavLM 12x768, {pipeline_mode}"],
    }
    rest = max(pipeline_s - sum(parts.values()), 0.0)
    shares = [[name, f"{100 * s / pipeline_s:.1f}"] for name, s in parts.items()]
    shares.append(["model load, writing, other", f"{100 * rest / pipeline_s:.1f}"])
    text = (
        f"{count} utterances, {audio_s:.1f} s of audio, {args.threads} thread(s), device {args.device}\n\n"
        + table(["stage", "seconds", "RTF"], rows)
        + "\n\n"
        + table(["share of the pipeline", "%"], shares)
    )
    print(text)
    write_json_atomic(
        args.out,
        {
            "command": " ".join(["python", *sys.argv]),
            "environment": environment(),
            "load_average": {"before": load_before, "after": load_average()},
            "audio_seconds": audio_s,
            "utterances": count,
            "stage_seconds": stages,
            "pipeline_seconds": pipeline_s,
            "rtf": {name: s / audio_s for name, s in stages.items()},
            "median_utterance_seconds": statistics.median(len(w) / 16000 for w in wavs),
            "table": text,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
