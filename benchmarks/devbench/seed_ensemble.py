"""Analysis: the score-level ensemble of several runs (seeds) of one system (issue 13).

    python benchmarks/devbench/seed_ensemble.py TRIALS EVAL_DIR EVAL_DIR ... [--scores S ...]

Each EVAL_DIR is an ``eval.py --out-path`` on the same trial list TRIALS (its
``scores_SCORE.txt``). Per score type, every run's scores are standardised over the trials and
averaged; prints each run's EER, the ensemble's, and the ensemble's EER against same-family and
other-family impostors. The standardisation uses the test trials' own score statistics, a
monotone per-run rescaling that cannot reorder a single run's trials; it shows how much of the
error is seed variance (what averaging models removes), not a system to ship.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.devbench.breakdown import impostor_eers, same_family, trial_scores
from e2espk.scoring.metrics import compute_eer
from e2espk.scoring.trials import read_trials


def ensemble_line(trials: Any, eval_dirs: list[Path], score: str) -> str:
    labels = np.asarray(trials.labels, dtype=bool)
    standardised, single = [], []
    for eval_dir in eval_dirs:
        scores = trial_scores(eval_dir, trials, score)
        single.append(100 * compute_eer(scores, labels))
        standardised.append((scores - scores.mean()) / scores.std())
    mean = np.mean(standardised, axis=0)
    split = impostor_eers(mean, labels, same_family(trials.enroll, trials.test))
    runs = " / ".join(f"{eer:.2f}" for eer in single)
    return (
        f"{score}: runs {runs}  ensemble {100 * compute_eer(mean, labels):.2f}  "
        f"(same-family {100 * split['eer_same_family']:.2f}, "
        f"other-family {100 * split['eer_other_family']:.2f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("trials", type=Path)
    parser.add_argument("eval_dirs", type=Path, nargs="+")
    parser.add_argument("--scores", nargs="+", default=["fused", "plda", "learned", "cosine"])
    args = parser.parse_args(argv)
    trials = read_trials(args.trials)  # once: ~86,000 lines on the dev benchmark
    for score in args.scores:
        print(ensemble_line(trials, args.eval_dirs, score))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
