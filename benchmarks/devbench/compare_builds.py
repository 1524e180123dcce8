"""Compare two devbench builds array by array: is the build reproducible?

    python benchmarks/devbench/compare_builds.py DIR_A DIR_B

For every split (``hdf/*.hdf``) it checks that both builds hold the same utterances and, per
stream, counts the utterances whose arrays differ (shape or any value); the trial lists must be
byte-identical. Exit status 1 when anything differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from e2espk.data.corpus import Corpus


def differing_utterances(path_a: Path, path_b: Path) -> dict[str, int]:
    """Per stream, how many utterances differ between two corpora of the same utterances."""
    a, b = Corpus(path_a), Corpus(path_b)
    if a.utterances.tolist() != b.utterances.tolist():
        raise SystemExit(f"{path_a.name}: the builds hold different utterances")
    counts = dict.fromkeys(a.streams, 0)
    for row in range(len(a)):
        for stream in a.streams:
            x, y = a.read(row, stream), b.read(row, stream)
            counts[stream] += int(x.shape != y.shape or not np.array_equal(x, y))
    return counts


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    root_a, root_b = Path(argv[0]), Path(argv[1])
    same = True
    for path in sorted((root_a / "hdf").glob("*.hdf")):
        counts = differing_utterances(path, root_b / "hdf" / path.name)
        same &= not any(counts.values())
        print(f"{path.name}: {len(Corpus(path))} utterances, differing per stream {counts}")
    for trials in sorted((root_a / "trials").glob("*.txt")):
        equal = trials.read_bytes() == (root_b / "trials" / trials.name).read_bytes()
        same &= equal
        print(f"trials/{trials.name}: {'identical' if equal else 'DIFFERENT'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
