"""A submitit job of several tasks (the ranks of one distributed run), seen as one job.

submitit hands back a job whose ``result()`` refuses several tasks and whose ``exception()``
names the lowest task that failed: with torch.distributed that is usually rank 0 reporting a
closed connection, not the rank that died. Here every task's end is read (its result pickle or
its absence) and the failure names the task that failed first-hand, with its log.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Any

from submitit import SlurmJob
from submitit.core.utils import FailedJobError, pickle_load

from e2espk.cluster.ranks import RUN_STARTS

POLL_SECONDS = 2.0  # between checks of a job whose end is waited for (one sacct call each)
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


# srun's report of a task that ended badly (in the job's first log, the batch script's stderr):
# "srun: error: node3: task 1: Killed", "srun: error: node3: tasks 0-1: Exited with exit code 1"
SRUN_TASK_ERROR = re.compile(r"^srun: error: \S+: tasks? ([\d,-]+): (.+)$", re.M)


def first_srun_error(log: Path) -> tuple[set[int], str]:
    """The tasks srun reported first as ended badly, and how (``Killed``, ``Exited with exit
    code 1``): the first-hand failure; srun reports the tasks it then kills after it."""
    text = log.read_text(errors="replace") if log.exists() else ""
    text = text[text.rfind(RUN_STARTS) + 1 :]  # the last run's (a requeued job appends)
    found = SRUN_TASK_ERROR.search(text)
    if not found:
        return set(), ""
    tasks: set[int] = set()
    for part in found[1].split(","):
        low, _, high = part.partition("-")
        tasks.update(range(int(low), int(high or low) + 1))
    return tasks, found[2].strip()


@dataclasses.dataclass
class TaskEnd:
    """How one task of a job ended."""

    task: int  # submitit's task id = the global rank
    outcome: str  # "success", "error" (it raised), "killed" (srun says how), "none" (no result)
    error: str  # the last line of its traceback ("" on success)
    log: Path  # its stderr log (tracebacks and the run's warnings)

    @property
    def collateral(self) -> bool:
        """It failed because another rank did (or was killed with the job)."""
        return self.outcome == "none" or any(word in self.error for word in COLLATERAL)


def task_ends(job: Any) -> list[TaskEnd]:
    """How each task of a finished ``job`` ended (one entry for a job of one task). A task
    that left no result but that srun reported first (killed by a signal, OOM) has srun's
    words as its error."""
    ends = []
    srun_tasks, srun_reason = first_srun_error(job.task(0).paths.stderr)
    for task in range(job.num_tasks):
        paths = job.task(task).paths
        outcome, error = "none", ""
        if paths.result_pickle.exists():
            outcome, value = pickle_load(paths.result_pickle)
            if outcome == "error":
                lines = [line for line in str(value).strip().splitlines() if line.strip()]
                error = lines[-1] if lines else "(no traceback)"
        elif task in srun_tasks:
            outcome, error = "killed", f"srun: {srun_reason}"
        ends.append(TaskEnd(task, outcome, error, paths.stderr))
    return ends


def failure_message(job_id: str, state: str, ends: list[TaskEnd]) -> str:
    """One paragraph naming the task(s) that failed first-hand, their error and log."""
    failed = [end for end in ends if end.outcome != "success"]
    causes = [end for end in failed if not end.collateral] or failed
    parts = [
        f"task {end.task} (rank {end.task}) "
        + (f"failed: {end.error}" if end.error else "ended without a result")
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
        """Every task wrote its result, or Slurm says the job ended (``force_check``: ask
        sacct now; submitit's own check of a job of several tasks waits for its back-off)."""
        if all(self.job.task(t).paths.result_pickle.exists() for t in range(self.num_tasks)):
            return True
        if not isinstance(self.job, SlurmJob):  # a local job: its processes say
            return bool(self.job.done(force_check=force_check))
        mode = "force" if force_check else "standard"
        return bool(self.job.watcher.is_done(self.job_id, mode=mode))

    def state(self) -> str:
        return str(self.job.state)

    def result(self) -> Any:
        """Rank 0's return value once every task has ended.

        Raises:
            JobFailedError: a task raised or has no result; the message names it and its log.
        """
        while not self.done(force_check=True):
            time.sleep(POLL_SECONDS)
        ends = task_ends(self.job)
        if any(end.outcome != "success" for end in ends):
            raise JobFailedError(failure_message(self.job_id, self.state(), ends))
        return pickle_load(self.job.task(0).paths.result_pickle)[1]
