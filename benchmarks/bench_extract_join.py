"""What joining the shards of ``data_prep.py extract --slurm-array`` costs, against a plain copy.

    python benchmarks/bench_extract_join.py [--quick] [--repeats 3] [--out benchmarks/results/extract_join.json]

The join reads every utterance of every shard file and writes it into the output corpus (the
same writer, split and index as a serial extraction). Its physical floor is copying the same
bytes, so each case times ``join_shards`` and ``shutil.copyfile`` of the shard files into a
fresh folder, alternately, ``--repeats`` times (the median is reported; both read files just
written, from the page cache, as a join right after the last task would on one node):

1. ``ptm``: 13 x 768 float16 PTM states + 80 log-mel + 2 pitch, 4-s utterances (about 4 MB
   each), 4 shards: the data-bound case (VoxCeleb2 with PTM states is ~8.6 TB of this);
2. ``handcrafted``: log-mel + pitch only (131 kB per utterance), 4 shards: many small
   utterances, where the per-utterance cost (HDF5 groups and datasets) shows.

Shard files are written with the corpus writer and the shard record a task leaves (no audio is
extracted: extraction cost is ``bench_extract.py``'s).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _bench_util import environment, load_average, table

from e2espk.config import parse_config
from e2espk.data.corpus import CorpusWriter, StreamSpec
from e2espk.extract.audio import AudioItem
from e2espk.extract.config import ExtractConfig
from e2espk.extract.join import join_shards
from e2espk.extract.pipeline import Plan
from e2espk.extract.shards import SHARD_ATTR, plan_id, shard_path, split_windows, work_dir
from e2espk.fileio import write_json_atomic

SECONDS = 4.0  # per utterance
SHARDS = 4
CASES = {  # name: (streams, utterances, utterances with --quick)
    "ptm": (("ptm", "mfbe", "pitch"), 240, 24),
    "handcrafted": (("mfbe", "pitch"), 4000, 400),
}
SPECS = {
    "ptm": StreamSpec("ptm", "ptm", (13, 768), "float16", 50.0, tuple(range(13)), "bench", 25),
    "mfbe": StreamSpec("mfbe", "handcrafted", (80,), "float32", 100.0, chunk_frames=50),
    "pitch": StreamSpec("pitch", "handcrafted", (2,), "float32", 100.0, chunk_frames=50),
}


def make_shards(root: Path, streams: tuple[str, ...], count: int) -> tuple[Any, Plan, list, str]:
    """Shard files of ``count`` random utterances (20 speakers), as the tasks leave them."""
    config = parse_config(
        ExtractConfig,
        ["--audio-dir", str(root / "audio"), "--streams", *streams, "--out-path", str(root / "out"),
         "--out-name", "joined", "--no-progress", "--bucket-window", "4"],
        "bench",
    )  # fmt: skip
    ordered = [f"spk{k % 20:02d}/utt{k:05d}" for k in range(count)]
    ordered.sort()
    speakers = {utt: utt.split("/")[0] for utt in ordered}
    plan = Plan(
        {u: AudioItem(u, u) for u in ordered}, speakers, dict.fromkeys(ordered, "all"),
        {"all": root / "out" / "joined.hdf"}, ordered,
    )  # fmt: skip
    shards = split_windows(ordered, 4, SHARDS)
    pid = plan_id(config, plan, shards)
    specs = [SPECS[name] for name in streams]
    rng = np.random.default_rng(0)
    for shard in shards:
        writer = CorpusWriter(shard_path(work_dir(config), shard.index), specs)
        for utt in ordered[shard.start : shard.stop]:
            frames = {name: int(SECONDS * SPECS[name].frame_rate_hz) for name in streams}
            writer.add(speakers[utt], utt, {
                name: rng.standard_normal((frames[name], *SPECS[name].dims)).astype(SPECS[name].dtype)
                for name in streams
            })  # fmt: skip
        writer.attrs["extraction"] = "{}"
        record = {"plan": pid, "index": shard.index, "count": len(shards), "skipped_bad": {}}
        writer.attrs[SHARD_ATTR] = json.dumps(record)
        writer.close()
    return config, plan, shards, pid


def measure(name: str, count: int, repeats: int) -> dict[str, Any]:
    streams = CASES[name][0]
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        root = Path(tmp)
        config, plan, shards, pid = make_shards(root, streams, count)
        files = [shard_path(work_dir(config), s.index) for s in shards]
        size = sum(f.stat().st_size for f in files)
        join_s, copy_s = [], []
        for _ in range(repeats):
            output = plan.names["all"]
            output.unlink(missing_ok=True)
            start = time.perf_counter()
            join_shards(config, plan, shards, pid)
            join_s.append(time.perf_counter() - start)
            copies = root / "copy"
            shutil.rmtree(copies, ignore_errors=True)
            copies.mkdir()
            start = time.perf_counter()
            for path in files:
                shutil.copyfile(path, copies / path.name)
            copy_s.append(time.perf_counter() - start)
        joined = output.stat().st_size
    join, copy = statistics.median(join_s), statistics.median(copy_s)
    return {
        "case": name, "streams": list(streams), "utterances": count, "shards": len(shards),
        "shard_bytes": size, "joined_bytes": joined, "join_s": join_s, "copy_s": copy_s,
        "join_median_s": join, "copy_median_s": copy, "ratio": join / copy,
        "join_gb_per_s": size / join / 1e9, "copy_gb_per_s": size / copy / 1e9,
        "join_s_per_1000_utts": 1000 * join / count, "load_average": load_average(),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the utterances")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/extract_join.json")
    args = parser.parse_args(argv)
    rows = []
    for name, (_, count, quick) in CASES.items():
        rows.append(measure(name, quick if args.quick else count, args.repeats))
        print(f"{name}: {json.dumps(rows[-1])}", file=sys.stderr)
    print(table(
        ["case", "utterances", "shard bytes", "join s", "copy s", "join / copy", "join GB/s",
         "join s / 1000 utt"],
        [[r["case"], str(r["utterances"]), f"{r['shard_bytes'] / 1e9:.2f} GB",
          f"{r['join_median_s']:.2f}", f"{r['copy_median_s']:.2f}", f"{r['ratio']:.1f}",
          f"{r['join_gb_per_s']:.2f}", f"{r['join_s_per_1000_utts']:.2f}"] for r in rows],
    ))  # fmt: skip
    if not args.quick:
        write_json_atomic(args.out, {"environment": environment(), "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
