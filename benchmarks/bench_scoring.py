"""Scoring throughput with cached embeddings, and embedding-extraction throughput.

    python benchmarks/bench_scoring.py [--quick] [--out benchmarks/results/scoring.json]

1. 500,000 trials over 150,000 utterances (the size of VoxCeleb1-H), embeddings cached (192-d):
   e2espk's batched cosine and learned-distance scoring (``e2espk.scoring.scores``) against a
   one-trial-at-a-time loop, the way older tools score (look up two embeddings, score the pair,
   next). The loop is timed on a random subset of the trials and its per-trial time scaled to
   the full list; the batched path scores all 500,000 trials. Ratio = loop time / batched time.
2. Embedding extraction (``extract_embeddings``, 4-s windows, batches of 64) with the default
   model of train.py (fusion concat, ECAPA-TDNN 512, attentive statistics, 192-d) on utterances
   of 4-8 s with PTM 13 x 768 float16 + 81 handcrafted dims, in utterances/s on this CPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from e2espk.data.corpus import Corpus, CorpusWriter, StreamSpec
from e2espk.data.features import resolve_layout
from e2espk.fileio import write_json_atomic
from e2espk.models.speaker_model import build_speaker_model
from e2espk.models.verification import build_pair_verifier
from e2espk.scoring.embedding import extract_embeddings
from e2espk.scoring.scores import cosine_scores, learned_scores
from e2espk.training.config import TrainConfig


def timed(fn, *args, repeats: int = 1):  # type: ignore[no-untyped-def]
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def loop_cosine(embeddings: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray) -> np.ndarray:
    """One trial at a time with torch, as per-trial scoring scripts do."""
    table = torch.from_numpy(embeddings)
    out = np.empty(len(idx_a), dtype=np.float32)
    for k, (a, b) in enumerate(zip(idx_a.tolist(), idx_b.tolist(), strict=True)):
        out[k] = float(torch.nn.functional.cosine_similarity(table[a : a + 1], table[b : b + 1]))
    return out


@torch.no_grad()
def loop_learned(
    verifier: torch.nn.Module, embeddings: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray
) -> np.ndarray:
    table = torch.from_numpy(embeddings)
    out = np.empty(len(idx_a), dtype=np.float32)
    for k, (a, b) in enumerate(zip(idx_a.tolist(), idx_b.tolist(), strict=True)):
        out[k] = float(verifier.score(table[a : a + 1], table[b : b + 1]))
    return out


def bench_trials(n_utts: int, n_trials: int, loop_trials: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    embeddings = rng.standard_normal((n_utts, 192)).astype(np.float32)
    idx_a = rng.integers(0, n_utts, n_trials)
    idx_b = rng.integers(0, n_utts, n_trials)
    verifier = build_pair_verifier(TrainConfig().verifier_config(), 192).eval()
    subset = rng.choice(n_trials, loop_trials, replace=False)
    results = {
        "utterances": n_utts,
        "trials": n_trials,
        "loop_trials_timed": loop_trials,
        "torch_threads": torch.get_num_threads(),
    }
    for name, batched, loop in (
        (
            "cosine",
            lambda: cosine_scores(embeddings, idx_a, idx_b),
            lambda: loop_cosine(embeddings, idx_a[subset], idx_b[subset]),
        ),
        (
            "learned",
            lambda: learned_scores(verifier, embeddings, idx_a, idx_b),
            lambda: loop_learned(verifier, embeddings, idx_a[subset], idx_b[subset]),
        ),
    ):
        batched_s, scores = timed(batched, repeats=3)
        loop_s, loop_scores = timed(loop)
        np.testing.assert_allclose(
            scores[subset], loop_scores, rtol=1e-4, atol=1e-4
        )  # same numbers
        loop_full_s = loop_s / loop_trials * n_trials
        results[name] = {
            "batched_s": batched_s,
            "batched_trials_per_s": n_trials / batched_s,
            "loop_s_per_trial": loop_s / loop_trials,
            "loop_s_full_list_scaled": loop_full_s,
            "speedup": loop_full_s / batched_s,
        }
    return results


def make_corpus(path: Path, n_utts: int, seed: int = 0) -> Corpus:
    rng = np.random.default_rng(seed)
    specs = [StreamSpec("ptm", "ptm", (13, 768), "float16", 50.0, chunk_frames=25),
             StreamSpec("mfbe", "handcrafted", (80,), "float32", 100.0, chunk_frames=50),
             StreamSpec("pitch", "handcrafted", (1,), "float32", 100.0, chunk_frames=50)]  # fmt: skip
    with CorpusWriter(path, specs) as writer:
        for k in range(n_utts):
            frames = int(rng.integers(200, 400))  # 4-8 s at 50 Hz
            writer.add(f"spk{k % 10}", f"utt{k:05d}", {
                "ptm": rng.standard_normal((frames, 13, 768), dtype=np.float32).astype(np.float16),
                "mfbe": rng.standard_normal((2 * frames, 80), dtype=np.float32),
                "pitch": rng.standard_normal((2 * frames, 1), dtype=np.float32),
            })  # fmt: skip
    return Corpus(path)


def bench_extraction(n_utts: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        corpus = make_corpus(Path(tmp) / "c.hdf", n_utts)
        layout = resolve_layout(corpus, "fusion", "mfbe_pitch")
        model = build_speaker_model(TrainConfig().model_config(layout)).eval()
        extract_embeddings(model, corpus, layout, [0, 1], 4.0, 64)  # warm-up
        seconds, embeddings = timed(
            lambda: extract_embeddings(model, corpus, layout, list(range(n_utts)), 4.0, 64)
        )
        audio_s = float(corpus.frames("ptm").sum()) / 50.0
        corpus.close()
    return {
        "utterances": n_utts,
        "seconds": seconds,
        "utterances_per_s": n_utts / seconds,
        "audio_seconds_per_s": audio_s / seconds,
        "embedding_dim": int(embeddings.shape[1]),
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, to check the script runs"
    )
    parser.add_argument("--out", default="benchmarks/results/scoring.json")
    args = parser.parse_args()
    sizes = (15_000, 50_000, 2_000, 20) if args.quick else (150_000, 500_000, 20_000, 100)
    trials = bench_trials(*sizes[:3])
    extraction = bench_extraction(sizes[3])
    results = {
        "scoring": trials,
        "extraction": extraction,
        "machine": "2 CPU cores, no GPU",
        "quick": args.quick,
    }
    write_json_atomic(args.out, results)
    print(
        f"| score | batched: {trials['trials']:,} trials | trials/s | loop: s/trial | loop scaled to all | speedup |\n|---|---|---|---|---|---|"
    )
    for name in ("cosine", "learned"):
        r = trials[name]
        print(
            f"| {name} | {r['batched_s']:.3f} s | {r['batched_trials_per_s']:,.0f} | {1e6 * r['loop_s_per_trial']:.1f} µs | {r['loop_s_full_list_scaled']:.1f} s | {r['speedup']:,.0f}x |"
        )
    print(
        f"\nembedding extraction, default model: {extraction['utterances_per_s']:.2f} utterances/s ({extraction['audio_seconds_per_s']:.1f} s of audio per s) over {extraction['utterances']} utterances of 4-8 s"
    )
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
