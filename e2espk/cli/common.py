"""Plumbing shared by the command-line entry points: logging, user-facing errors, signals."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

from e2espk import interrupts
from e2espk.errors import E2eSpkError
from e2espk.logfile import LOG_FORMAT

Main = Callable[[Sequence[str] | None], int]


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr; library modules only call ``logging.getLogger(__name__)``.

    e2espk's own loggers log at INFO (DEBUG with ``verbose``); other libraries only from
    WARNING up, so that e.g. torch's exit-time INFO statistics stay out of the console.
    """
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, stream=sys.stderr, force=True)
    logging.getLogger("e2espk").setLevel(logging.DEBUG if verbose else logging.INFO)


def interrupted(signum: int) -> int:
    """Say that a stop signal ended the command; the exit status is 128 + its number."""
    name = interrupts.Interrupted(signum).args[0]
    print(f"{name}: stopped, no partial output kept", file=sys.stderr)
    return 128 + signum


def user_errors_exit_cleanly(main: Main) -> Main:
    """Turn E2eSpkError into a one-line message and exit status 2 (no traceback), and SIGINT /
    SIGTERM into a prompt stop with status 130 / 143 (``interrupts``)."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        with interrupts.stop_on_signals():
            try:
                status = main(argv)
                interrupts.check()  # a signal that arrived where it could not be raised
                return status
            except interrupts.Interrupted as stop:
                return interrupted(stop.signum)
            except KeyboardInterrupt:
                return interrupted(2)
            except BrokenPipeError:  # e.g. `train.py --help | head`: the reader left, not an error
                os.dup2(
                    os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno()
                )  # Python docs' recipe
                return 128 + signal.SIGPIPE
            except E2eSpkError as error:
                if interrupts.requested():
                    return interrupted(interrupts.requested() or 2)
                print(f"error: {error}", file=sys.stderr)
                return 2
            except Exception:
                signum = interrupts.requested()
                if signum is None:
                    raise
                return interrupted(signum)  # e.g. a DataLoader worker the signal also reached

    return wrapper
