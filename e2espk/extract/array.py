"""``data_prep.py extract --slurm-array N``: the extraction as a job array, then one corpus.

The utterances are cut into N shards of whole windows (``shards``); the shards still to do go
to the executor as one array (``map_array``) or one job each (any object with ``submit``),
each task writing its own shard file. This process follows the tasks: a task that fails is
resubmitted alone, up to ``--slurm-retries`` times, and continues its shard; submitit itself
requeues a preempted or timed-out one (``--max-requeues``). When every shard is finished they
are joined (``join``) into the files a serial run writes, and the shard files are removed.

A stop (Ctrl-C, SIGTERM) or a task that keeps failing cancels the tasks still running; their
progress stays in the shard files, and rerunning the same command continues: finished shards
are kept, unfinished ones are resubmitted and resume.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from e2espk.data.pack_config import PackReport
from e2espk.errors import E2eSpkError, InputDataError, JobError
from e2espk.extract.config import ExtractConfig
from e2espk.extract.join import join_shards
from e2espk.extract.pipeline import plan_extraction, write_report
from e2espk.extract.shards import (
    SHARD_ATTR,
    ShardJob,
    ShardTask,
    plan_id,
    shard_path,
    shard_record,
    split_windows,
    work_dir,
)
from e2espk.fileio import write_json_atomic

LOG = logging.getLogger(__name__)
Say = Callable[[str], None]
JOBS_FILE = "jobs.json"  # in the work folder: shard -> the job now running it


@dataclasses.dataclass
class Attempt:
    """The job now running a shard, and which submission of the shard it is (1 = first)."""

    job: Any
    number: int


def run_array(config: ExtractConfig, executor: Any, say: Say = LOG.info) -> PackReport:
    """Extract through ``executor`` shard by shard, wait, join; returns the serial report.

    Args:
        executor: submitit's (``submit`` and, for one array, ``map_array``), or any object
            with ``submit(fn, *args)`` returning a job with ``done()``, ``result()``, ``job_id``.
        say: where progress lines go (job ids, log paths, resubmissions).

    Raises:
        JobError: a shard failed more than ``--slurm-retries`` times (names the shard, its
            utterances, its log and the error).
        InputDataError: a shard file of another extraction is in the work folder, or the
            shards disagree at the join.
    """
    plan = plan_extraction(config)
    shards = split_windows(plan.ordered, config.bucket_window, config.slurm.slurm_array)
    pid = plan_id(config, plan, shards)
    work = work_dir(config)
    prepare_work(work, len(shards), pid, config.restart)
    jobs = [ShardJob.of(plan, shard, len(shards), pid, work) for shard in shards]
    todo = [job for job in jobs if shard_record(job.path) is None]
    if len(todo) < len(jobs):
        say(f"{len(jobs) - len(todo)} of {len(jobs)} shards already finished in {work}")
    if todo:
        follow(executor, config, todo, submit_all(executor, config, todo, say), say)
    say(f"joining {len(shards)} shards from {work}")
    report = join_shards(config, plan, shards, pid)
    write_report(config, report)
    for job in jobs:
        job.path.unlink(missing_ok=True)
    return report


def prepare_work(work: Path, count: int, plan: str, restart: bool) -> None:
    """Make the work folder; with ``restart`` empty it of shard files, else refuse (by file)
    finished or partial shards of another extraction before any job is submitted."""
    work.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        final = shard_path(work, index)
        journal = final.parent / f".{final.name}.resumable.jsonl"
        if restart:
            for path in (final, journal, final.parent / f".{final.name}.resumable"):
                path.unlink(missing_ok=True)
            continue
        record = shard_record(final)
        if record is None and journal.exists():
            with journal.open(encoding="utf-8") as handle:
                record = json.loads(handle.readline() or "{}").get("signature", {}).get(SHARD_ATTR)
        if final.exists() and record is None:
            raise InputDataError(final, "not a shard file; move it away or pass --restart")
        if record is not None and record.get("plan") != plan:
            where = final if final.exists() else journal
            raise InputDataError(
                where,
                "a shard of an extraction with other options, inputs or --slurm-array is here; "
                "rerun that extraction to finish it, or pass --restart to discard it",
            )


def submit_all(
    executor: Any, config: ExtractConfig, todo: list[ShardJob], say: Say
) -> dict[int, Attempt]:
    """Submit the shards as one job array where the executor can; say each job and its log."""
    task = ShardTask()
    if hasattr(executor, "map_array"):
        submitted = list(executor.map_array(task, [config] * len(todo), todo))
        array = str(submitted[0].job_id).split("_")[0]
        say(f"submitted {len(todo)} shard tasks as job array {array}")
    else:
        submitted = [executor.submit(task, config, job) for job in todo]
    attempts = {}
    for job, submission in zip(todo, submitted, strict=True):
        attempts[job.shard.index] = Attempt(submission, 1)
        say(f"{job.shard.describe()}: job {submission.job_id}, log {log_path(submission)}")
    record_jobs(Path(todo[0].work), attempts)
    return attempts


def record_jobs(work: Path, attempts: dict[int, Attempt]) -> None:
    """Keep the job ids in the work folder: a rerun after this process was killed must not
    start a second writer of a shard whose job still runs (``recorded_jobs``)."""
    write_json_atomic(work / JOBS_FILE, {str(i): str(a.job.job_id) for i, a in attempts.items()})


def recorded_jobs(work: Path) -> list[str]:
    """The job ids of the last run's shards, if it recorded any."""
    try:
        return list(json.loads((work / JOBS_FILE).read_text()).values())
    except (OSError, ValueError, AttributeError):
        return []


def follow(
    executor: Any,
    config: ExtractConfig,
    jobs: list[ShardJob],
    attempts: dict[int, Attempt],
    say: Say,
) -> None:
    """Wait for every shard; resubmit a failed one alone; on a final failure or a stop, cancel
    the tasks still running (their shards stay resumable) and raise."""
    by_index = {job.shard.index: job for job in jobs}
    try:
        while attempts:
            for index, attempt in list(attempts.items()):
                if not attempt.job.done():
                    continue
                try:
                    attempt.job.result()
                except Exception as error:
                    job = by_index[index]
                    attempts[index] = resubmit(executor, config, job, attempt, error, say)
                    record_jobs(Path(job.work), attempts)
                    continue
                say(f"shard {index} finished (job {attempt.job.job_id})")
                del attempts[index]
            if attempts:
                time.sleep(config.slurm.poll_seconds)
    except BaseException:
        cancel_running(attempts.values())
        raise


def resubmit(
    executor: Any, config: ExtractConfig, job: ShardJob, failed: Attempt, error: Exception,
    say: Say,
) -> Attempt:  # fmt: skip
    """The next submission of a failed shard, alone; JobError when it has no retry left."""
    shard, reason, retries = job.shard, failure_reason(error), config.slurm.slurm_retries
    if failed.number > retries or not retryable(error, reason):
        raise JobError(
            f"{shard.describe()} failed {failed.number} time(s), the last in job "
            f"{failed.job.job_id}: {reason} (log: {log_path(failed.job)}); the other tasks were "
            "cancelled and every shard keeps its progress: fix the cause and rerun the same "
            "command to continue"
        )
    submission = executor.submit(ShardTask(), config, job)
    say(
        f"{shard.describe()} failed in job {failed.job.job_id}: {reason}; resubmitted alone as "
        f"job {submission.job_id} (submission {failed.number + 1} of {retries + 1}), "
        f"log {log_path(submission)}"
    )
    return Attempt(submission, failed.number + 1)


def cancel_running(attempts: Iterable[Attempt]) -> None:
    """Cancel the jobs that have not finished (their shards keep what they wrote)."""
    cancelled = []
    for attempt in attempts:
        cancel = getattr(attempt.job, "cancel", None)
        if cancel is not None and not attempt.job.done():
            cancel(check=False)
            cancelled.append(str(attempt.job.job_id))
    if cancelled:
        LOG.warning("cancelled job(s) %s; rerun the command to continue", ", ".join(cancelled))


def retryable(error: BaseException, reason: str) -> bool:
    """False for e2espk's own input and option errors (an undecodable file without
    --skip-bad, a partial shard of other options): a new job would fail the same way."""
    return not isinstance(error, E2eSpkError) and not reason.startswith("e2espk.errors.")


def log_path(job: Any) -> str:
    """The task's stderr log (submitit's), where its traceback lands."""
    paths = getattr(job, "paths", None)
    return str(paths.stderr) if paths is not None else "(ran in this process)"


def failure_reason(error: BaseException) -> str:
    """The line that says what went wrong: the exception line of a task's traceback (submitit
    quotes it between dashed lines), else the error's first line."""
    lines = [line.rstrip() for line in str(error).splitlines()]
    if "Traceback (most recent call last):" in lines:
        block = lines[lines.index("Traceback (most recent call last):") + 1 :]
        block = block[: next((i for i, x in enumerate(block) if x.startswith("---")), len(block))]
        shown = [line for line in block if line and not line.startswith(" ")]
        if shown:
            return shown[-1][:500]
    first = next((line for line in lines if line.strip()), type(error).__name__)
    return f"{type(error).__name__}: {first}"[:500]
