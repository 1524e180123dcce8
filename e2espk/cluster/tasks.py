"""A submitit job of several tasks (the ranks of one distributed run), seen as one job.

submitit hands back a job whose ``result()`` refuses several tasks and whose ``exception()``
names the lowest task that failed: with torch.distributed that is usually rank 0 reporting a
closed connection, not the rank that died. Here every task's end is read (its result pickle or
its absence) and the failure names the task that failed first-hand, with its log.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from submitit.core.utils import FailedJobError, pickle_load

# sacct's states of a job that has not ended (a requeued one is pending again)
ACTIVE_STATES = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "SUSPENDED",
                 "RESIZING", "UNKNOWN")  # fmt: skip
# Words of the errors a rank gets when *another* rank went away: collateral, not the cause.
COLLATERAL = (
    "Connection closed by peer",
    "Connection reset by peer",
    "DistBackendError",
    "DistNetworkError",
    "Broken pipe",
    "NCCL communicator was aborted",
)


@dataclasses.dataclass
class TaskEnd:
    """How one task of a job ended."""

    task: int  # submitit's task id = the global rank
    outcome: str  # "success", "error" (it raised) or "none" (no result: killed, never started)
    error: str  # the last line of its traceback ("" on success)
    log: Path  # its stderr log (tracebacks and the run's warnings)

    @property
    def collateral(self) -> bool:
        """It failed because another rank did (or was killed with the job)."""
        return self.outcome == "none" or any(word in self.error for word in COLLATERAL)


def task_ends(job: Any) -> list[TaskEnd]:
    """How each task of a finished ``job`` ended (one entry for a job of one task)."""
    ends = []
    for task in range(job.num_tasks):
        paths = job.task(task).paths
        outcome, error = "none", ""
        if paths.result_pickle.exists():
            outcome, value = pickle_load(paths.result_pickle)
            if outcome == "error":
                lines = [line for line in str(value).strip().splitlines() if line.strip()]
                error = lines[-1] if lines else "(no traceback)"
        ends.append(TaskEnd(task, outcome, error, paths.stderr))
    return ends


def failure_message(job_id: str, state: str, ends: list[TaskEnd]) -> str:
    """One paragraph naming the task(s) that failed first-hand, their error and log."""
    failed = [end for end in ends if end.outcome != "success"]
    causes = [end for end in failed if not end.collateral] or failed
    parts = [
        f"task {end.task} (rank {end.task}) "
        + (f"failed: {end.error}" if end.outcome == "error" else "ended without a result")
        + f"; its log: {end.log}"
        for end in causes
    ]
    others = sorted({end.task for end in failed} - {end.task for end in causes})
    if others:
        parts.append(
            f"task(s) {', '.join(map(str, others))} stopped with it (a rank that fails ends the job)"
        )
    ended = state and state.split()[0] not in ACTIVE_STATES  # sacct may not know the end yet
    return f"Slurm job {job_id} failed{f' ({state})' if ended else ''}: " + "; ".join(parts)


class JobFailedError(FailedJobError):
    """A task of the job failed, or the job ended without results (cancelled, timed out)."""


class MultiTaskJob:
    """``done()`` when every task is, ``result()`` rank 0's, a failure naming the task."""

    def __init__(self, job: Any) -> None:
        self.job = job

    @property
    def job_id(self) -> str:
        return str(self.job.job_id)

    @property
    def num_tasks(self) -> int:
        return int(self.job.num_tasks)

    def done(self, force_check: bool = False) -> bool:
        return bool(self.job.done(force_check=force_check))

    def state(self) -> str:
        return str(self.job.state)

    def result(self) -> Any:
        """Rank 0's return value once every task has ended.

        Raises:
            JobFailedError: a task raised or has no result; the message names it and its log.
        """
        self.job.wait()
        ends = task_ends(self.job)
        if any(end.outcome != "success" for end in ends):
            raise JobFailedError(failure_message(self.job_id, self.state(), ends))
        return pickle_load(self.job.task(0).paths.result_pickle)[1]
