"""Progress bars that suit where stderr goes.

On a terminal: a tqdm bar. Elsewhere (a Slurm log, ``2> file``, a pipe) a redrawn bar is a
stream of carriage returns, so the same bar is logged instead, as a plain line at every tenth
of the way (at most one per ``LINE_SECONDS``) and at the end of a long one. ``--no-progress``
turns both off.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

LOG = logging.getLogger("e2espk.progress")
LINE_SECONDS = 10.0  # fewest seconds between two logged progress lines
LINE_FORMAT = (
    "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
)
LINE_FORMAT_NO_TOTAL = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"


class LoggedProgress(tqdm):
    """A tqdm that writes nothing itself and logs a line every 10 % (or LINE_SECONDS)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._logged_at = time.monotonic()
        self._last_tenth = 0
        self._lines = 0
        kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 - closed in close()
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg is not None:  # tqdm clearing its line
            return True
        now = time.monotonic()
        finished = self.total is not None and self.n >= self.total
        tenth = int(10 * self.n / self.total) if self.total else self._last_tenth + 1
        due = tenth > self._last_tenth and now - self._logged_at >= LINE_SECONDS
        if due or (finished and self._lines and tenth > self._last_tenth):
            self._last_tenth, self._logged_at, self._lines = tenth, now, self._lines + 1
            fmt = LINE_FORMAT if self.total else LINE_FORMAT_NO_TOTAL
            LOG.info("%s", self.format_meter(**{**self.format_dict, "bar_format": fmt}))
        return True

    def close(self) -> None:
        if not self.disable:
            self.display()
        super().close()
        self.fp.close()


def progress_bar(
    iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any
) -> tqdm:
    """``tqdm(iterable, **kwargs)`` when stderr is a terminal, logged lines otherwise."""
    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    if sys.stderr.isatty():
        return tqdm(iterable, **kwargs)
    return LoggedProgress(iterable, **kwargs)
