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


def require_finite(
    array: np.ndarray, path: object, utterance: str, stream: str, first_frame: int = 0
) -> np.ndarray:
    """``array`` unchanged if it is finite; else an InputDataError naming the file, the
    utterance, the stream and the first bad frame. Reads of a packed corpus go through this:
    a file overwritten after packing would otherwise surface as NaN scores far downstream."""
    problem = non_finite(array)
    if problem is None:
        return array
    where = ""
    if array.ndim:
        bad = ~np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
        where = f", the first at frame {first_frame + int(np.flatnonzero(bad)[0])}"
    raise InputDataError(
        path,
        f"utterance {utterance!r} stream {stream!r}: {problem}{where}; the file is corrupt, "
        "rebuild it with data_prep.py",
    )


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


DURATION_EPSILON_S = 1e-6  # frames / rate in floating point: 1.53 - 1.51 is 0.0200000000000000178


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
    if spread <= tolerance + DURATION_EPSILON_S:
        return None
    shown = ", ".join(f"{name} {value:.3f}s" for name, value in seconds.items())
    message = (
        f"stream durations disagree by {spread:.3f}s > tolerance {tolerance:.3f}s ({shown}; "
        "--duration-tolerance SECONDS allows more)"
    )
    return transposed_ptm_hint(arrays, specs, seconds, tolerance) or message


def transposed_ptm_hint(
    arrays: Mapping[str, np.ndarray],
    specs: Mapping[str, StreamSpec],
    seconds: Mapping[str, float],
    tolerance: float,
) -> str | None:
    """The message for a ``[layers, frames, dims]`` PTM array read as ``[frames, layers, dims]``:
    its first axis is short (a layer count) and its second one spans the other streams."""
    ptm, spec = arrays.get(PTM_KIND), specs.get(PTM_KIND)
    others = [value for name, value in seconds.items() if name != PTM_KIND]
    if ptm is None or spec is None or not spec.frame_rate_hz or ptm.ndim != 3 or not others:
        return None
    layers, frames = ptm.shape[:2]
    as_frames = frames / spec.frame_rate_hz
    if layers >= frames or any(abs(as_frames - o) > tolerance + DURATION_EPSILON_S for o in others):
        return None
    return (
        f"the PTM array of shape {tuple(ptm.shape)} looks like [layers, frames, dims] "
        f"({layers} layers, {frames} frames = {as_frames:.3f}s like the other streams, "
        f"not {seconds[PTM_KIND]:.3f}s): pass --ptm-layout LTD"
    )


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
