"""Small pure functions on feature arrays (time on axis 0)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from e2espk.registry import Registry


def repeat_pad(frames: np.ndarray, length: int) -> np.ndarray:
    """Repeat an utterance's frames until it is ``length`` long (short utterances in a crop)."""
    if frames.shape[0] >= length:
        return frames[:length]
    if frames.shape[0] == 0:
        raise ValueError("cannot pad an utterance with no frames")
    reps = -(-length // frames.shape[0])
    return np.concatenate([frames] * reps, axis=0)[:length]


CMVN: Registry[Callable[[np.ndarray], np.ndarray]] = Registry("cmvn")


@CMVN.register("none")
def no_normalization(frames: np.ndarray) -> np.ndarray:
    return frames


@CMVN.register("mean")
def mean_normalization(frames: np.ndarray) -> np.ndarray:
    """Cepstral mean normalisation: removes a stationary channel offset."""
    return frames - frames.mean(axis=0, keepdims=True)


@CMVN.register("meanvar")
def mean_variance_normalization(frames: np.ndarray) -> np.ndarray:
    centred = frames - frames.mean(axis=0, keepdims=True)
    return centred / (frames.std(axis=0, keepdims=True) + 1e-5)


ABSOLUTE_STREAMS = ("pitch",)  # left out of CMN by default: their level is the speaker's


@dataclasses.dataclass(frozen=True)
class Normalization:
    """Per-crop CMN/CMVN of the concatenated handcrafted frames, stream by stream.

    CMN removes a stationary *channel* offset, which log-mel and MFCCs have and log F0 does not:
    there the utterance mean is the speaker's pitch level, the one cue that separates two voices
    of the same engine. So the streams in ``skip`` keep their values. Checkpoints written before
    this existed normalised every column, which ``skip=()`` reproduces.
    """

    mode: str = "mean"
    skip: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        CMVN.get(self.mode)  # a clear error for an unknown mode

    def apply(self, frames: np.ndarray, columns: Mapping[str, slice]) -> np.ndarray:
        """``frames`` with the columns of every stream not in ``skip`` normalised."""
        normalize = CMVN.get(self.mode)
        if self.mode == "none":
            return frames
        if not any(name in columns for name in self.skip):
            return normalize(frames)
        out = frames.copy()
        for name, cols in columns.items():
            if name not in self.skip:
                out[:, cols] = normalize(frames[:, cols])
        return out

    def cache_key(self) -> str:
        """What embedding caches key on: the mode alone when nothing is skipped (as before)."""
        return self.mode if not self.skip else f"{self.mode}/skip={','.join(self.skip)}"


def as_normalization(cmvn: str | Normalization) -> Normalization:
    """A ``Normalization`` from itself or from a bare mode (every stream normalised)."""
    return cmvn if isinstance(cmvn, Normalization) else Normalization(str(cmvn))


def concatenated_columns(names: Sequence[str], dims: Sequence[int]) -> dict[str, slice]:
    """Where each of the concatenated handcrafted streams sits: name -> column slice."""
    columns, start = {}, 0
    for name, dim in zip(names, dims, strict=True):
        columns[name] = slice(start, start + dim)
        start += dim
    return columns
