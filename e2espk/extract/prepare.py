"""The CPU half of extraction: decode an utterance and compute its handcrafted streams, in the
main process or in ``--workers`` processes, while the main process runs the PTM.

On a GPU the model is fast and one CPU core is not: decoding, resampling and Praat pitch then
set the pace, so they spread over worker processes. Results do not depend on the worker count.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import signal
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from functools import partial

import numpy as np

from e2espk.extract.audio import AudioItem, DecodeError, decode
from e2espk.extract.handcrafted import HANDCRAFTED, WINDOW


@dataclasses.dataclass
class Prepared:
    """One utterance ready for the model: its 16 kHz audio and handcrafted streams, or why not."""

    utterance: str
    wav: np.ndarray | None = None
    arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    error: str | None = None


def prepare(item: AudioItem, channel: int, streams: tuple[str, ...]) -> Prepared:
    """Decode ``item`` and compute ``streams`` (handcrafted names) from it."""
    try:
        wav = decode(item, channel)
    except DecodeError as error:
        return Prepared(item.utterance, error=str(error))
    if len(wav) < WINDOW:
        return Prepared(
            item.utterance, error=f"{len(wav)} samples at 16 kHz: shorter than one 25 ms frame"
        )
    arrays = {name: HANDCRAFTED.get(name).compute(wav) for name in streams}
    return Prepared(item.utterance, wav, arrays)


def _die_with_parent() -> None:
    """Worker initialiser: the kernel kills the worker when the main process dies (even by
    SIGKILL), so a killed extraction leaves no orphans; stop signals are the parent's job."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Preparer:
    """Maps :func:`prepare` over utterances, in order, inline or in worker processes."""

    def __init__(self, channel: int, workers: int) -> None:
        self.channel = channel
        self.workers = workers
        self._pool: Executor | None = None

    def __enter__(self) -> Preparer:
        if self.workers > 0:
            self._pool = ProcessPoolExecutor(self.workers, initializer=_die_with_parent)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def map(self, jobs: Sequence[tuple[AudioItem, tuple[str, ...]]]) -> Iterator[Prepared]:
        """Prepared utterances of ``jobs`` ((item, handcrafted streams) pairs), in order."""
        items = [item for item, _ in jobs]
        streams = [names for _, names in jobs]
        run = partial(_prepare_pair, self.channel)
        if self._pool is None:
            return map(run, items, streams)
        return self._pool.map(run, items, streams)


def _prepare_pair(channel: int, item: AudioItem, streams: tuple[str, ...]) -> Prepared:
    return prepare(item, channel, streams)
