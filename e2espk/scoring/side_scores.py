"""Side scores: trial scores from one number per utterance, read from its input features.

A speaker embedding trained on a few dozen voice families weighs what separated *those*
families; on new families it can under-use a cue as plain as the voice's pitch level (the dev
benchmark, issue 13: a median-F0 distance alone scores 19 % EER on the unseen families, yet
adds 1-2 points to the embedding scores when fused with them). A side score makes such a cue
an explicit input of the fitted score fusion (``e2espk.scoring.score_fusion``), weighed on the
validation trials like the cosine and learned scores.

Each side score names the feature stream it reads, reduces an utterance's frames of it to
one value (``describe``), and scores a pair of values (``score_pairs``; ``score_matrix`` for
AS-norm cohorts). Reading the frames is the inference layer's job
(``e2espk.inference.side_values``); what is here is pure arithmetic on arrays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from e2espk.registry import Registry

SIDE_SCORES: Registry[type[SideScore]] = Registry("side score")


class SideScore:
    """One value per utterance from the frames of ``stream``; a trial's score compares two."""

    name = ""
    stream = ""

    def check_columns(self, columns: int) -> str | None:
        """Why frames with ``columns`` columns cannot be described (None: they can)."""
        return None

    def describe(self, frames: np.ndarray) -> float:
        """The utterance's value from its (T, D) frames of ``stream``."""
        raise NotImplementedError

    def score_pairs(self, values: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray) -> np.ndarray:
        """Scores of the trials ``(idx_a[k], idx_b[k])`` (rows of ``values``); higher: same."""
        return self.score_matrix(values[idx_a][:, None], values[idx_b][:, None]).diagonal().copy()

    def score_matrix(self, rows: np.ndarray, cohort: np.ndarray) -> np.ndarray:
        """(R, C) scores of every value in ``rows`` (R,) against ``cohort`` (C,)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name} | dataclasses.asdict(self)  # type: ignore[call-overload]


@SIDE_SCORES.register("pitch_level")
@dataclasses.dataclass(frozen=True)
class PitchLevel(SideScore):
    """``-|median ln F0(a) - median ln F0(b)|``, medians over each utterance's voiced frames.

    The median of ln F0 is robust to octave errors and to the interpolated values a tracker
    writes into unvoiced stretches; a difference of ln F0 is a ratio of F0, so a channel or a
    recording level does not move it. With fewer than ``min_voiced_frames`` voiced frames the
    median is over all frames.

    Args:
        stream: the pitch stream's name.
        log_f0_column: its column holding natural-log F0 (e2espk's extractor: 0).
        voicing_column: its column holding voicing (> 0.5: voiced; e2espk's extractor: 1), or
            None to use every frame.
        min_voiced_frames: fewer voiced frames than this: the median is over all frames.
    """

    stream: str = "pitch"
    log_f0_column: int = 0
    voicing_column: int | None = 1
    min_voiced_frames: int = 4

    name = "pitch_level"

    def check_columns(self, columns: int) -> str | None:
        named = {"ln F0": self.log_f0_column, "voicing": self.voicing_column}
        for what, column in named.items():
            if column is not None and not 0 <= column < columns:
                return (
                    f"the {what} column is {column}, but the {self.stream!r} stream has "
                    f"{columns} column(s), numbered from 0"
                )
        return None

    def describe(self, frames: np.ndarray) -> float:
        log_f0 = frames[:, self.log_f0_column]
        if self.voicing_column is not None:
            voiced = frames[:, self.voicing_column] > 0.5
            if voiced.sum() >= self.min_voiced_frames:
                log_f0 = log_f0[voiced]
        return float(np.median(log_f0)) if log_f0.size else 0.0

    def score_pairs(self, values: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray) -> np.ndarray:
        return -np.abs(values[idx_a] - values[idx_b]).astype(np.float32)

    def score_matrix(self, rows: np.ndarray, cohort: np.ndarray) -> np.ndarray:
        return -np.abs(rows[:, None] - cohort[None, :]).astype(np.float32)


def side_score_from_dict(data: Mapping[str, Any]) -> SideScore:
    """Rebuild a side score saved by ``SideScore.to_dict`` (e.g. from a checkpoint)."""
    options = {key: value for key, value in data.items() if key != "name"}
    return SIDE_SCORES.build(str(data["name"]), **options)


def build_side_scores(
    names: list[str] | tuple[str, ...], options: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, SideScore]:
    """Side scores by canonical name, each built with its ``options`` (if any)."""
    built: dict[str, SideScore] = {}
    for name in dict.fromkeys(SIDE_SCORES.canonical(n) for n in names):
        built[name] = SIDE_SCORES.build(name, **(options or {}).get(name, {}))
    return built
