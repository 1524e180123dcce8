"""Analysis: how far apart the speakers of one test family are in pitch level (issue 13).

    python benchmarks/devbench/pitch_spread.py DATA/hdf/dev_test.hdf

For each voice family, the within-speaker standard deviation of the utterance median ln F0
(voiced frames; ``pitch_fusion.median_log_f0``) and each speaker's mean of it. Speakers of one
family whose means differ by less than about two within-speaker deviations cannot be told
apart by pitch level: what is left to separate them is the formant warp, the pitch range and
the rate, the cues the embeddings must carry.
"""

from __future__ import annotations

import sys
from itertools import combinations
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.devbench.breakdown import family
from benchmarks.devbench.pitch_fusion import median_log_f0
from e2espk.data.corpus import Corpus


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise SystemExit(__doc__)
    with Corpus(argv[0]) as corpus:
        levels = median_log_f0(corpus)
        speakers = [speaker for _, speaker, _ in corpus.iter_rows()]
    by_family: dict[str, dict[str, list[float]]] = {}
    for speaker, level in zip(speakers, levels, strict=True):
        by_family.setdefault(family(speaker + "/"), {}).setdefault(speaker, []).append(level)
    close_pairs = all_pairs = 0
    for name, members in sorted(by_family.items()):
        within = float(np.sqrt(np.mean([np.var(v) for v in members.values()])))
        means = {s: float(np.mean(v)) for s, v in members.items()}
        close = sum(abs(means[a] - means[b]) < 2 * within for a, b in combinations(means, 2))
        close_pairs += close
        all_pairs += len(means) * (len(means) - 1) // 2
        listed = " ".join(f"{m:.3f}" for m in means.values())
        print(
            f"{name}: within-speaker sd {within:.3f}; speaker means {listed}; close pairs {close}"
        )
    print(f"speaker pairs of one family closer than 2 within-speaker sd: {close_pairs}/{all_pairs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
