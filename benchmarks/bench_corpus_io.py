#!/usr/bin/env python
"""Corpus I/O benchmark: open time, random-crop throughput and disk size of e2espk corpora.

    python benchmarks/bench_corpus_io.py [--quick] [--work-dir DIR] [--keep]
                                         [--out benchmarks/results/corpus_io.json]

Every figure is a ratio measured in the same run against a baseline or a physical limit
(see benchmarks/README.md):

1. open: ``Corpus(path)`` + ``speaker_utterances()`` on >= 100,000 utterances vs the naive
   h5py group walk, each repeat in a fresh process; plus write rate and per-read fixed costs.
2. crops: 100-frame crops of 13 x 768 PTM states through ``Corpus.read`` vs the same bytes
   read from ONE contiguous HDF5 dataset (the limit) and a numpy copy from RAM.
3. disk: bytes per hour of audio written by the real ``pack_corpus`` vs the raw payload.

``--quick`` runs tiny sizes (< 1 minute) to check that the script still works; its numbers
mean nothing. Not part of the test suite.
"""

from __future__ import annotations

import os

# Single-threaded I/O is measured; idle OpenBLAS threads spinning on 2 cores would add noise.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without pip install -e

import h5py
import numpy as np
from _corpus_io_report import crops_table, disk_table, environment, open_table, whatif_table
from _crop_reads import default_cases, frame_pool, run_crop_benchmark
from tqdm import tqdm

from e2espk.data.corpus import Corpus, CorpusWriter, StreamSpec
from e2espk.fileio import write_json_atomic

REPO = Path(__file__).resolve().parents[1]
SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "open": {"speakers": 5000, "utts": 20, "corpus_repeats": 7, "naive_repeats": 3},
        "small_reads": 2000,
        "crops": {"crops_per_pass": 60, "passes": 10, "warmup": 5, "pool_frames": 2048},
        "disk": {"utts": 60, "speakers": 6, "seconds": (5.0, 7.0)},
    },
    "quick": {
        "open": {"speakers": 200, "utts": 10, "corpus_repeats": 3, "naive_repeats": 2},
        "small_reads": 200,
        "crops": {"crops_per_pass": 15, "passes": 3, "warmup": 2, "pool_frames": 256},
        "disk": {"utts": 6, "speakers": 2, "seconds": (5.0, 7.0)},
    },
}
SEED = 1234
OPEN_STREAMS = [  # tiny features: opening reads /index only, so feature size must not matter
    StreamSpec("ptm", "ptm", (2, 8), "float16", 50.0, (0, 1), None, chunk_frames=25),
    StreamSpec("mfbe", "handcrafted", (4,), "float32", 100.0, None, None, chunk_frames=50),
]
OPEN_FRAMES = {"ptm": 5, "mfbe": 10}  # ptm [5, 2, 8] float16, mfbe [10, 4] float32


# ----------------------------------------------------------------------------- part 1: open
def write_open_corpus(path: Path, speakers: int, utts: int) -> dict[str, Any]:
    """Write speakers x utts tiny utterances through CorpusWriter; time it."""
    arrays = {s.name: np.zeros(s.array_shape(OPEN_FRAMES[s.name]), s.dtype) for s in OPEN_STREAMS}
    total = speakers * utts
    start = time.perf_counter()
    bar = tqdm(total=total, desc="write open-test corpus", unit="utt", mininterval=1)
    with CorpusWriter(path, OPEN_STREAMS, overwrite=True) as writer, bar:
        for spk in range(speakers):
            for utt in range(utts):  # VoxCeleb-like ids with "/" (escaped group names)
                writer.add(f"id{spk:05d}", f"id{spk:05d}/v{utt:03d}/00001", arrays)
            bar.update(utts)
    elapsed = time.perf_counter() - start
    payload = sum(np.prod(a.shape) * a.itemsize for a in arrays.values()) * total
    size = path.stat().st_size
    return {
        "utterances": total,
        "speakers": speakers,
        "write_s": elapsed,
        "utts_per_s": total / elapsed,
        "file_bytes": size,
        "bytes_per_utt": size / total,
        "payload_bytes_per_utt": payload / total,
    }


def metadata_whatif(work: Path, speakers: int, utts: int) -> dict[str, float]:
    """Bytes per utterance of the same group/dataset layout written by plain h5py, per libver.

    "earliest" is what CorpusWriter writes (h5py's default); "v110" needs HDF5 >= 1.10 to
    read and stores groups and chunk indexes in the newer, smaller formats.
    """
    arrays = {s.name: np.zeros(s.array_shape(OPEN_FRAMES[s.name]), s.dtype) for s in OPEN_STREAMS}
    chunks = {name: array.shape for name, array in arrays.items()}
    sizes = {}
    for libver in ("earliest", "v110"):
        path = work / f"metadata-{libver}.h5"
        with h5py.File(path, "w", libver=libver) as handle:
            for spk in range(speakers):
                speaker = handle.require_group(f"speakers/id{spk:05d}")
                for utt in range(utts):
                    group = speaker.create_group(f"id{spk:05d}%2Fv{utt:03d}%2F00001")
                    for name, array in arrays.items():
                        group.create_dataset(name, data=array, chunks=chunks[name])
        sizes[f"{libver}_bytes_per_utt"] = path.stat().st_size / (speakers * utts)
        path.unlink()
    return sizes


def child_open(mode: str, path: str) -> dict[str, float]:
    """One cold-ish measurement in a fresh process (page cache warm, no HDF5 state).

    Times are wall clock (``*_s``) and CPU of this process (``cpu_s``); on a busy machine the
    CPU figure is the stable one.
    """
    begin, cpu = time.perf_counter(), time.process_time()
    if mode == "corpus":
        corpus = Corpus(path)
        opened = time.perf_counter()
        mapping = corpus.speaker_utterances()
        done = time.perf_counter()
        walk_n = sum(len(rows) for rows in mapping.values())
        times = {"open_s": opened - begin, "speaker_map_s": done - opened}
    else:
        with h5py.File(path, "r") as handle:
            speakers = handle["speakers"]
            if mode == "naive_list":
                walk: dict[str, Any] = {spk: list(speakers[spk]) for spk in speakers}
            else:  # naive: ids and frame counts, what a speaker sampler needs
                walk = {}
                for spk in speakers:
                    group = speakers[spk]
                    walk[spk] = {utt: group[utt]["ptm"].shape[0] for utt in group}
            done = time.perf_counter()
        walk_n, times = sum(len(utts) for utts in walk.values()), {}
    cpu = time.process_time() - cpu
    return {**times, "total_s": done - begin, "cpu_s": cpu, "n": walk_n}


def _in_child(mode: str, path: Path) -> dict[str, float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-open", mode, str(path)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def small_read_costs(path: Path, n_reads: int) -> dict[str, float]:
    """CPU µs per read on the big corpus: path lookup + dataset open vs the read itself."""
    corpus = Corpus(path)
    rows = np.random.default_rng(SEED).integers(0, len(corpus), n_reads).tolist()
    datasets = [corpus.dataset(row, "ptm") for row in rows]
    refs = [dataset.ref for dataset in datasets]
    handle = corpus.handle
    steps = {
        "corpus_read_us": lambda i: corpus.read(rows[i], "ptm"),
        "open_by_path_us": lambda i: corpus.dataset(rows[i], "ptm"),
        "open_by_object_ref_us": lambda i: handle[refs[i]],
        "read_preopened_us": lambda i: datasets[i][()],
    }
    timings = {}
    for name, step in steps.items():
        begin = time.process_time()
        for index in range(n_reads):
            step(index)
        timings[name] = (time.process_time() - begin) / n_reads * 1e6
    corpus.close()
    return timings


def run_open_benchmark(work: Path, sizes: dict[str, Any]) -> dict[str, Any]:
    cfg = sizes["open"]
    path = work / "open-100k.hdf"
    result: dict[str, Any] = {"write": write_open_corpus(path, cfg["speakers"], cfg["utts"])}
    runs: dict[str, list[dict[str, float]]] = {"corpus": [], "naive": [], "naive_list": []}
    repeats = {"corpus": cfg["corpus_repeats"], "naive": cfg["naive_repeats"]}
    repeats["naive_list"] = cfg["naive_repeats"]
    schedule = [m for r in range(max(repeats.values())) for m in runs if r < repeats[m]]
    for mode in tqdm(schedule, desc="open repeats (fresh processes)", unit="run"):
        runs[mode].append(_in_child(mode, path))
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}
    result.update(
        {
            "corpus_open_s": med["corpus"]["open_s"],
            "speaker_map_s": med["corpus"]["speaker_map_s"],
            "corpus_total_s": med["corpus"]["total_s"],
            "naive_walk_s": med["naive"]["total_s"],
            "naive_list_only_s": med["naive_list"]["total_s"],
            "corpus_cpu_s": med["corpus"]["cpu_s"],
            "naive_walk_cpu_s": med["naive"]["cpu_s"],
            "naive_list_only_cpu_s": med["naive_list"]["cpu_s"],
            "speedup_vs_naive": med["naive"]["total_s"] / med["corpus"]["total_s"],
            "speedup_vs_naive_list_only": med["naive_list"]["total_s"] / med["corpus"]["total_s"],
            "speedup_vs_naive_cpu": med["naive"]["cpu_s"] / med["corpus"]["cpu_s"],
            "speedup_vs_naive_list_only_cpu": med["naive_list"]["cpu_s"] / med["corpus"]["cpu_s"],
            "repeats": {m: len(rs) for m, rs in runs.items()},
            "runs": runs,
            "small_reads": small_read_costs(path, sizes["small_reads"]),
            "metadata_whatif": metadata_whatif(work, cfg["speakers"] // 10, cfg["utts"]),
        }
    )
    return result


# ----------------------------------------------------------------------------- part 3: disk
def write_pt_input(work: Path, cfg: dict[str, Any]) -> tuple[Path, Path, int]:
    """A whole-corpus {utt: float16 [frames, 13, 768]} .pt dict and its utt2spk file."""
    import torch

    rng = np.random.default_rng(SEED + 7)
    pool = frame_pool(1024, SEED + 8).astype(np.float16)
    low, high = cfg["seconds"]
    table, lines, total = {}, [], 0
    for utt in tqdm(range(cfg["utts"]), desc="build .pt input", unit="utt"):
        frames = round(rng.uniform(low, high) * 50)  # 50 Hz PTM frames
        utt_id = f"spk{utt % cfg['speakers']:02d}-utt{utt:04d}"
        table[utt_id] = torch.from_numpy(pool[rng.integers(0, len(pool), frames)])
        lines.append(f"{utt_id} spk{utt % cfg['speakers']:02d}\n")
        total += frames
    pt_path, u2s = work / "ptm.pt", work / "utt2spk"
    torch.save(table, pt_path)
    u2s.write_text("".join(lines), encoding="utf-8")
    return pt_path, u2s, total


def run_disk_benchmark(work: Path, sizes: dict[str, Any]) -> list[dict[str, Any]]:
    from e2espk.data.packing import PackConfig, pack_corpus

    pt_path, u2s, total_frames = write_pt_input(work, sizes["disk"])
    audio_s = total_frames / 50.0
    rows = []
    variants = [(None, "none"), ("0,4,8,12", "none"), (None, "lzf"), ("0,4,8,12", "lzf")]
    for layers, compression in tqdm(variants, desc="pack_corpus variants", unit="run"):
        name = f"L{'4' if layers else '13'}-{compression}"
        config = PackConfig.from_flat(
            dict(
                ptm=[str(pt_path)],
                utt2spk=[str(u2s)],
                ptm_layers=layers,
                compression=compression,
                out_path=str(work / "pack"),
                out_name=name,
                overwrite=True,
                progress=False,
            )
        )
        begin = time.perf_counter()
        report = pack_corpus(config)
        pack_s = time.perf_counter() - begin
        out = Path(report.outputs["all"])
        n_layers = len(layers.split(",")) if layers else 13
        chunk = report.streams["ptm"]["chunk_frames"]
        corpus = Corpus(out)
        stored = int(sum(-(-n // chunk) * chunk for n in corpus.frames("ptm").tolist()))
        corpus.close()
        size = out.stat().st_size
        per_hour = size * 3600.0 / audio_s
        theory = 50 * 3600 * n_layers * 768 * 2  # float16 payload per hour
        rows.append(
            {
                "variant": name,
                "layers": n_layers,
                "compression": compression,
                "audio_s": audio_s,
                "file_bytes": size,
                "bytes_per_hour": per_hour,
                "payload_bytes_per_hour": theory,
                "overhead_ratio": per_hour / theory,
                "edge_chunk_padding_ratio": stored / total_frames,
                "pack_s": pack_s,
                "pack_realtime_factor": audio_s / pack_s,
            }
        )
        out.unlink()  # keep disk use low; --keep keeps only what is still there
    return rows


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes (< 1 min): checks the script works"
    )
    parser.add_argument(
        "--work-dir", type=Path, help="where corpora are generated (default: a temp dir)"
    )
    parser.add_argument(
        "--out", type=Path, help="results JSON (default benchmarks/results/corpus_io[_quick].json)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument(
        "--only",
        choices=["open", "crops", "disk"],
        action="append",
        help="run only these parts (repeatable)",
    )
    parser.add_argument(
        "--cases", nargs="+", metavar="NAME", help="crops: only these cases, e.g. long-f16-none-c0"
    )
    parser.add_argument("--child-open", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def crops_part(
    quick: bool, work: Path, sizes: dict[str, Any], keep: bool, only: list[str] | None = None
) -> tuple[Any, str]:
    """Part 2 results and its tables (main conditions, what-ifs, chunk-size sweep, contiguous)."""
    main_cases, sweep = default_cases(quick)
    cases = [c for c in main_cases + sweep if only is None or c.name in only]
    if only and len(cases) != len(set(only)):
        known = ", ".join(c.name for c in main_cases + sweep)
        raise SystemExit(f"--cases: unknown case(s) in {only}; known: {known}")
    crops = run_crop_benchmark(cases, work, sizes["crops"], keep)
    names = {case.name for case in main_cases}
    main_rows = [r for r in crops if r["case"]["name"] in names]
    sweep_rows = [
        r
        for r in crops
        if (r["case"]["label"], r["case"]["dtype"]) == ("long", "float16")
        and r["case"]["compression"] in ("none", "lzf")
        and r["case"]["chunk_frames"] > 0
    ]
    layout_rows = [
        r
        for r in crops
        if r["case"]["dtype"] == "float16"
        and r["case"]["compression"] == "none"
        and r["case"]["chunk_frames"] in (0, 25)
    ]
    layout_rows.sort(key=lambda r: (r["case"]["label"], -r["case"]["chunk_frames"]))
    sweep_rows.sort(key=lambda r: (r["case"]["compression"] != "none", r["case"]["chunk_frames"]))
    tables = [
        "### 2. Random 100-frame crops of 13x768 PTM (warm page cache)\n\n"
        + crops_table(main_rows),
        "### 2a. Where the gap goes: crops/s ratio to raw h5py of reader what-ifs\n\n"
        + whatif_table(main_rows),
        "### 2b. chunk_seconds 0.25 / 0.5 / 1.0 (long utterances, float16)\n\n"
        + crops_table(sweep_rows),
        "### 2c. Contiguous utterance datasets (data_prep --chunk-seconds 0) vs 0.5-s chunks "
        "(float16, uncompressed)\n\n" + crops_table(layout_rows),
    ]
    return crops, "\n\n".join(tables)


def footer(results: dict[str, Any]) -> str:
    """Command, duration, machine load, and a warning if any crop pass touched the disk."""
    load = f"{results['loadavg_start'][0]:.1f} -> {results['loadavg_end'][0]:.1f}"
    crops = [v for case in results.get("crops", []) for v in case["variants"].values()]
    disk = sum(v["disk_bytes_read"] for v in crops)
    read = sum(v["bytes_read"] or 0 for v in crops)
    text = (
        f"\n\nCommand: `{results['command']}` ({results['wall_s']:.0f} s; "
        f"{results['environment']['cpus']} CPUs, 1-min load average {load})\n"
    )
    if crops:
        text += f"\nPage cache check: {disk / 1e6:.2f} MB of the {read / 1e9:.1f} GB read came from disk.\n"
    if read and disk > 0.01 * read:
        text += "\nWARNING: page cache was not warm; crop figures include disk I/O.\n"
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_open:
        print(json.dumps(child_open(*args.child_open)))
        return 0
    sizes = SIZES["quick" if args.quick else "full"]
    sizes["crops"]["seed"] = SEED
    parts = args.only or ["open", "crops", "disk"]
    suffix = "_quick" if args.quick else ""
    out = args.out or REPO / "benchmarks" / "results" / f"corpus_io{suffix}.json"
    root = args.work_dir or Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="e2espk-bench-corpus-io-", dir=root))
    argv_used = sys.argv[1:] if argv is None else argv
    results: dict[str, Any] = {
        "command": " ".join(["python benchmarks/bench_corpus_io.py", *argv_used]),
        "quick": args.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(),
        "sizes": sizes,
        "work_dir": str(work),
        "loadavg_start": os.getloadavg(),
    }
    begin = time.perf_counter()
    tables = []
    try:
        if "open" in parts:
            results["open"] = run_open_benchmark(work, sizes)
            tables.append("### 1. Open + speaker map\n\n" + open_table(results["open"]))
        if "crops" in parts:
            results["crops"], text = crops_part(args.quick, work, sizes, args.keep, args.cases)
            tables.append(text)
        if "disk" in parts:
            results["disk"] = run_disk_benchmark(work, sizes)
            tables.append(
                "### 3. Disk per hour of audio (real pack_corpus)\n\n" + disk_table(results["disk"])
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["wall_s"] = time.perf_counter() - begin
    results["loadavg_end"] = os.getloadavg()
    results["markdown"] = "\n\n".join(tables) + footer(results)
    write_json_atomic(out, results)
    print(results["markdown"])
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
