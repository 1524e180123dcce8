"""Each utterance's value for the side scores (``e2espk.scoring.side_scores``), read from a corpus.

Side values depend on the input features only, not on the model: validation computes them
once per run, eval once per corpus.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from e2espk.data.corpus import Corpus
from e2espk.data.validation import require_finite
from e2espk.errors import InputDataError
from e2espk.scoring.side_scores import SideScore


def check_side_streams(corpus: Corpus, side_scores: Mapping[str, SideScore]) -> None:
    """Refuse a corpus that lacks a stream a side score reads, or its columns."""
    for name, side in side_scores.items():
        if side.stream not in corpus.streams:
            raise InputDataError(
                corpus.path,
                f"the {name!r} side score reads stream {side.stream!r}, which this corpus lacks "
                f"(it has: {', '.join(corpus.streams)})",
            )
        dims = corpus.streams[side.stream].dims
        problem = side.check_columns(int(dims[-1])) if len(dims) == 1 else "it is not (T, D)"
        if problem:
            raise InputDataError(corpus.path, f"the {name!r} side score: {problem}")


def side_values(
    corpus: Corpus, rows: Sequence[int] | np.ndarray, side_scores: Mapping[str, SideScore]
) -> dict[str, np.ndarray]:
    """``{name: (len(rows),) values}`` of each side score for ``rows`` of ``corpus``."""
    check_side_streams(corpus, side_scores)
    values = {name: np.empty(len(rows)) for name in side_scores}
    for position, row in enumerate(np.asarray(rows, dtype=np.int64).tolist()):
        utterance = str(corpus.utterances[row])
        frames: dict[str, np.ndarray] = {}
        for name, side in side_scores.items():
            if side.stream not in frames:
                read = corpus.read(row, side.stream)
                frames[side.stream] = require_finite(read, corpus.path, utterance, side.stream)
            values[name][position] = side.describe(frames[side.stream])
    return values
