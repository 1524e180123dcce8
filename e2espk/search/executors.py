"""Where trials run: in this process (serial search) or through submitit (local or Slurm).

Any object with ``submit(fn, *args)`` returning a job with ``done()``, ``result()`` and
``job_id`` works; the search driver does not know which it has.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError
from submitit.local.local import LocalJob

from e2espk import interrupts
from e2espk.errors import ConfigError
from e2espk.search.slurm_checks import check_cluster, sbatch_refusal


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


@dataclasses.dataclass
class ClusterOptions:
    """Resources of each trial job (submitit parameters)."""

    cluster: str = "slurm"  # slurm | local
    partition: str | None = None
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    timeout_min: int = 60
    account: str | None = None
    qos: str | None = None
    sbatch: list[str] = dataclasses.field(default_factory=list)  # extra KEY=VALUE sbatch options
    max_requeues: int = 3
    job_name: str = "e2espk-trial"  # Slurm job name (squeue); "trial" in sbatch errors


class SlurmSubmitter:
    """submitit's Slurm executor whose sbatch failures are one-line ConfigErrors.

    submitit raises ``FailedJobError`` with sbatch's stderr (and prints it) when sbatch refuses
    a job; that is a problem of the options, not of a trial, so the search stops with its reason.
    """

    def __init__(self, executor: submitit.AutoExecutor, what: str = "trial job") -> None:
        self.executor = executor
        self.what = what

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._refusals_named(self.executor.submit, fn, *args, **kwargs)

    def map_array(self, fn: Callable[..., Any], *iterables: Any) -> list[Any]:
        """One Slurm job array, one task per element (submitit's ``map_array``)."""
        return self._refusals_named(self.executor.map_array, fn, *iterables)

    def _refusals_named(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        printed = io.StringIO()  # submitit prints sbatch's stderr before raising it
        try:
            with contextlib.redirect_stderr(printed):
                return call(*args, **kwargs)
        except (FailedJobError, FailedSubmissionError) as error:
            raise sbatch_refusal(error, self.what) from None


def submitit_executor(folder: Path, options: ClusterOptions) -> Any:
    """A submitit executor for trial jobs; no sbatch script is written by hand. For Slurm, the
    partition and GPUs asked for are checked against the cluster before any job is submitted."""
    if options.cluster not in ("slurm", "local"):
        raise ConfigError(f"--cluster {options.cluster!r}: use slurm or local")
    if options.cluster == "slurm":
        check_cluster(options.partition, options.gpus_per_node)
    requeues = {"slurm_max_num_timeout": options.max_requeues} if options.cluster == "slurm" else {}
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=options.cluster, **requeues)
    extra: dict[str, Any] = {}
    for item in options.sbatch:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--sbatch expects KEY=VALUE, got {item!r}")
        extra[key.strip().lstrip("-").replace("-", "_")] = value
    params: dict[str, Any] = {
        "name": options.job_name,
        "timeout_min": options.timeout_min,
        "gpus_per_node": options.gpus_per_node,
        "cpus_per_task": options.cpus_per_task,
    }
    if options.mem_gb:
        params["mem_gb"] = options.mem_gb
    if options.cluster == "slurm":
        named: tuple[tuple[str, str | None], ...] = (
            ("slurm_partition", options.partition),
            ("slurm_account", options.account),
            ("slurm_qos", options.qos),
        )
        for name, setting in named:
            if setting:
                params[name] = setting
        if extra:
            params["slurm_additional_parameters"] = extra
    executor.update_parameters(**params)
    if options.cluster != "slurm":
        return executor
    return SlurmSubmitter(executor, options.job_name.removeprefix("e2espk-") + " job")


def reattach(cluster: str, folder: Path, job_id: str) -> Any | None:
    """The job of an earlier search process, if it can still be followed; else None (resubmit)."""
    if cluster == "slurm":
        return submitit.SlurmJob(folder=folder / "%j", job_id=job_id)
    if cluster == "local":
        job = OrphanLocalJob(folder / "%j", job_id)
        return job if job.alive() or job.paths.result_pickle.exists() else None
    return None


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
