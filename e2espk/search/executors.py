"""Where trials run: in this process (serial search) or through submitit (local or Slurm).

Any object with ``submit(fn, *args)`` returning a job with ``done()``, ``result()`` and
``job_id`` works; the search driver does not know which it has. The submitit executors and the
resources of a trial job are ``e2espk.cluster.executors``'s, shared with train.py's
``--slurm-*`` submission.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit
from submitit.local.local import LocalJob

from e2espk import interrupts
from e2espk.cluster.tasks import MultiTaskJob


class InlineJob:
    """A trial already run in this process (serial search)."""

    def __init__(self, job_id: str, value: Any = None, error: BaseException | None = None) -> None:
        self.job_id = job_id
        self._value = value
        self._error = error

    def done(self) -> bool:
        return True

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


class InlineExecutor:
    """Runs each submitted trial immediately, in this process; errors are kept for ``result()``."""

    def __init__(self) -> None:
        self._count = 0

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> InlineJob:
        self._count += 1
        job_id = f"inline-{os.getpid()}-{self._count}"
        try:
            return InlineJob(job_id, value=fn(*args, **kwargs))
        except Exception as error:  # a failing trial must not stop the search
            if interrupts.requested():  # ... but one that failed because we are stopping does
                raise
            error.add_note("".join(traceback.format_exception(error)[-8:]))
            return InlineJob(job_id, error=error)


def reattach(cluster: str, folder: Path, job_id: str, tasks: int = 1) -> Any | None:
    """The job of an earlier search process, if it can still be followed; else None (resubmit).

    A trial of several ranks is followed as one job (rank 0's result, a failed rank named)."""
    job: Any = None
    if cluster == "slurm":
        job = submitit.SlurmJob(folder=folder / "%j", job_id=job_id, tasks=tuple(range(tasks)))
    elif cluster == "local":
        job = OrphanLocalJob(folder / "%j", job_id, tasks=tuple(range(tasks)))
        if not (job.alive() or job.task(0).paths.result_pickle.exists()):
            return None
    if job is None:
        return None
    return MultiTaskJob(job) if tasks > 1 else job


class OrphanLocalJob(LocalJob):
    """A local job whose search process was killed: followed by its pid and result pickle."""

    def alive(self) -> bool:
        try:
            os.kill(int(self.job_id), 0)
        except (OSError, ValueError):
            return False
        return True

    def done(self, force_check: bool = False) -> bool:
        return self.paths.result_pickle.exists() or not self.alive()
