"""Analysis: how much a plain pitch-level distance adds to an eval run's scores (issue 13).

    python benchmarks/devbench/pitch_fusion.py EVAL_DIR DATA [SCORE ...]   (default: plda)

EVAL_DIR is an ``eval.py --out-path`` on the dev benchmark's test trials (its
``scores_SCORE.txt``), DATA the built corpus directory. The pitch score of a trial is
``-|median ln F0(a) - median ln F0(b)|`` over each utterance's voiced frames (pitch stream
columns 0 and 1: ln F0, voicing). The scores are combined by logistic regression fitted in two
folds over the enrolment speakers *of the test trials*: an upper-bound analysis of what the
pitch level could add, not a system (a system must fit its weights on validation trials).
Prints EER on all trials, against same-family and against other-family impostors.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.devbench.breakdown import read_scores, same_family
from e2espk.data.corpus import Corpus
from e2espk.scoring.metrics import compute_eer
from e2espk.scoring.trials import read_trials


def median_log_f0(corpus: Corpus) -> np.ndarray:
    """Median ln F0 over the voiced frames of every utterance (all frames when < 4 voiced)."""
    levels = []
    for row in range(len(corpus)):
        pitch = corpus.read(row, "pitch")
        voiced = pitch[:, 1] > 0.5
        levels.append(np.median(pitch[voiced, 0] if voiced.sum() > 3 else pitch[:, 0]))
    return np.asarray(levels)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    eval_dir, data = Path(argv[0]), Path(argv[1])
    names = argv[2:] or ["plda"]
    corpus = Corpus(data / "hdf" / "dev_test.hdf")
    trials = read_trials(data / "trials" / "test.txt")
    pairs = list(zip(trials.enroll, trials.test, strict=True))
    position = {utt: k for k, utt in enumerate(corpus.utterances.tolist())}
    a = np.array([position[u] for u in trials.enroll])
    b = np.array([position[u] for u in trials.test])
    labels = np.asarray(trials.labels, dtype=bool)
    same = same_family(trials.enroll, trials.test)
    columns = {}
    for name in names:
        by_pair = read_scores(eval_dir / f"scores_{name}.txt")
        columns[name] = np.array([by_pair[pair] for pair in pairs])
    level = median_log_f0(corpus)
    columns["pitch"] = -np.abs(level[a] - level[b])
    x = np.stack([(v - v.mean()) / v.std() for v in columns.values()], axis=1)
    fold = np.array([zlib.crc32(u.split("/")[0].encode()) % 2 for u in trials.enroll])
    fused = np.zeros(len(labels))
    for k in (0, 1):
        model = LogisticRegression().fit(x[fold != k], labels[fold != k])
        fused[fold == k] = model.decision_function(x[fold == k])
    columns[" + ".join(columns)] = fused
    for name, scores in columns.items():
        eer = [
            100 * compute_eer(scores[m], labels[m])
            for m in (labels | True, labels | same, labels | ~same)
        ]
        print(f"{name:32s} all {eer[0]:.2f}  same-family {eer[1]:.2f}  other-family {eer[2]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
