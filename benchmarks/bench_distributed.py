#!/usr/bin/env python
"""Training with 1 and 2 ranks on CPU (gloo, the real torchrun): steps/s, scaling, all-gather.

    python benchmarks/bench_distributed.py [--steps 12] [--rounds 2] [--quick]
        [--out benchmarks/results/distributed.json]

Each configuration is a real ``torchrun --standalone --nproc-per-node N train.py`` run
(``benchmarks/_dist_entry.py``, which times each epoch and the gather of the global batch) on
the demo corpus (40 speakers x 8 utterances, PTM 13 x 64 + log-mel + pitch, generated here),
one torch thread per rank, no validation. Configurations, interleaved over ``--rounds``:

- ``1 rank, batch B``: the reference (one process, one core);
- ``2 ranks, batch B`` (strong scaling: the same global batch split over 2 ranks, which is what
  train.py guarantees to train identically); efficiency = steps/s(2) / (2 x steps/s(1));
- ``2 ranks, batch 2B`` (weak scaling: each rank keeps B crops); efficiency =
  crops/s(2) / (2 x crops/s(1)).

steps/s is the last epoch's (the first warms up); the all-gather's share is the time rank 0
spends gathering the global batch's embeddings and labels (forward) and all-reducing their
gradient (backward), over the epoch's train time. Every figure is measured in the same run,
with the 1-minute load average recorded before and after each run: on a shared 2-core
machine two ranks compete with everything else, so read the ratios with the load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without pip install -e
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_util import REPO, environment, load_average, setup_logging, table

from e2espk.fileio import write_json_atomic

LOG = logging.getLogger("bench.distributed")
ENTRY = Path(__file__).resolve().parent / "_dist_entry.py"
MODEL = ["--backbone", "ecapa_tdnn", "--backbone-channels", "128", "--n-frames", "200"]
TRAIN = ["--device", "cpu", "--threads", "1", "--utts-per-speaker", "2", "--epochs", "2",
         "--no-progress", "--average-last", "0", "--final-checkpoint", "last", "--seed", "1"]  # fmt: skip


def build_corpus(root: Path, quick: bool) -> Path:
    """The demo corpus packed into ROOT/hdf/demo_train.hdf (all speakers: no validation)."""
    from e2espk.data.demo import DemoConfig, write_demo_corpus
    from e2espk.data.packing import PackConfig, pack_corpus

    demo = DemoConfig(out_dir=str(root / "corpus"), **({"speakers": 8} if quick else {}))
    paths = write_demo_corpus(demo)
    pack_corpus(
        PackConfig(
            ptm=[str(paths.ptm_dict)], path_to_data=[str(paths.kaldi_dir)],
            pitch=[f"kaldi:{paths.kaldi_dir}:pitch.scp"], split_by="speaker", valid_size=2,
            out_path=str(root / "hdf"), out_name="demo", progress=False,
        )
    )  # fmt: skip
    return root / "hdf" / "demo_train.hdf"


def run(ranks: int, batch: int, steps: int, train_hdf: Path, work: Path) -> dict[str, Any]:
    """One torchrun job; rank 0's last epoch and rank-0 gather times."""
    tag = f"r{ranks}_b{batch}_{time.monotonic_ns()}"
    out = work / f"{tag}_{{rank}}.json"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={ranks}", str(ENTRY), str(out), f"--train-hdf-file={train_hdf}",
            f"--checkpoint-path={work / tag}", f"--batch-size={batch}",
            f"--max-steps-per-epoch={steps}", *MODEL, *TRAIN]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    load_before = load_average()
    started = time.perf_counter()
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{ranks} rank(s), batch {batch} failed:\n{done.stderr[-3000:]}")
    epoch = json.loads(Path(str(out).replace("{rank}", "0")).read_text())["epochs"][-1]
    seconds = epoch["seconds"]
    gather = epoch["forward"] + epoch["backward"]
    return {
        "ranks": ranks, "batch": batch, "steps": epoch["steps"], "epoch_seconds": seconds,
        "steps_per_s": epoch["steps"] / seconds, "crops_per_s": epoch["steps"] * batch / seconds,
        "gather_forward_s": epoch["forward"], "gather_backward_s": epoch["backward"],
        "gather_share": gather / seconds, "job_seconds": time.perf_counter() - started,
        "load_before": load_before, "load_after": load_average(),
    }  # fmt: skip


def summarise(runs: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    def median(ranks: int, b: int, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["ranks"] == ranks and r["batch"] == b)

    one = median(1, batch, "steps_per_s")
    return {
        "steps_per_s": {
            f"1 rank, batch {batch}": one,
            f"2 ranks, batch {batch}": median(2, batch, "steps_per_s"),
            f"2 ranks, batch {2 * batch}": median(2, 2 * batch, "steps_per_s"),
        },
        "strong_scaling_efficiency": median(2, batch, "steps_per_s") / (2 * one),
        "weak_scaling_efficiency": median(2, 2 * batch, "crops_per_s")
        / (2 * median(1, batch, "crops_per_s")),
        "all_gather_share": {
            f"2 ranks, batch {batch}": median(2, batch, "gather_share"),
            f"2 ranks, batch {2 * batch}": median(2, 2 * batch, "gather_share"),
        },
        "load_average": [min(r["load_before"] for r in runs), max(r["load_after"] for r in runs)],
    }


def report(summary: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    rows = [
        [f"{r['ranks']}", f"{r['batch']}", f"{r['steps_per_s']:.3f}", f"{r['crops_per_s']:.1f}",
         f"{100 * r['gather_share']:.1f} %", f"{r['load_before']:.2f} -> {r['load_after']:.2f}"]
        for r in runs
    ]  # fmt: skip
    lines = [
        table(["ranks", "global batch", "steps/s", "crops/s", "all-gather share", "load 1 min"], rows),
        "",
        f"strong scaling (same global batch): efficiency {summary['strong_scaling_efficiency']:.2f}",
        f"weak scaling (batch per rank kept): efficiency {summary['weak_scaling_efficiency']:.2f}",
    ]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="steps per epoch (2 epochs)")
    parser.add_argument("--batch", type=int, default=32, help="global batch of the reference")
    parser.add_argument("--rounds", type=int, default=2, help="times each configuration runs")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/distributed.json"))
    args = parser.parse_args(argv)
    setup_logging()
    if args.quick:
        args.steps, args.batch, args.rounds = 2, 4, 1
    configurations = [(1, args.batch), (2, args.batch), (2, 2 * args.batch)]
    with tempfile.TemporaryDirectory(prefix="bench_dist_") as tmp:
        work = Path(tmp)
        train_hdf = build_corpus(work, args.quick)
        runs = []
        for round_ in range(args.rounds):
            for ranks, batch in configurations:
                runs.append(run(ranks, batch, args.steps, train_hdf, work))
                LOG.info("round %d: %s", round_, json.dumps(runs[-1]))
    summary = summarise(runs, args.batch)
    text = report(summary, runs)
    print(text)
    write_json_atomic(
        args.out,
        {
            "command": " ".join(["python", *sys.argv]),
            "model": MODEL,
            "train": TRAIN,
            "steps_per_epoch": args.steps,
            "summary": summary,
            "runs": runs,
            "markdown": text,
            "environment": environment(),
        },
    )
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
