"""Small pure functions on feature arrays (time on axis 0)."""

from __future__ import annotations

from collections.abc import Callable

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
