"""Parallel efficiency of hp_search_slurm.py on the project's local Slurm cluster.

    bash scripts/slurm_local.sh up
    python benchmarks/bench_search_slurm.py [--budget 8] [--workers 2] [--out benchmarks/results/search_slurm.json]

Runs a real search (``hp_search_slurm.py --cluster slurm``) on the demo corpus, each trial a
short real training run with one torch thread and ``--cpus-per-task 1``, and reports:

- parallel efficiency = (budget x mean trial time / workers) / wall time of the search, where
  a trial's time is measured inside its job (from the trial function's start to its return);
  1.0 would mean the scheduler, submitit and the driver cost nothing;
- overhead per trial: submit -> start (sbatch, scheduling, job start-up, Python imports and
  unpickling, up to the trial function's first line) and end -> result (result pickle, job
  exit, the driver's polling, up to the record being written).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from e2espk.cli.hp_search import main_parallel
from e2espk.fileio import write_json_atomic

REPO = Path(__file__).resolve().parents[1]


def demo_corpus(root: Path) -> tuple[Path, Path]:
    subprocess.run(
        [sys.executable, str(REPO / "data_prep.py"), "demo", "--out-dir", str(root / "corpus")],
        check=True,
        capture_output=True,
    )
    kaldi = root / "corpus" / "kaldi"
    subprocess.run([sys.executable, str(REPO / "data_prep.py"), "--ptm", str(root / "corpus" / "ptm" / "embedding.pt"), "--path-to-data", str(kaldi),
                    "--pitch", f"kaldi:{kaldi}:pitch.scp", "--split-by", "speaker", "--valid-size", "8", "--out-path", str(root / "hdf"),
                    "--out-name", "demo", "--no-progress"], check=True, capture_output=True)  # fmt: skip
    return root / "hdf" / "demo_train.hdf", root / "hdf" / "demo_valid.hdf"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/search_slurm.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        train, valid = demo_corpus(Path(tmp))
        search_dir = Path(tmp) / "search"
        argv = ["--cluster", "slurm", "--hp-workers", str(args.workers), "--budget", str(args.budget), "--search-dir", str(search_dir),
                "--cpus-per-task", "1", "--threads-per-trial", "1", "--poll-seconds", "0.5", "--search-params", "lr", "margin",
                "--search-optimizer", "RandomSearch", "--train-hdf-file", str(train), "--valid-hdf-file", str(valid),
                "--backbone", "ecapa_tdnn_tiny", "--batch-size", "32", "--epochs", str(args.epochs), "--no-progress"]  # fmt: skip
        started = time.time()
        assert main_parallel(argv) == 0, "search failed"
        wall = time.time() - started
        records = [
            json.loads(line) for line in (search_dir / "trials.jsonl").read_text().splitlines()
        ]
    ok = [r for r in records if r["status"] == "ok"]
    trial_s = [r["finished_at"] - r["started_at"] for r in ok]
    to_start = [r["started_at"] - r["submitted_at"] for r in ok]
    to_result = [r["done_seen_at"] - r["finished_at"] for r in ok]
    mean_trial = statistics.mean(trial_s)
    results = {
        "budget": args.budget, "workers": args.workers, "ok_trials": len(ok), "wall_s": wall,
        "mean_trial_s": mean_trial, "parallel_efficiency": args.budget * mean_trial / args.workers / wall,
        "submit_to_start_s": {"median": statistics.median(to_start), "max": max(to_start)},
        "end_to_result_s": {"median": statistics.median(to_result), "max": max(to_result)},
        "machine": "2 CPU cores, local single-node Slurm 22.05 (scripts/slurm_local.sh)",
        "command": "python benchmarks/bench_search_slurm.py " + " ".join(sys.argv[1:]),
    }  # fmt: skip
    write_json_atomic(args.out, results)
    print(
        "| budget | workers | wall | mean trial | parallel efficiency | submit -> start (median / max) | end -> result (median / max) |\n|---|---|---|---|---|---|---|"
    )
    print(f"| {args.budget} | {args.workers} | {wall:.1f} s | {mean_trial:.1f} s | {results['parallel_efficiency']:.2f} | "
          f"{results['submit_to_start_s']['median']:.2f} / {results['submit_to_start_s']['max']:.2f} s | "
          f"{results['end_to_result_s']['median']:.2f} / {results['end_to_result_s']['max']:.2f} s |")  # fmt: skip


if __name__ == "__main__":
    main()
