"""Scoring throughput with cached embeddings, and embedding-extraction throughput.

    python benchmarks/bench_scoring.py [--quick] [--out benchmarks/results/scoring.json]

1. 500,000 trials over 150,000 utterances (the size of VoxCeleb1-H), embeddings cached (192-d):
   e2espk's batched cosine and learned-distance scoring (``e2espk.scoring.scores``) against a
   one-trial-at-a-time loop, the way older tools score (look up two embeddings, score the pair,
   next). The loop is timed on a random subset of the trials and its per-trial time scaled to
   the full list; the batched path scores all 500,000 trials. Ratio = loop time / batched time.
   Each batched path is also set against this machine's physical floor, measured in the same
   run: for cosine, gathering the two embedding rows of every trial into the reused buffers and
   nothing else (random reads from a 115 MB table); for the learned distance, the verifier's
   matrix-product FLOPs per pair at the float32 GEMM peak of a 4096 x 4096 matmul. The floor
   caps the speedup any exact batched path can reach against the loop on this machine.
2. Embedding extraction (``e2espk.inference.extraction.extract``, 4-s windows, batches of 64)
   with the default model of train.py (fusion concat, ECAPA-TDNN 512, attentive statistics, 192-d) on utterances
   of 4-8 s with PTM 13 x 768 float16 + 81 handcrafted dims, in utterances/s on this CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from _bench_util import environment, load_average, table, wait_for_quiet
from tqdm import tqdm

from e2espk.data.corpus import Corpus, CorpusWriter, StreamSpec
from e2espk.data.features import resolve_layout
from e2espk.data.transforms import Normalization
from e2espk.fileio import write_json_atomic
from e2espk.inference.contract import EmbeddingContract, ExtractionOptions
from e2espk.inference.extraction import extract
from e2espk.models.speaker_model import build_speaker_model
from e2espk.models.verification import build_pair_verifier, gathered_pair_chunks
from e2espk.scoring.scores import cosine_scores, learned_scores
from e2espk.training.config import TrainConfig


def timed(fn, *args):  # type: ignore[no-untyped-def]
    """(wall seconds, result) of one call."""
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


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


def read_floor(embeddings: np.ndarray, n_trials: int) -> float:
    """Seconds to read both rows of every trial once at the sequential read bandwidth of this
    machine (measured by summing the whole table on all torch threads): the memory floor."""
    table = torch.from_numpy(embeddings)
    seconds, _ = timed(table.sum)
    bytes_per_second = table.numel() * table.element_size() / seconds
    return 2 * n_trials * table.shape[1] * table.element_size() / bytes_per_second


def gather_seconds(embeddings: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray) -> float:
    """Seconds to gather both rows of every trial into reused buffers, 1,024 trials at a time
    (no arithmetic): what any gather-then-reduce cosine pays before computing anything."""
    table = torch.from_numpy(embeddings)
    rows_a, rows_b = torch.from_numpy(idx_a), torch.from_numpy(idx_b)
    seconds, _ = timed(
        lambda: sum(1 for _ in gathered_pair_chunks(table, table, rows_a, rows_b, 1024))
    )
    return seconds


def gemm_seconds_per_flop(size: int = 4096) -> float:
    """Seconds per float32 FLOP of one large square matmul on all torch threads (the inverse
    of the GEMM peak): the compute ceiling."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds, _ = timed(lambda: a @ b)
    return seconds / (2 * size**3)


def verifier_flops_per_pair(verifier: torch.nn.Module) -> int:
    """Multiply-adds x 2 of every Linear layer of every head, for one pair."""
    return sum(
        2 * m.in_features * m.out_features
        for m in verifier.modules()
        if isinstance(m, torch.nn.Linear)
    )


def summary(passes: list[dict[str, float]]) -> dict:
    """Medians over the passes of every figure, plus the spread of the speedup."""
    out = {key: statistics.median(p[key] for p in passes) for key in passes[0]}
    out["speedup_min"] = min(p["speedup"] for p in passes)
    out["speedup_max"] = max(p["speedup"] for p in passes)
    out["passes"] = passes
    return out


def bench_trials(n_utts: int, n_trials: int, loop_trials: int, rounds: int, seed: int = 0) -> dict:
    """Interleaved rounds; in each, per score type: the batched path on all trials, the loop
    on a fresh random subset, and the physical floor. Ratios are taken within a round."""
    rng = np.random.default_rng(seed)
    embeddings = rng.standard_normal((n_utts, 192)).astype(np.float32)
    idx_a = rng.integers(0, n_utts, n_trials)
    idx_b = rng.integers(0, n_utts, n_trials)
    verifier = build_pair_verifier(TrainConfig().verifier_config(), 192).eval()
    flops = verifier_flops_per_pair(verifier) * n_trials
    batched = {
        "cosine": lambda: cosine_scores(embeddings, idx_a, idx_b),
        "learned": lambda: learned_scores(verifier, embeddings, idx_a, idx_b),
    }
    loops = {"cosine": loop_cosine, "learned": partial(loop_learned, verifier)}
    floors = {
        "cosine": lambda: read_floor(embeddings, n_trials),
        "learned": lambda: flops * gemm_seconds_per_flop(),
    }
    for run in batched.values():
        run()  # warm-up: first-call allocations and thread start-up are not timed
    passes: dict[str, list[dict[str, float]]] = {name: [] for name in batched}
    for _ in tqdm(range(rounds), desc="scoring rounds"):
        for name in batched:
            subset = rng.choice(n_trials, loop_trials, replace=False)
            batched_s, scores = timed(batched[name])
            loop_s, loop_scores = timed(loops[name], embeddings, idx_a[subset], idx_b[subset])
            np.testing.assert_allclose(scores[subset], loop_scores, rtol=1e-4, atol=1e-4)
            floor_s = floors[name]()
            loop_full_s = loop_s / loop_trials * n_trials
            passes[name].append({
                "batched_s": batched_s,
                "batched_trials_per_s": n_trials / batched_s,
                "loop_s_per_trial": loop_s / loop_trials,
                "loop_s_full_list_scaled": loop_full_s,
                "speedup": loop_full_s / batched_s,
                "floor_s": floor_s,
                "batched_over_floor": batched_s / floor_s,
                "speedup_ceiling_at_floor": loop_full_s / floor_s,
            })  # fmt: skip
            if name == "cosine":  # the cost any gather-then-reduce cosine pays first
                passes[name][-1]["gather_rows_s"] = gather_seconds(embeddings, idx_a, idx_b)
    return {
        "utterances": n_utts,
        "trials": n_trials,
        "rounds": rounds,
        "loop_trials_per_round": loop_trials,
        "torch_threads": torch.get_num_threads(),
        "verifier_mflop_per_pair": verifier_flops_per_pair(verifier) / 1e6,
        "floors": {
            "cosine": "read both rows of each trial at the sequential read bandwidth",
            "learned": "verifier GEMM FLOPs at the float32 GEMM peak",
        },
        **{name: summary(p) for name, p in passes.items()},
    }


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
        # CMN over every stream, 4-s windows; batches of 64
        contract = EmbeddingContract(model.config, layout, Normalization("mean"), 4.0)
        options = ExtractionOptions(batch_size=64)
        extract(model, corpus, [0, 1], contract, options)  # warm-up
        seconds, embeddings = timed(
            lambda: extract(model, corpus, list(range(n_utts)), contract, options)
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


def report(trials: dict, extraction: dict) -> str:
    """The markdown tables printed at the end and stored in the results file."""
    rows = [
        [
            name,
            f"{r['batched_s']:.3f} s",
            f"{r['batched_trials_per_s']:,.0f}",
            f"{1e6 * r['loop_s_per_trial']:.1f} µs",
            f"{r['loop_s_full_list_scaled']:.1f} s",
            f"**{r['speedup']:,.0f}x** ({r['speedup_min']:,.0f}-{r['speedup_max']:,.0f})",
            f"{trials['floors'][name]}: {r['floor_s']:.3f} s",
            f"{r['batched_over_floor']:.2f}",
            f"{r['speedup_ceiling_at_floor']:,.0f}x",
        ]
        for name, r in ((n, trials[n]) for n in ("cosine", "learned"))
    ]
    header = ["score", f"batched, {trials['trials']:,} trials", "trials/s", "loop, per trial",
              "loop, scaled to all", "speedup (min-max)", "physical floor", "batched / floor",
              "speedup at the floor"]  # fmt: skip
    peak = trials["verifier_mflop_per_pair"] * 1e6 * trials["trials"] / trials["learned"]["floor_s"]
    return (
        f"Each column is the median over {trials['rounds']} interleaved rounds "
        f"({trials['loop_trials_per_round']:,} loop trials per round); the speedup is the median "
        "of the per-round ratios (with their min-max), not the ratio of the medians.\n\n"
        + table(header, rows)
        + f"\n\nfloat32 GEMM peak {peak / 1e9:.0f} GFLOP/s on {trials['torch_threads']} "
        f"threads; the verifier costs {trials['verifier_mflop_per_pair']:.3f} MFLOP per pair. "
        f"Gathering the two rows of every trial into buffers (no arithmetic) takes "
        f"{trials['cosine']['gather_rows_s']:.3f} s.\n\n"
        f"embedding extraction, default model: {extraction['utterances_per_s']:.2f} "
        f"utterances/s ({extraction['audio_seconds_per_s']:.1f} s of audio per s) over "
        f"{extraction['utterances']} utterances of 4-8 s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, to check the script runs"
    )
    parser.add_argument("--out", default=None, help="results JSON (default under results/)")
    args = parser.parse_args()
    out = args.out or f"benchmarks/results/scoring{'_quick' if args.quick else ''}.json"
    sizes = (15_000, 50_000, 1_000, 2, 20) if args.quick else (150_000, 500_000, 4_000, 5, 100)
    load_before = wait_for_quiet(max_wait_s=0 if args.quick else 300)
    trials = bench_trials(*sizes[:4])
    extraction = bench_extraction(sizes[4])
    tables = report(trials, extraction)
    results = {
        "command": " ".join(["python", *sys.argv]),
        "scoring": trials,
        "extraction": extraction,
        "load_average": {"before": load_before, "after": load_average()},
        "environment": environment(),
        "quick": args.quick,
        "tables": tables,
    }
    write_json_atomic(out, results)
    print(tables)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
