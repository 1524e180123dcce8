"""Plumbing shared by the command-line entry points: logging and user-facing errors."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Sequence

from e2espk.errors import E2eSpkError

Main = Callable[[Sequence[str] | None], int]


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr; library modules only call ``logging.getLogger(__name__)``."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def user_errors_exit_cleanly(main: Main) -> Main:
    """Turn E2eSpkError into a one-line message and exit status 2 (no traceback)."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        try:
            return main(argv)
        except E2eSpkError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper
