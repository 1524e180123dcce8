"""submitit, and nevergrad through it, on the project's real local Slurm cluster.

Run with ``bash scripts/slurm_local.sh up && python -m pytest -m slurm tests/test_slurm_cluster.py``.
Every test uses its own ``tmp_path`` as the submitit folder (a reused folder can hand back an
old job's result pickle). Timings on the 2-core dev VM: 1-7 s per test, 13 s for the requeue
one (cred_expire=10 s), about 30 s for the file.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError

from tests.slurm_support import (
    SlurmCluster,
    preempt,
    slurm_cluster,  # noqa: F401
    slurm_executor,
)

# Every test needs the cluster (or is skipped, saying why); taking the fixture through
# usefixtures rather than as an argument keeps ruff's F811 quiet about the import above.
pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

# The job callables below travel by value: a job then neither imports this module (and pytest
# with it) nor depends on the repo root being on its sys.path (jobs start in the caller's cwd).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ---------------------------------------------------------------- code that runs in jobs
def _power_in_job(base: int, exponent: int) -> tuple[int, str]:
    return base**exponent, os.environ["SLURM_JOB_ID"]


def _timed_sleep(seconds: float) -> tuple[float, float]:
    start = time.time()  # wall clock, shared by all jobs on this one node
    time.sleep(seconds)
    return start, time.time()


def _raise(message: str) -> None:
    raise ValueError(message)


class _ResumableCounter(submitit.helpers.Checkpointable):
    """Counts to ``target``; the first run stops half-way and waits to be pre-empted.

    ``Checkpointable.checkpoint`` pickles ``self``, so the requeued run starts from the count
    and history the first run reached; a run that restarted from scratch would show ``[0]``.
    """

    def __init__(self) -> None:
        self.count = 0
        self.start_counts: list[int] = []  # self.count at the start of each run

    def __call__(self, target: int, halfway_marker: str) -> tuple[int, list[int], int]:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        self.start_counts.append(self.count)
        while self.count < target:
            self.count += 1
            if restarts == 0 and self.count == target // 2:
                Path(halfway_marker).touch()
                time.sleep(300)  # the test interrupts the job here
        return self.count, self.start_counts, restarts


def _sphere(x: float, y: float, record_dir: str) -> float:
    Path(record_dir, os.environ["SLURM_JOB_ID"]).touch()
    return (x - 1.0) ** 2 + (y + 2.0) ** 2


# ---------------------------------------------------------------- helpers
def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


def _result(job: submitit.Job[Any], timeout_s: float = 60) -> Any:
    """``job.result()`` that cannot hang the test run when the cluster misbehaves.

    Polls with a forced sacct call: submitit's own back-off (2, 4, 8 s ...) would add seconds
    to the tests where no result pickle marks the end (cancel, requeue).
    """
    try:
        _wait_until(
            lambda: job.done(force_check=True), timeout_s, f"Slurm job {job.job_id} to finish"
        )
    except AssertionError:
        job.cancel(check=False)
        raise
    return job.result()


def _wait_for_state(job: submitit.Job[Any], prefix: str, timeout_s: float = 15) -> str:
    """Poll sacct (the only state source submitit uses) until the job's state starts with prefix."""
    states: list[str] = []

    def reached() -> bool:
        states.append(job.get_info(mode="force").get("State", ""))
        return states[-1].startswith(prefix)

    try:
        _wait_until(reached, timeout_s, f"state {prefix} of job {job.job_id}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; sacct said {states[-3:]}") from None
    return states[-1]


class _RecordingExecutor:
    """Hands every submission to the Slurm executor and keeps the jobs (nevergrad needs submit)."""

    def __init__(self, executor: submitit.AutoExecutor) -> None:
        self.executor = executor
        self.jobs: list[submitit.Job[Any]] = []

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> submitit.Job[Any]:
        job = self.executor.submit(fn, *args, **kwargs)
        self.jobs.append(job)
        return job


# ---------------------------------------------------------------- tests
def test_submit_returns_result(tmp_path: Path) -> None:
    job = slurm_executor(tmp_path).submit(_power_in_job, 2, 10)
    assert isinstance(job, submitit.SlurmJob)
    assert _result(job) == (1024, job.job_id)


def test_two_jobs_run_concurrently(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    cluster: SlurmCluster = request.getfixturevalue("slurm_cluster")
    if cluster.cpus < 2:
        pytest.skip(f"node {cluster.node} has {cluster.cpus} CPU, need 2")
    executor = slurm_executor(tmp_path, cpus_per_task=1)
    jobs = [executor.submit(_timed_sleep, 2.0) for _ in range(2)]
    (start_a, end_a), (start_b, end_b) = (_result(job) for job in jobs)
    assert max(start_a, start_b) < min(end_a, end_b), "the two 2 s jobs ran one after the other"


def test_failing_job_raises_failed_job_error(tmp_path: Path) -> None:
    job = slurm_executor(tmp_path).submit(_raise, "deliberate failure 4c1e")
    with pytest.raises(FailedJobError, match="ValueError: deliberate failure 4c1e"):
        _result(job)
    assert _wait_for_state(job, "FAILED") == "FAILED"


def test_checkpointable_job_resumes_after_requeue(tmp_path: Path) -> None:
    halfway = tmp_path / "halfway"
    job = slurm_executor(tmp_path).submit(_ResumableCounter(), 10, str(halfway))
    assert isinstance(job, submitit.SlurmJob)  # _interrupt is Slurm-only
    _wait_until(halfway.exists, 30, "the job to reach its half-way point")
    preempt(job.job_id, [job.paths.stderr])  # SIGTERM, then USR2 -> checkpoint + requeue
    # The restart waits for cred_expire (10 s in our slurm.conf) plus Slurm's own delays.
    count, start_counts, restarts = _result(job, timeout_s=60)
    assert (count, start_counts, restarts) == (10, [0, 5], 1)


def test_nevergrad_minimizes_through_slurm(tmp_path: Path) -> None:
    import nevergrad as ng  # here, not at the top: a 2 s import the unit suite need not pay

    records = tmp_path / "evaluations"  # one empty file per evaluation, named by its job id
    records.mkdir()
    executor = _RecordingExecutor(slurm_executor(tmp_path / "jobs"))
    parametrization = ng.p.Instrumentation(
        x=ng.p.Scalar(lower=-5.0, upper=5.0), y=ng.p.Scalar(lower=-5.0, upper=5.0)
    )
    optimizer = ng.optimizers.NGOpt(parametrization=parametrization, budget=6, num_workers=2)
    objective = functools.partial(_sphere, record_dir=str(records))
    recommendation = optimizer.minimize(objective, executor=executor)

    x, y = recommendation.kwargs["x"], recommendation.kwargs["y"]
    assert -5.0 <= x <= 5.0 and -5.0 <= y <= 5.0
    assert optimizer.num_tell == 6
    assert len(executor.jobs) == 6
    assert all(isinstance(job, submitit.SlurmJob) for job in executor.jobs)
    assert sorted(path.name for path in records.iterdir()) == sorted(
        job.job_id for job in executor.jobs
    )


# Last: a cancelled job ignores SIGTERM and holds its core for KillWait (5 s) after scancel.
def test_cancelled_job_is_uncompleted(tmp_path: Path) -> None:
    job = slurm_executor(tmp_path).submit(time.sleep, 120)
    _wait_for_state(job, "RUNNING")
    job.cancel()
    job._results_timeout_s = 0  # no result pickle will come; do not wait 15 s for one
    with pytest.raises(UncompletedJobError, match="CANCELLED"):
        _result(job, timeout_s=20)
    assert _wait_for_state(job, "CANCELLED", timeout_s=5).startswith("CANCELLED")
