"""Stop long commands cleanly on SIGINT and SIGTERM (Ctrl-C, ``timeout``, Slurm, ``scancel``).

A ``KeyboardInterrupt`` raised wherever Python happens to be when the signal arrives can land
in an h5py weakref callback or a ``__del__``, where Python prints it and carries on: the run
then finishes with status 0. So the CLIs install :func:`stop_on_signals`: the handler records
the signal, and raises :class:`Interrupted` at once except inside :func:`deferred` regions
(loops over HDF5 files), which call :func:`check` at safe points instead (between utterances,
batches). A recorded signal is never lost: :func:`check` raises it later, and
``fileio.atomic_path`` refuses to move a file into place once a stop was asked for. A second
signal raises even inside a deferred region.

Library callers that install nothing keep Python's defaults (:func:`check` is then a no-op).
Submitit trial jobs install nothing either, so submitit's own requeue handlers stay in charge.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from types import FrameType
from typing import TypeVar

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
T = TypeVar("T")


class Interrupted(BaseException):
    """A stop signal arrived. A BaseException, so ``except Exception`` does not swallow it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process the signal stopped."""
        return 128 + self.signum


class _State:
    owner: int | None = None  # pid that installed the handlers (forked children ignore them)
    received: int | None = None  # the signal number, once one arrived
    deferring: int = 0  # depth of deferred() regions


_STATE = _State()


def _handle(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _STATE.owner:
        return  # a forked DataLoader worker: its parent stops and shuts it down
    first = _STATE.received is None
    _STATE.received = signum
    if _STATE.deferring and first:
        return  # raised by the next check()
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into :class:`Interrupted` for the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    saved = (_STATE.owner, _STATE.received, _STATE.deferring)
    _STATE.owner, _STATE.received, _STATE.deferring = os.getpid(), None, 0
    for signum in STOP_SIGNALS:
        if previous[signum] is not signal.SIG_IGN:  # e.g. `cmd &` in a script: stays ignored
            signal.signal(signum, _handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _STATE.owner, _STATE.received, _STATE.deferring = saved


def requested() -> int | None:
    """The stop signal received in this process, if any."""
    return _STATE.received if _STATE.owner == os.getpid() else None


def check() -> None:
    """Raise :class:`Interrupted` if a stop signal arrived; call it at safe points."""
    signum = requested()
    if signum is not None:
        raise Interrupted(signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A region whose code calls :func:`check` often: a first signal only records itself."""
    _STATE.deferring += 1
    try:
        yield
    finally:
        _STATE.deferring -= 1
    check()


def checked(items: Iterable[T]) -> Iterator[T]:
    """``items``, with a :func:`check` before each one."""
    for item in items:
        check()
        yield item
