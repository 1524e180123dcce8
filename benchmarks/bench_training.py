#!/usr/bin/env python
"""Training throughput on CPU: the crop loader against the raw read limit, and step time.

    python benchmarks/bench_training.py [--quick] [--out benchmarks/results/training.json]

1. loader: crops/s and MB/s of the real ``training_loader`` (CropDataset + SpeakerBatchSampler,
   fusion layout ptm + mfbe_pitch, 2-s crops = 100 PTM + 200 handcrafted frames, batch 64 =
   32 speakers x 2) for --workers 0, 1, 2, after warm-up; worker start-up (time to the first
   batch) is reported separately and excluded from the rate. The limit is the same bytes per
   crop read with h5py at random offsets from ONE contiguous dataset per stream (the
   definition of bench_corpus_io.py, with the handcrafted streams added), one process.
   On a generated corpus with realistic PTM dims (13 x 768 float16) and on the demo corpus
   (13 x 64).
2. steps: training steps/s of the default model (TrainConfig defaults: fusion concat,
   ecapa_tdnn C=512, attentive stats, latent 192, batch 64, 2-s crops) and of ecapa_tdnn_tiny,
   with pre-fetched batches in memory vs through the loader (workers 0 and 2), plus where the
   step time goes (staged forward/backward per model part, and the top torch ops).

Every figure is measured in the same run. ``--quick`` runs tiny sizes to check the script
works; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without pip install -e
sys.path.insert(0, str(Path(__file__).resolve().parent))

import h5py
import numpy as np
import torch
from _bench_util import (
    DEMO_HDF,
    REPO,
    environment,
    load_average,
    setup_logging,
    table,
    wait_for_quiet,
)
from _train_steps import build_optimization, profile_ops, staged_step_times, time_steps

from e2espk.data.corpus import Corpus, CorpusWriter, StreamSpec
from e2espk.data.features import InputLayout, resolve_layout
from e2espk.data.loader import CropDataset, SpeakerBatchSampler, training_loader
from e2espk.fileio import write_json_atomic
from e2espk.training.config import TrainConfig

LOG = logging.getLogger("bench.training")
SEED = 1234
SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "corpus": {"speakers": 64, "utts": 4, "seconds": (4.0, 8.0)},
        "loader": {"warmup": 5, "batches": 30, "repeats": 2},
        "steps": {"default": (2, 6), "tiny": (3, 20), "loader_workers": (0, 2), "profile": 2},
    },
    "quick": {
        "corpus": {"speakers": 32, "utts": 2, "seconds": (2.5, 3.5)},
        "loader": {"warmup": 1, "batches": 3, "repeats": 1},
        "steps": {"default": (1, 1), "tiny": (1, 2), "loader_workers": (0, 2), "profile": 1},
    },
}


# ----------------------------------------------------------------------------- corpora
def write_realistic_corpus(path: Path, cfg: dict[str, Any]) -> Path:
    """64 speakers x 4 utterances of 4-8 s: PTM 13 x 768 float16 at 50 Hz + mfbe/pitch at 100 Hz.

    Chunking as data_prep's default (0.5 s). Frames are drawn from a pool of random frames
    (fresh normals for every frame would take minutes; the reads do not care).
    """
    rng = np.random.default_rng(SEED)
    pool = rng.standard_normal((512, 13, 768), dtype=np.float32).astype(np.float16)
    streams = [
        StreamSpec("ptm", "ptm", (13, 768), "float16", 50.0, tuple(range(13)), "bench", 25),
        StreamSpec("mfbe", "handcrafted", (80,), "float32", 100.0, None, None, 50),
        StreamSpec("pitch", "handcrafted", (1,), "float32", 100.0, None, None, 50),
    ]
    low, high = cfg["seconds"]
    with CorpusWriter(path, streams, overwrite=True) as writer:
        for spk, utt in itertools.product(range(cfg["speakers"]), range(cfg["utts"])):
            ptm_frames = int(rng.uniform(low, high) * 50)
            writer.add(
                f"spk{spk:03d}",
                f"spk{spk:03d}-utt{utt}",
                {
                    "ptm": pool[rng.integers(0, len(pool), ptm_frames)],
                    "mfbe": rng.standard_normal((2 * ptm_frames, 80), dtype=np.float32),
                    "pitch": rng.standard_normal((2 * ptm_frames, 1), dtype=np.float32),
                },
            )
    return path


def write_raw_copy(corpus_path: Path, path: Path, streams: tuple[str, ...]) -> Path:
    """The corpus' frames of each stream as ONE contiguous dataset (all utterances end to end)."""
    corpus = Corpus(corpus_path)
    with h5py.File(path, "w") as out:
        for name in streams:
            spec = corpus.streams[name]
            total = int(corpus.frames(name).sum())
            dataset = out.create_dataset(name, shape=(total, *spec.dims), dtype=spec.dtype)
            at = 0
            for row in range(len(corpus)):  # no chunks= -> contiguous layout
                block = corpus.read(row, name)
                dataset[at : at + len(block)] = block
                at += len(block)
    corpus.close()
    return path


# ----------------------------------------------------------------------------- 1. loader
class FixedLengthSampler(SpeakerBatchSampler):
    """The real P x K sampler, run for ``n_batches`` batches in one pass (the corpus-sized
    epochs of a 256-utterance corpus would be 4 batches, and every epoch restarts the
    worker pipeline)."""

    def __init__(self, offsets: np.ndarray, batch_size: int, k: int, seed: int, n: int) -> None:
        super().__init__(offsets, batch_size, k, seed)
        self.n_batches = n

    def __len__(self) -> int:
        return self.n_batches


def crop_layout(corpus: Corpus) -> tuple[InputLayout, float]:
    """The fusion layout (ptm + mfbe_pitch) and TrainConfig's default crop (200 frames @ 100 Hz)."""
    layout = resolve_layout(corpus, "fusion", "mfbe_pitch")
    return layout, TrainConfig(train_hdf_file="x").crop_seconds(layout)


def crop_bytes(corpus: Corpus, layout: InputLayout, crop_s: float) -> dict[str, int]:
    """Stored bytes of one crop per stream (what is read from the file)."""
    out = {}
    for name in layout.streams():
        spec = corpus.streams[name]
        frames = round(crop_s * (spec.frame_rate_hz or 1.0))
        out[name] = frames * int(np.prod(spec.dims)) * np.dtype(spec.dtype).itemsize
    return out


def loader_rate(corpus_path: Path, workers: int, sizes: dict[str, int]) -> dict[str, Any]:
    """Crops/s of ``training_loader`` after warm-up; start-up = time to the first batch."""
    corpus = Corpus(corpus_path)
    layout, crop_s = crop_layout(corpus)
    n = sizes["warmup"] + sizes["batches"]
    sampler = FixedLengthSampler(corpus.speaker_offsets, 64, 2, SEED, n)
    loader = training_loader(CropDataset(corpus, layout, crop_s, "mean"), sampler, workers)
    begin = time.perf_counter()
    batches = iter(loader)
    next(batches)
    startup = time.perf_counter() - begin
    for _ in range(sizes["warmup"] - 1):
        next(batches)
    begin = time.perf_counter()
    count = sum(1 for _ in batches)
    elapsed = time.perf_counter() - begin
    assert count == sizes["batches"], (count, sizes["batches"])
    del batches, loader  # stops persistent workers
    corpus.close()
    return {"first_batch_s": startup, "seconds": elapsed, "crops": count * 64}


def raw_rate(raw_path: Path, corpus_path: Path, n_crops: int) -> dict[str, Any]:
    """The limit: the same bytes per crop, h5py slices at random offsets, contiguous datasets."""
    corpus = Corpus(corpus_path)
    layout, crop_s = crop_layout(corpus)
    lengths = {
        name: round(crop_s * corpus.streams[name].frame_rate_hz) for name in layout.streams()
    }
    corpus.close()
    rng = np.random.default_rng(SEED + 1)
    with h5py.File(raw_path, "r") as handle:
        datasets = {name: handle[name] for name in lengths}
        starts = {
            name: rng.integers(0, datasets[name].shape[0] - length, n_crops + 10)
            for name, length in lengths.items()
        }
        for k in range(10):  # warm-up
            for name, length in lengths.items():
                datasets[name][starts[name][k] : starts[name][k] + length]
        begin = time.perf_counter()
        for k in range(10, n_crops + 10):
            for name, length in lengths.items():
                datasets[name][starts[name][k] : starts[name][k] + length]
        elapsed = time.perf_counter() - begin
    return {"seconds": elapsed, "crops": n_crops}


def run_loader_part(
    corpora: dict[str, Path], raws: dict[str, Path], sizes: dict[str, int]
) -> list[dict[str, Any]]:
    rows = []
    for label, path in corpora.items():
        corpus = Corpus(path)
        layout, crop_s = crop_layout(corpus)
        per_crop = crop_bytes(corpus, layout, crop_s)
        corpus.close()
        mb = sum(per_crop.values()) / 1e6
        n_crops = sizes["batches"] * 64
        raw_runs = [raw_rate(raws[label], path, n_crops) for _ in range(sizes["repeats"])]
        raw = statistics.median(r["crops"] / r["seconds"] for r in raw_runs)
        result: dict[str, Any] = {
            "corpus": label,
            "crop_bytes": per_crop,
            "crop_mb": mb,
            "raw_crops_per_s": raw,
            "raw_mb_per_s": raw * mb,
            "load_before": load_average(),
            "workers": {},
        }
        for workers in (0, 1, 2):
            runs = [loader_rate(path, workers, sizes) for _ in range(sizes["repeats"])]
            rate = statistics.median(r["crops"] / r["seconds"] for r in runs)
            result["workers"][workers] = {
                "crops_per_s": rate,
                "mb_per_s": rate * mb,
                "batches_per_s": rate / 64,
                "ratio_to_raw": rate / raw,
                "first_batch_s": statistics.median(r["first_batch_s"] for r in runs),
                "runs": runs,
            }
            LOG.info("loader %s workers=%d: %.0f crops/s (raw %.0f)", label, workers, rate, raw)
        result["load_after"] = load_average()
        rows.append(result)
    return rows


# ----------------------------------------------------------------------------- 2. steps
def prefetch(corpus_path: Path, n: int) -> list[dict[str, torch.Tensor]]:
    corpus = Corpus(corpus_path)
    layout, crop_s = crop_layout(corpus)
    sampler = FixedLengthSampler(corpus.speaker_offsets, 64, 2, SEED + 2, n)
    return list(training_loader(CropDataset(corpus, layout, crop_s, "mean"), sampler, 0))


def step_case(label: str, path: Path, backbone: str, sizes: dict[str, Any]) -> dict[str, Any]:
    """In-memory vs loader step rate and the step-time breakdown of one model on one corpus."""
    warmup, steps = sizes["default" if backbone == "ecapa_tdnn" else "tiny"]
    config = TrainConfig.from_flat(
        {"train_hdf_file": str(path), "backbone": backbone, "progress": False}
    )
    batches = prefetch(path, min(warmup + steps, 4))
    opt, n_params = build_optimization(config)
    wait_for_quiet()
    load_before = load_average()
    memory = time_steps(opt, itertools.cycle(batches), warmup, steps)
    result: dict[str, Any] = {
        "corpus": label,
        "backbone": backbone,
        "parameters": n_params,
        "in_memory": memory,
        "loader": {},
    }
    for workers in sizes["loader_workers"]:
        corpus = Corpus(path)
        layout, crop_s = crop_layout(corpus)
        sampler = FixedLengthSampler(corpus.speaker_offsets, 64, 2, SEED + 3, warmup + steps + 2)
        loader = training_loader(CropDataset(corpus, layout, crop_s, "mean"), sampler, workers)
        result["loader"][workers] = time_steps(opt, iter(loader), warmup, steps)
        del loader
    result["stages"] = staged_step_times(opt, batches, steps)
    result["top_ops"] = profile_ops(opt, batches, sizes["profile"])
    result["load"] = [load_before, load_average()]
    LOG.info(
        "steps %s %s: %.2f steps/s in memory, loader %s",
        label,
        backbone,
        memory["steps_per_s"],
        {w: round(r["steps_per_s"], 2) for w, r in result["loader"].items()},
    )
    return result


# ----------------------------------------------------------------------------- report
def loader_markdown(rows: list[dict[str, Any]]) -> str:
    header = [
        "corpus (crop MB)",
        "raw h5py limit crops/s (MB/s)",
        *[f"workers={w} crops/s (MB/s)" for w in (0, 1, 2)],
        "loader/raw (w=0, 1, 2)",
        "first batch s (w=0, 1, 2)",
        "load avg before, after",
    ]
    body = []
    for r in rows:
        w = r["workers"]
        body.append(
            [
                f"{r['corpus']} ({r['crop_mb']:.3f})",
                f"{r['raw_crops_per_s']:,.0f} ({r['raw_mb_per_s']:,.0f})",
                *[f"{w[k]['crops_per_s']:,.0f} ({w[k]['mb_per_s']:,.0f})" for k in (0, 1, 2)],
                ", ".join(f"{w[k]['ratio_to_raw']:.2f}" for k in (0, 1, 2)),
                ", ".join(f"{w[k]['first_batch_s']:.2f}" for k in (0, 1, 2)),
                f"{r['load_before']:.1f}, {r['load_after']:.1f}",
            ]
        )
    return table(header, body)


def steps_markdown(rows: list[dict[str, Any]]) -> str:
    workers = sorted({w for r in rows for w in r["loader"]})
    header = [
        "model @ corpus",
        "params",
        "in memory steps/s (s/step)",
        *[f"loader w={w} steps/s" for w in workers],
        "loader-only batches/s (w=0)",
        "bound",
        "load avg before, after",
    ]
    body = []
    for r in rows:
        mem = r["in_memory"]
        loads = [r["loader"][w]["steps_per_s"] for w in workers]
        body.append(
            [
                f"{r['backbone']} @ {r['corpus']}",
                f"{r['parameters'] / 1e6:.2f} M",
                f"{mem['steps_per_s']:.2f} ({mem['seconds_per_step']:.2f})",
                *[f"{v:.2f}" for v in loads],
                f"{r.get('loader_batches_per_s', float('nan')):.2f}",
                r.get("bound", ""),
                f"{r['load'][0]:.1f}, {r['load'][1]:.1f}",
            ]
        )
    return table(header, body)


def stages_markdown(rows: list[dict[str, Any]]) -> str:
    names = list(rows[0]["stages"]["share"])
    header = ["model @ corpus", "staged s/step", *names]
    body = [
        [
            f"{r['backbone']} @ {r['corpus']}",
            f"{r['stages']['total_s']:.3f}",
            *[f"{100 * r['stages']['share'][n]:.0f} %" for n in names],
        ]
        for r in rows
    ]
    return table(header, body)


def ops_markdown(rows: list[dict[str, Any]]) -> str:
    body = []
    for r in rows:
        ops = ", ".join(f"{o['name']} {100 * o['share']:.0f} %" for o in r["top_ops"][:5])
        body.append([f"{r['backbone']} @ {r['corpus']}", ops])
    return table(["model @ corpus", "top ops by self CPU time (torch.profiler)"], body)


def classify(rows: list[dict[str, Any]], loader_rows: list[dict[str, Any]]) -> None:
    """Say what bounds each case: compute when the loader alone is much faster than a step."""
    loader_w0 = {r["corpus"]: r["workers"][0]["batches_per_s"] for r in loader_rows}
    for r in rows:
        batches_per_s = loader_w0.get(r["corpus"])
        r["loader_batches_per_s"] = batches_per_s
        if batches_per_s is None:
            continue
        compute = r["in_memory"]["steps_per_s"]
        ratio = batches_per_s / compute
        r["loader_over_compute"] = ratio
        r["bound"] = (
            f"compute ({ratio:.0f}x)"
            if ratio > 3
            else ("loading" if ratio < 1 else f"both ({ratio:.1f}x)")
        )


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script works")
    parser.add_argument("--out", type=Path, help="default benchmarks/results/training[_quick].json")
    parser.add_argument("--work-dir", type=Path, help="where the 13x768 corpus is generated")
    parser.add_argument("--only", choices=["loader", "steps"], action="append", help="parts to run")
    parser.add_argument(
        "--no-wait", action="store_true", help="do not wait for load average <= 1.3"
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        metavar="BACKBONE@CORPUS",
        help="step cases to measure, e.g. ecapa_tdnn_tiny@demo ecapa_tdnn@13x768 (default all)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="replace only what was measured in the existing --out file (re-measure a case "
        "another process disturbed)",
    )
    return parser.parse_args(argv)


def render(results: dict[str, Any]) -> str:
    """All tables of a results dict (also after --merge replaced some rows)."""
    tables = []
    if results.get("loader"):
        tables.append(
            "### Loader throughput (batch 64, 2-s crops, ptm + mfbe + pitch)\n\n"
            + loader_markdown(results["loader"])
        )
    rows = results.get("steps")
    if rows:
        tables.append("### Training steps/s (CPU, batch 64)\n\n" + steps_markdown(rows))
        tables.append(
            "### Where a step goes (staged forward+backward, in memory)\n\n" + stages_markdown(rows)
        )
        tables.append("### Top ops\n\n" + ops_markdown(rows))
    commands = [results["command"], *results.get("reruns", [])]
    return "\n\n".join(tables) + "\n\nCommands: " + "; ".join(f"`{c}`" for c in commands) + "\n"


def measure(args: argparse.Namespace, sizes: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run the parts and cases asked for; returns the new results."""
    results: dict[str, Any] = {}
    parts = args.only or ["loader", "steps"]
    LOG.info("writing the 13x768 corpus in %s", work)
    t0 = time.perf_counter()
    big = write_realistic_corpus(work / "ptm768.hdf", sizes["corpus"])
    results["corpus_768"] = {"write_s": time.perf_counter() - t0, "file_bytes": big.stat().st_size}
    corpora = {"13x768": big, "demo 13x64": DEMO_HDF / "demo_train.hdf"}
    if "loader" in parts:
        raws = {
            label: write_raw_copy(path, work / f"raw-{k}.h5", ("ptm", "mfbe", "pitch"))
            for k, (label, path) in enumerate(corpora.items())
        }
        results["load_at_loader_start"] = wait_for_quiet()
        results["loader"] = run_loader_part(corpora, raws, sizes["loader"])
    if "steps" in parts:
        cases = [
            (backbone, label)
            for backbone in ("ecapa_tdnn", "ecapa_tdnn_tiny")
            for label in corpora
            if not args.cases or f"{backbone}@{label.split()[0]}" in args.cases
        ]
        results["steps"] = [
            step_case(label, corpora[label], backbone, sizes["steps"]) for backbone, label in cases
        ]
    return results


def load_results(path: Path) -> dict[str, Any]:
    """A results file, with the worker-count keys JSON turned into strings made ints again."""
    results = json.loads(path.read_text())
    for row in results.get("loader", []):
        row["workers"] = {int(k): v for k, v in row["workers"].items()}
    for row in results.get("steps", []):
        row["loader"] = {int(k): v for k, v in row["loader"].items()}
    return results


def merge(old: dict[str, Any], new: dict[str, Any], command: str) -> dict[str, Any]:
    """Replace the loader part / step rows that were measured again; keep the rest."""
    merged = dict(old)
    if "loader" in new:
        merged["loader"] = new["loader"]
        merged["load_at_loader_start"] = new["load_at_loader_start"]
    key = lambda row: (row["backbone"], row["corpus"])  # noqa: E731
    fresh = {key(row): row for row in new.get("steps", [])}
    merged["steps"] = [fresh.pop(key(row), row) for row in old.get("steps", [])]
    merged["steps"] += list(fresh.values())
    merged["reruns"] = [*old.get("reruns", []), command]
    return merged


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    logging.getLogger("e2espk").setLevel(logging.WARNING)
    args = parse_args(argv)
    sizes = SIZES["quick" if args.quick else "full"]
    demo = DEMO_HDF / "demo_train.hdf"
    if not demo.exists():
        print(
            f"missing {demo}: build the demo corpus first (benchmarks/README.md)", file=sys.stderr
        )
        return 2
    if args.no_wait:
        globals()["wait_for_quiet"] = lambda *a, **k: load_average()
    out = (
        args.out
        or REPO / "benchmarks" / "results" / f"training{'_quick' if args.quick else ''}.json"
    )
    command = " ".join(
        ["python benchmarks/bench_training.py", *(sys.argv[1:] if argv is None else argv)]
    )
    root = args.work_dir or Path(tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix="e2espk-bench-training-", dir=root))
    begin = time.perf_counter()
    try:
        new = measure(args, sizes, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    new["wall_s"] = time.perf_counter() - begin
    if args.merge and out.exists():
        results = merge(load_results(out), new, command)
    else:
        results = {
            "command": command,
            "quick": args.quick,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "environment": environment(),
            "sizes": sizes,
            **new,
        }
    if results.get("steps"):
        classify(results["steps"], results.get("loader", []))
    results["markdown"] = render(results)
    write_json_atomic(out, results)
    print(results["markdown"])
    print(f"wrote {out} ({new['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
