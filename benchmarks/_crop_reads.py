"""Random-crop read throughput of e2espk corpora against a raw contiguous HDF5 dataset.

Helper of ``bench_corpus_io.py`` (part 2). Every condition is measured with the page cache
warm (the files fit in RAM several times over), so the figures are CPU/h5py/HDF5 overhead,
never disk speed. Variants are measured in passes; each variant opens its own file handle and
closes it before the next one opens, because HDF5 shares one file structure (and its chunk
cache settings) between handles of the same file.
"""

from __future__ import annotations

import dataclasses
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from e2espk.data.corpus import Corpus, CorpusWriter, StreamSpec

CROP = 100  # frames per crop: 2 s of PTM states at 50 Hz
PTM_DIMS = (13, 768)  # layers x dims of a base-size PTM (WavLM/HuBERT base)
SPEAKERS = 8  # speakers the utterances are spread over (irrelevant to reads)

Reader = Callable[[int, int], np.ndarray]  # (row, start frame) -> crop
# glibc: keep freed buffers instead of returning them to the kernel (fixed thresholds)
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(16 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}


@dataclasses.dataclass(frozen=True)
class CropCase:
    """One measured condition: corpus shape, stored dtype, compression and chunking."""

    label: str  # "short" (~4 s utterances) or "long" (~60 s)
    n_utts: int
    frames: int  # frames per utterance at 50 Hz
    dtype: str  # "float16" | "float32"
    compression: str = "none"  # "none" | "lzf" | "gzip"
    level: int = 1  # gzip level
    chunk_frames: int = 25  # 0.5 s at 50 Hz, data_prep's default

    @property
    def name(self) -> str:
        comp = self.compression + (str(self.level) if self.compression == "gzip" else "")
        return f"{self.label}-{self.dtype.replace('float', 'f')}-{comp}-c{self.chunk_frames}"

    @property
    def crop_bytes(self) -> int:
        return CROP * math.prod(PTM_DIMS) * np.dtype(self.dtype).itemsize


def rchar() -> int | None:
    """Bytes this process has read through read()/pread() so far (page-cache hits included)."""
    try:
        with open("/proc/self/io", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def frame_pool(n_frames: int, seed: int) -> np.ndarray:
    """(n_frames, 13, 768) float32 standard-normal frames; utterances are drawn from it.

    Drawing frames from a pool is ~50x faster than fresh normals for every frame. The pool
    holds thousands of frames of 20-40 kB, so repeats never fall inside an lzf (8 kB) or
    gzip (32 kB) window: compression sees random-normal data either way.
    """
    return np.random.default_rng(seed).standard_normal((n_frames, *PTM_DIMS), dtype=np.float32)


def build_flat(case: CropCase, pool: np.ndarray, work: Path, seed: int) -> tuple[np.ndarray, Path]:
    """All frames of a condition in RAM, and the same bytes as ONE contiguous dataset."""
    rng = np.random.default_rng(seed)
    flat = pool[rng.integers(0, len(pool), case.n_utts * case.frames)].astype(case.dtype)
    raw_path = work / f"raw-{case.label}-{case.dtype}.h5"
    with h5py.File(raw_path, "w") as handle:
        handle.create_dataset("raw", data=flat)  # no chunks= -> contiguous layout
    return flat, raw_path


def write_corpus(case: CropCase, flat: np.ndarray, work: Path) -> tuple[Path, float]:
    """Write the condition's utterances (views of ``flat``) as an e2espk corpus."""
    spec = StreamSpec(
        name="ptm",
        kind="ptm",
        dims=PTM_DIMS,
        dtype=case.dtype,
        frame_rate_hz=50.0,
        layers=tuple(range(PTM_DIMS[0])),
        chunk_frames=case.chunk_frames,
    )
    path = work / f"{case.name}.hdf"
    start = time.perf_counter()
    writer = CorpusWriter(
        path, [spec], compression=case.compression, compression_level=case.level, overwrite=True
    )
    with writer:
        for utt in tqdm(range(case.n_utts), desc=f"write {case.name}", unit="utt", leave=False):
            block = flat[utt * case.frames : (utt + 1) * case.frames]
            writer.add(f"spk{utt % SPEAKERS:02d}", f"utt{utt:05d}", {"ptm": block})
    return path, time.perf_counter() - start


def _corpus_reader(path: Path, rdcc_nbytes: int | None, preopen: bool) -> tuple[Reader, Any]:
    """e2espk's reader, optionally with what-if changes that e2espk itself does not make."""
    corpus = Corpus(path)
    if rdcc_nbytes is not None:  # what-if: the same reads with HDF5's chunk cache sized
        corpus.close()
        corpus._handle = h5py.File(path, "r", rdcc_nbytes=rdcc_nbytes)
    if not preopen:
        return (lambda row, start: corpus.read(row, "ptm", start, start + CROP)), corpus.close
    datasets = [corpus.dataset(row, "ptm") for row in range(len(corpus))]
    for dataset in datasets:  # load every chunk index once: a long-lived handle cache
        dataset[0:1]
    return (lambda row, start: datasets[row][start : start + CROP]), corpus.close


def _raw_reader(raw_path: Path) -> tuple[Reader, Any]:
    handle = h5py.File(raw_path, "r")
    dataset = handle["raw"]
    return (lambda _row, start: dataset[start : start + CROP]), handle.close


def _memcpy_reader(flat: np.ndarray) -> tuple[Reader, Any]:
    return (lambda _row, start: flat[start : start + CROP].copy()), (lambda: None)


def contiguous_copy(corpus_path: Path, work: Path) -> Path:
    """What-if: the same corpus with every utterance dataset contiguous instead of chunked."""
    path = work / f"{corpus_path.stem}-contiguous.hdf"
    with h5py.File(corpus_path, "r") as src, h5py.File(path, "w") as dst:
        dst.attrs.update(src.attrs)
        src.copy(src["index"], dst, "index")
        corpus = Corpus(corpus_path)
        for row in range(len(corpus)):
            source = corpus.dataset(row, "ptm")
            dst.create_dataset(source.name, data=source[()])  # no chunks= -> contiguous
        corpus.close()
    return path


# name -> (what it is, builds a reader from the context, context key it needs, reads utterances)
Factory = Callable[[dict[str, Any]], tuple[Reader, Any]]
VARIANTS: dict[str, tuple[str, Factory, str, bool]] = {
    "e2espk": (
        "Corpus.read as shipped",
        lambda c: _corpus_reader(c["corpus"], None, False),
        "corpus",
        True,
    ),
    "nocache": (
        "what-if: rdcc_nbytes=0",
        lambda c: _corpus_reader(c["corpus"], 0, False),
        "corpus",
        True,
    ),
    "preopened": (
        "what-if: datasets kept open",
        lambda c: _corpus_reader(c["corpus"], None, True),
        "corpus",
        True,
    ),
    "preopened_nocache": (
        "what-if: kept open + rdcc_nbytes=0",
        lambda c: _corpus_reader(c["corpus"], 0, True),
        "corpus",
        True,
    ),
    "contiguous": (
        "what-if: Corpus.read on contiguous (unchunked) utterance datasets",
        lambda c: _corpus_reader(c["contiguous"], None, False),
        "contiguous",
        True,
    ),
    "contiguous_preopened": (
        "what-if: contiguous utterance datasets kept open",
        lambda c: _corpus_reader(c["contiguous"], None, True),
        "contiguous",
        True,
    ),
    "raw_h5py": ("limit: one contiguous dataset", lambda c: _raw_reader(c["raw"]), "raw", False),
    "memcpy": (
        "reference: numpy copy from RAM",
        lambda c: _memcpy_reader(c["flat"]),
        "flat",
        False,
    ),
}


def layout_amplification(starts: np.ndarray, chunk_frames: int) -> float:
    """Frames in the chunks a crop touches / frames in the crop (chunk-granular reads); 1 for
    contiguous datasets (chunk_frames 0), which read exactly the crop."""
    if chunk_frames == 0:
        return 1.0
    first = starts // chunk_frames
    last = (starts + CROP - 1) // chunk_frames
    return float(np.mean((last - first + 1) * chunk_frames) / CROP)


@dataclasses.dataclass
class PassTiming:
    """One variant's pass: CPU seconds (the figure), wall seconds, bytes read, disk blocks."""

    cpu_s: float
    wall_s: float
    read_bytes: int | None
    disk_blocks: int  # getrusage ru_inblock: > 0 means the page cache was NOT warm


def _time_pass(read: Reader, crops: np.ndarray, warmup: int) -> PassTiming:
    for row, start in crops[:warmup]:
        read(int(row), int(start))
    io_before, blocks_before = rchar(), resource.getrusage(resource.RUSAGE_SELF).ru_inblock
    wall, cpu = time.perf_counter(), time.process_time()
    for row, start in crops:
        read(int(row), int(start))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    io_after, blocks_after = rchar(), resource.getrusage(resource.RUSAGE_SELF).ru_inblock
    read_bytes = None if io_before is None or io_after is None else io_after - io_before
    return PassTiming(cpu, wall, read_bytes, blocks_after - blocks_before)


def _crop_plan(case: CropCase, n_flat: int, n: int, rng: np.random.Generator) -> tuple:
    utt_crops = np.stack(
        [rng.integers(0, case.n_utts, n), rng.integers(0, case.frames - CROP + 1, n)], axis=1
    )
    flat_crops = np.stack(
        [np.zeros(n, dtype=np.int64), rng.integers(0, n_flat - CROP + 1, n)], axis=1
    )
    return utt_crops, flat_crops


def measure_case(case: CropCase, context: dict[str, Any], sizes: dict[str, int]) -> dict[str, Any]:
    """Per-variant crop rates over many short passes; variant order rotates every pass.

    ``context``: "corpus", "raw" (paths), "flat" (the frames in RAM), optionally "contiguous".
    Short interleaved passes and CPU-time rates keep the ratios stable on a shared machine.
    """
    variants = {name: v for name, v in VARIANTS.items() if context.get(v[2]) is not None}
    names = list(variants)
    rng = np.random.default_rng(sizes["seed"])
    n = sizes["crops_per_pass"]
    timings: dict[str, list[PassTiming]] = {name: [] for name in variants}
    all_starts = []
    for index in range(sizes["passes"]):
        utt_crops, flat_crops = _crop_plan(case, len(context["flat"]), n, rng)
        all_starts.append(utt_crops[:, 1])
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            _, factory, _, on_utts = variants[name]
            read, close = factory(context)
            try:
                crops = utt_crops if on_utts else flat_crops
                timings[name].append(_time_pass(read, crops, sizes["warmup"]))
            finally:
                close()
    file_bytes = context["corpus"].stat().st_size
    return _summarise(case, timings, n, np.concatenate(all_starts), file_bytes)


def _summarise(
    case: CropCase,
    timings: dict[str, list[PassTiming]],
    per_pass: int,
    starts: np.ndarray,
    file_bytes: int,
) -> dict[str, Any]:
    raw = timings["raw_h5py"]
    n_crops = len(starts)
    variants = {}
    for name, passes in timings.items():
        rates = [per_pass / t.cpu_s for t in passes]
        rate = statistics.median(rates)
        io = [t.read_bytes for t in passes if t.read_bytes is not None]
        variants[name] = {
            "what": VARIANTS[name][0],
            "crops_per_cpu_s": rate,
            "mb_per_cpu_s": rate * case.crop_bytes / 1e6,
            "crops_per_wall_s": statistics.median(per_pass / t.wall_s for t in passes),
            "ratio_to_raw": statistics.median(
                r.cpu_s / t.cpu_s for t, r in zip(passes, raw, strict=True)
            ),
            "ratio_to_raw_wall": statistics.median(
                r.wall_s / t.wall_s for t, r in zip(passes, raw, strict=True)
            ),
            "read_bytes_per_crop_over_crop_bytes": (
                sum(io) / n_crops / case.crop_bytes if len(io) == len(passes) else None
            ),
            "disk_bytes_read": 512 * sum(t.disk_blocks for t in passes),  # ru_inblock units
            "bytes_read": sum(io) if io else None,
            "crops_per_cpu_s_per_pass": rates,
        }
    payload = case.n_utts * case.frames * math.prod(PTM_DIMS) * np.dtype(case.dtype).itemsize
    return {
        "case": dataclasses.asdict(case) | {"name": case.name},
        "crop_bytes": case.crop_bytes,
        "crops_measured_per_variant": n_crops,
        "layout_amplification": layout_amplification(starts, case.chunk_frames),
        "file_bytes": file_bytes,
        "file_over_payload": file_bytes / payload,
        "variants": variants,
    }


def run_crop_benchmark(
    cases: list[CropCase], work: Path, sizes: dict[str, Any], keep: bool
) -> list[dict[str, Any]]:
    """Measure every case; cases sharing shape and dtype share one raw file and RAM copy."""
    pool = frame_pool(sizes["pool_frames"], seed=sizes["seed"])
    pools = {"float32": pool, "float16": pool.astype(np.float16)}
    groups: dict[tuple[str, str], list[CropCase]] = {}
    for case in cases:
        groups.setdefault((case.label, case.dtype), []).append(case)
    results = []
    for (label, dtype), members in groups.items():
        first = members[0]
        flat, raw_path = build_flat(first, pools[dtype], work, sizes["seed"] + 1)
        for case in tqdm(members, desc=f"crops {label}-{dtype}", unit="case"):
            corpus_path, write_s = write_corpus(case, flat, work)
            context = {"corpus": corpus_path, "raw": raw_path, "flat": flat, "contiguous": None}
            if case.compression == "none" and case.chunk_frames == 25:
                context["contiguous"] = contiguous_copy(corpus_path, work)
            result = measure_case(case, context, sizes)
            result["write_s"] = write_s
            if case.chunk_frames == 25:
                raw_rate = result["variants"]["raw_h5py"]["crops_per_cpu_s"]
                n_fresh = sizes["crops_per_pass"] * sizes["passes"] // 2
                result["fresh_process"] = fresh_process_rates(
                    corpus_path, n_fresh, sizes["seed"], raw_rate
                )
            results.append(result)
            if not keep:
                for path in (corpus_path, context["contiguous"]):
                    if path is not None:
                        path.unlink()
        del flat
        if not keep:
            raw_path.unlink()
    order = {case.name: i for i, case in enumerate(cases)}
    return sorted(results, key=lambda item: order[item["case"]["name"]])


def child_crops(path: str, n: int, seed: int) -> float:
    """Crops per CPU-second of ``Corpus.read`` in this (fresh) process, as a DataLoader worker."""
    corpus = Corpus(path)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(corpus), n + 5)
    starts = rng.integers(0, corpus.frames("ptm")[rows] - CROP + 1)
    for row, start in zip(rows[:5], starts[:5], strict=True):
        corpus.read(int(row), "ptm", int(start), int(start) + CROP)
    begin = time.process_time()
    for row, start in zip(rows[5:], starts[5:], strict=True):
        corpus.read(int(row), "ptm", int(start), int(start) + CROP)
    return n / (time.process_time() - begin)


def fresh_process_rates(path: Path, n: int, seed: int, raw_rate: float) -> dict[str, float]:
    """``child_crops`` in new processes, default malloc and with MALLOC_ENV; ratios to raw.

    The benchmark process has allocated and freed GBs by now, which changes how glibc serves
    the per-chunk buffers of HDF5's filter pipeline; a new process shows what a worker gets.
    """
    repo = str(Path(__file__).resolve().parents[1])
    rates = {}
    for name, extra in (("fresh", {}), ("fresh_malloc_env", MALLOC_ENV)):
        env = {**os.environ, "PYTHONPATH": repo, **extra}
        cmd = [sys.executable, str(Path(__file__).resolve()), str(path), str(n), str(seed)]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        rates[f"{name}_crops_per_cpu_s"] = float(out.strip().splitlines()[-1])
        rates[f"{name}_ratio_to_raw"] = rates[f"{name}_crops_per_cpu_s"] / raw_rate
    return rates


def default_cases(quick: bool) -> tuple[list[CropCase], list[CropCase]]:
    """(main conditions, extras); the extras are the chunk-size sweep (reusing the c25 main
    rows) and contiguous utterance datasets (``--chunk-seconds 0``), both float16 uncompressed."""
    short = (8, 200) if quick else (64, 200)  # (utterances, frames): ~4 s each
    long = (2, 1000) if quick else (8, 3000)  # ~60 s each (20 s in --quick)
    main = []
    for label, (n_utts, frames) in (("short", short), ("long", long)):
        for dtype, compression in (
            ("float16", "none"),
            ("float16", "lzf"),
            ("float16", "gzip"),
            ("float32", "none"),
        ):
            main.append(CropCase(label, n_utts, frames, dtype, compression))
    sweep = [
        CropCase("long", *long, "float16", compression, chunk_frames=chunk)
        for compression in ("none", "lzf")
        for chunk in (12, 50)
    ]
    sweep += [
        CropCase(label, *shape, "float16", "none", chunk_frames=0)
        for label, shape in (("short", short), ("long", long))
    ]
    return main, sweep


if __name__ == "__main__":  # child of fresh_process_rates: PATH N SEED
    print(child_crops(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
