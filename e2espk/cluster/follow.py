"""``--slurm-wait``: follow a submitted run until it ends, then say how it ended.

The job's state comes from Slurm's accounting (``sacct``, as submitit reads it); progress comes
from the run's own ``train.log`` (rank 0 writes an epoch line there), so what is followed is
what the run records, whichever node it runs on. A requeued job shows REQUEUED/PENDING and its
log continues where the run resumes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2espk import interrupts
from e2espk.cluster.tasks import ACTIVE_STATES, JobFailedError, MultiTaskJob


@dataclasses.dataclass
class Followed:
    """How a followed job ended."""

    status: int  # 0: every task succeeded; 1: the job failed (``error`` says how)
    summary: dict[str, Any] | None  # rank 0's result on success
    error: str = ""


class LogTail:
    """New lines of a file that may not exist yet, from where it stood at the start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def new_lines(self) -> list[str]:
        if not self.path.exists():
            return []
        size = self.path.stat().st_size
        if size < self.offset:  # replaced (not appended): read it from the start
            self.offset = 0
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        end = chunk.rfind(b"\n") + 1  # whole lines only; the rest next time
        self.offset += end
        return chunk[:end].decode("utf-8", "replace").splitlines()


def slurm_state(job: MultiTaskJob) -> str:
    """The job's state as sacct reports it now ("UNKNOWN" before it appears there)."""
    info = job.job.get_info(mode="force") if hasattr(job.job, "get_info") else {}
    return str(info.get("State") or "UNKNOWN")


def follow(
    job: MultiTaskJob,
    run_log: Path,
    say: Callable[[str], None],
    poll_s: float = 5.0,
) -> Followed:
    """Print the job's state changes and the run log's new lines until every task has ended.

    A stop signal (Ctrl-C) stops following, not the job: the message says how to follow it
    again or cancel it.
    """
    tail, last = LogTail(run_log), ""
    try:
        while True:
            state = slurm_state(job)
            if state != last:
                say(f"job {job.job_id}: {state}")
                last = state
            for line in tail.new_lines():
                say(line)
            finished = state.split()[0] not in ACTIVE_STATES
            if job.done() or finished:
                break
            interrupts.check()
            time.sleep(poll_s)
    except interrupts.Interrupted:
        say(f"stopped following; job {job.job_id} goes on (`squeue -j {job.job_id}`; "
            f"`scancel {job.job_id}` stops it)")  # fmt: skip
        raise
    try:
        summary = job.result()
    except JobFailedError as error:
        for line in tail.new_lines():
            say(line)
        return Followed(1, None, str(error))
    for line in tail.new_lines():
        say(line)
    return Followed(0, summary)
