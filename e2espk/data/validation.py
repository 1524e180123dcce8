"""Loading one utterance's streams into the stored layout, and checking them.

Checks are small functions on arrays; each returns a message naming what is wrong or None.
The packer turns a problem into an error naming the file and the utterance (or skips it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from e2espk.data.corpus import PTM_KIND, StreamSpec
from e2espk.data.sources import FeatureSource
from e2espk.errors import InputDataError


@dataclasses.dataclass(frozen=True)
class Problem:
    stream: str
    message: str


def to_stored_layout(
    name: str, array: np.ndarray, ptm_layout: str, layers: list[int] | None
) -> np.ndarray:
    """Bring a loaded array to the stored layout: PTM [T, L, D] (or pooled [L, D]), others [T, F]."""
    array = np.asarray(array)
    if name == PTM_KIND:
        if array.ndim == 3 and ptm_layout == "LTD":
            array = array.transpose(1, 0, 2)
        if array.ndim not in (2, 3):
            raise ValueError(
                f"PTM array must be [frames, layers, dims] or pooled [layers, dims], got shape {array.shape}"
            )
        if layers is not None:
            n_layers = array.shape[-2]
            bad = [layer for layer in layers if not -n_layers <= layer < n_layers]
            if bad:
                raise ValueError(f"--ptm-layers {bad} out of range for {n_layers} layers")
            array = array[..., layers, :]
        return array
    if array.ndim == 1:
        return array[:, None]
    if array.ndim != 2:
        raise ValueError(
            f"handcrafted array must be [frames, features] or [frames], got shape {array.shape}"
        )
    return array


class UtteranceReader:
    """Loads every stream of an utterance from its source, in the stored layout."""

    def __init__(
        self,
        streams: Mapping[str, Mapping[str, FeatureSource]],
        ptm_layout: str,
        layers: list[int] | None,
    ) -> None:
        self.streams = streams
        self.ptm_layout = ptm_layout
        self.layers = layers

    def where(self, utterance: str, stream: str) -> str:
        """The file(s) an utterance's stream comes from ("all": every stream's file)."""
        if stream != "all":
            return self.streams[stream][utterance].where(utterance)
        return " + ".join(str(table[utterance].path) for table in self.streams.values())

    def load(self, utterance: str) -> dict[str, np.ndarray]:
        arrays = {}
        for name, table in self.streams.items():
            raw = table[utterance].load(utterance)
            try:
                arrays[name] = to_stored_layout(name, raw, self.ptm_layout, self.layers)
            except ValueError as error:
                raise InputDataError(
                    self.where(utterance, name), f"utterance {utterance!r} stream {name!r}: {error}"
                ) from None
        return arrays


def non_finite(array: np.ndarray) -> str | None:
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        n_nan = int(np.isnan(array).sum())
        n_inf = int(np.isinf(array).sum())
        return f"{n_nan} NaN and {n_inf} Inf values"
    return None


def wrong_dims(array: np.ndarray, spec: StreamSpec) -> str | None:
    got = tuple(array.shape[1:]) if spec.time_axis else tuple(array.shape)
    if got != spec.dims:
        return f"per-frame dims {got} differ from {spec.dims} of the first utterance"
    return None


def empty(array: np.ndarray, spec: StreamSpec) -> str | None:
    return "no frames" if spec.time_axis and array.shape[0] == 0 else None


def overflows(array: np.ndarray, spec: StreamSpec) -> str | None:
    """Values that would become Inf when cast to the stored float16."""
    if spec.dtype == "float16" and np.abs(array).max(initial=0.0) > np.finfo(np.float16).max:
        return "values exceed the float16 range; use --ptm-dtype float32"
    return None


def durations_disagree(
    arrays: Mapping[str, np.ndarray], specs: Mapping[str, StreamSpec], tolerance: float
) -> str | None:
    """Streams of one utterance must cover the same time span (within ``tolerance`` seconds)."""
    seconds = {
        name: arrays[name].shape[0] / spec.frame_rate_hz
        for name, spec in specs.items()
        if spec.frame_rate_hz
    }
    if len(seconds) < 2:
        return None
    spread = max(seconds.values()) - min(seconds.values())
    if spread > tolerance:
        shown = ", ".join(f"{name} {value:.3f}s" for name, value in seconds.items())
        return f"stream durations disagree by {spread:.3f}s > tolerance {tolerance:.3f}s ({shown})"
    return None


class UtteranceChecker:
    """Runs every check on an utterance's arrays against the stream specs."""

    def __init__(self, specs: list[StreamSpec], tolerance: float | None) -> None:
        self.specs = {spec.name: spec for spec in specs}
        rates = [spec.frame_rate_hz for spec in specs if spec.frame_rate_hz]
        self.tolerance = (
            tolerance if tolerance is not None else (2.0 / min(rates) if rates else 0.0)
        )

    def problem(self, arrays: Mapping[str, np.ndarray]) -> Problem | None:
        for name, spec in self.specs.items():
            array = arrays[name]
            for message in (
                wrong_dims(array, spec),
                empty(array, spec),
                non_finite(array),
                overflows(array, spec),
            ):
                if message:
                    return Problem(name, message)
        message = durations_disagree(arrays, self.specs, self.tolerance)
        return Problem("all", message) if message else None
