"""Peak memory of data_prep.py against corpus size: packing streams one utterance at a time.

    python benchmarks/bench_pack_memory.py [--sizes 100 400] [--out benchmarks/results/pack_memory.json]

For each size, writes that many per-utterance ``.npy`` PTM files (13 x 768 float16, 3 s = 150
frames, 3 MB each) plus a ``.pt`` dict of log-mel (80-d, 300 frames), packs them with
``data_prep.py`` in a fresh process and reads the process's peak resident memory
(``ru_maxrss`` of the child). Flat memory = the peak RSS ratio stays near 1 while the data grows.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from e2espk.fileio import write_json_atomic

REPO = Path(__file__).resolve().parents[1]


def make_inputs(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    (root / "ptm").mkdir(parents=True)
    mel = {}
    lines = []
    for k in range(n):
        utt = f"spk{k % 20:03d}-utt{k:05d}"
        np.save(
            root / "ptm" / f"{utt}.npy",
            rng.standard_normal((150, 13, 768), dtype=np.float32).astype(np.float16),
        )
        mel[utt] = torch.from_numpy(rng.standard_normal((300, 80), dtype=np.float32))
        lines.append(f"{utt} spk{k % 20:03d}\n")
    torch.save(mel, root / "mfbe.pt")
    (root / "utt2spk").write_text("".join(lines))


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak < before:
        raise RuntimeError("ru_maxrss went down")
    return peak / 1024.0, seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--out", default="benchmarks/results/pack_memory.json")
    args = parser.parse_args()
    rows = []
    for n in sorted(args.sizes):  # ascending: ru_maxrss of children is a running maximum
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            make_inputs(root, n)
            input_mb = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20
            rss, seconds = peak_rss_mb([sys.executable, str(REPO / "data_prep.py"), "--ptm", str(root / "ptm"), "--mfbe", str(root / "mfbe.pt"),
                                        "--utt2spk", str(root / "utt2spk"), "--out-path", str(root / "out"), "--no-progress"])  # fmt: skip
            output_mb = (root / "out" / "corpus.hdf").stat().st_size / 2**20
            rows.append(
                {
                    "utterances": n,
                    "input_mb": input_mb,
                    "output_mb": output_mb,
                    "peak_rss_mb": rss,
                    "seconds": seconds,
                }
            )
    write_json_atomic(
        args.out,
        {
            "rows": rows,
            "command": "python benchmarks/bench_pack_memory.py " + " ".join(sys.argv[1:]),
        },
    )
    print("| utterances | input MB | output MB | peak RSS MB | pack time |\n|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['utterances']} | {row['input_mb']:.0f} | {row['output_mb']:.0f} | {row['peak_rss_mb']:.0f} | {row['seconds']:.1f} s |"
        )
    print(
        f"data x{rows[-1]['input_mb'] / rows[0]['input_mb']:.1f} -> peak RSS x{rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f}"
    )


if __name__ == "__main__":
    main()
