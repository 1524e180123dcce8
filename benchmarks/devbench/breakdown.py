"""EER of an eval run by impostor kind and by test family (where the dev benchmark's errors are).

    python benchmarks/devbench/breakdown.py EVAL_DIR TRIALS [SCORE ...]

EVAL_DIR is an ``eval.py --out-path`` (its ``scores_SCORE.txt``), TRIALS the labelled trial list
(``DATA/trials/test.txt``). Prints EER on all trials, on targets against same-family non-targets
and against other-family ones, and the same-family EER of each test family. Utterance ids are
``<family>-s<k>/...`` (``benchmarks/devbench/README.md``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from e2espk.scoring.metrics import compute_eer
from e2espk.scoring.trials import read_trials


def family(utterance: str) -> str:
    return utterance.split("/")[0].rsplit("-s", 1)[0]


def read_scores(path: Path) -> dict[tuple[str, str], float]:
    pairs = (line.split() for line in path.read_text().splitlines() if line.strip())
    return {(a, b): float(score) for a, b, score, *_ in pairs}


def trial_scores(eval_dir: Path, trials: Any, score: str) -> np.ndarray:
    """An eval run's ``scores_SCORE.txt`` in the order of ``trials`` (a read trial list)."""
    by_pair = read_scores(eval_dir / f"scores_{score}.txt")
    return np.array([by_pair[pair] for pair in zip(trials.enroll, trials.test, strict=True)])


def same_family(enroll: list[str], test: list[str]) -> np.ndarray:
    """Whether each trial's two utterances come from one voice family."""
    return np.array([family(a) == family(b) for a, b in zip(enroll, test, strict=True)])


def impostor_eers(scores: np.ndarray, labels: np.ndarray, same: np.ndarray) -> dict[str, float]:
    """EER (fraction) of the targets against same-family and against other-family non-targets."""
    return {
        "eer_same_family": compute_eer(scores[labels | same], labels[labels | same]),
        "eer_other_family": compute_eer(scores[labels | ~same], labels[labels | ~same]),
    }


def breakdown(eval_dir: Path, trials_path: Path, score: str) -> str:
    trials = read_trials(trials_path)
    scores = trial_scores(eval_dir, trials, score)
    labels = np.asarray(trials.labels, dtype=bool)
    fam_a = np.array([family(u) for u in trials.enroll])
    same = same_family(trials.enroll, trials.test)
    eer = lambda mask: 100 * compute_eer(scores[mask], labels[mask])  # noqa: E731
    per_family = " ".join(f"{f}:{eer(same & (fam_a == f)):.1f}" for f in sorted(set(fam_a)))
    everything = np.ones_like(labels)
    return (
        f"{score}: all {eer(everything):.2f}  same-family {eer(same):.2f}  "
        f"other-family {eer(labels | ~same):.2f}\n  same-family EER by family: {per_family}"
    )


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    for name in sys.argv[3:] or ["cosine", "learned", "fused", "plda"]:
        print(breakdown(Path(sys.argv[1]), Path(sys.argv[2]), name))
