"""The resources of a job and the submitit executor made from them (no sbatch script by hand).

One place for both users of a cluster: hp_search_slurm.py's trial jobs and train.py's
``--slurm-*`` run. A job of several tasks (``nodes * tasks_per_node`` ranks) is one
torch.distributed run (``e2espk.cluster.ranks``); submitting it returns a
:class:`~e2espk.cluster.tasks.MultiTaskJob`, which reads as one job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError

import e2espk
from e2espk.cluster.slurm_checks import SEARCH_FLAGS, JobFlags, check_cluster, sbatch_refusal
from e2espk.cluster.tasks import MultiTaskJob
from e2espk.errors import ConfigError

CLUSTERS = ("slurm", "local")


@dataclasses.dataclass
class ClusterOptions:
    """Resources of each job (submitit parameters)."""

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
    nodes: int = 1
    tasks_per_node: int = 1  # ranks per node: one per GPU, or CPU ranks (gloo)
    name: str = "e2espk-trial"
    flags: JobFlags = SEARCH_FLAGS  # how the command spells the flags, for its errors

    @property
    def ranks(self) -> int:
        """Tasks of the job: the world size of its torch.distributed run."""
        return self.nodes * self.tasks_per_node

    def validate(self) -> ClusterOptions:
        """Refuse resources no job can have, naming the flag."""
        if self.cluster not in CLUSTERS:
            raise ConfigError(f"--cluster {self.cluster!r}: use slurm or local")
        for name, value, least in (
            ("nodes", self.nodes, 1), ("tasks per node", self.tasks_per_node, 1),
            ("cpus per task", self.cpus_per_task, 1), ("GPUs per node", self.gpus_per_node, 0),
            ("time limit (minutes)", self.timeout_min, 1), ("requeues", self.max_requeues, 0),
        ):  # fmt: skip
            if value < least:
                raise ConfigError(f"{self.flags.job}: {name} must be >= {least}, got {value}")
        if self.ranks > 1 and self.gpus_per_node and self.tasks_per_node != self.gpus_per_node:
            raise ConfigError(
                f"{self.flags.job}: {self.tasks_per_node} task(s) per node with "
                f"{self.flags.gpus_per_node} {self.gpus_per_node}: a distributed run has one "
                "rank per GPU (give as many tasks per node as GPUs, or leave the tasks out)"
            )
        if self.cluster == "local" and self.nodes > 1:
            raise ConfigError(f"--cluster local runs on this machine: 1 node, not {self.nodes}")
        return self


class SlurmSubmitter:
    """submitit's Slurm executor whose sbatch failures are one-line ConfigErrors.

    submitit raises ``FailedJobError`` with sbatch's stderr (and prints it) when sbatch refuses
    a job; that is a problem of the options, not of a trial, so the search stops with its reason.
    """

    def __init__(self, executor: submitit.AutoExecutor, flags: JobFlags = SEARCH_FLAGS) -> None:
        self.executor = executor
        self.flags = flags

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
            raise sbatch_refusal(error, self.flags) from None


class RankedSubmitter:
    """Submits jobs of several tasks and hands them back as one :class:`MultiTaskJob`."""

    def __init__(self, submitter: Any) -> None:
        self.submitter = submitter

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> MultiTaskJob:
        return MultiTaskJob(self.submitter.submit(fn, *args, **kwargs))


def sbatch_extra(items: list[str]) -> dict[str, Any]:
    """``--sbatch KEY=VALUE`` items as submitit's ``slurm_additional_parameters``."""
    extra: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--sbatch expects KEY=VALUE, got {item!r}")
        extra[key.strip().lstrip("-").replace("-", "_")] = value
    return extra


def python_path_setup() -> list[str]:
    """The job script's line that makes the job import the e2espk this process runs (none
    for an installed e2espk, which the job's Python finds by itself).

    A job starts in the submitting directory and imports e2espk from there or from the
    installed package; a command run as ``python /path/to/checkout/train.py`` from elsewhere
    would then train with other code than it was submitted with.
    """
    root = Path(e2espk.__file__).resolve().parent.parent
    if root.name in ("site-packages", "dist-packages"):
        return []
    return [f"export PYTHONPATH={shlex.quote(str(root))}${{PYTHONPATH:+:$PYTHONPATH}}"]


def submitit_executor(folder: Path, options: ClusterOptions) -> Any:
    """A submitit executor for the jobs; no sbatch script is written by hand. For Slurm, the
    partition and GPUs asked for are checked against the cluster before any job is submitted.

    Time-outs requeue a job up to ``max_requeues`` times (submitit counts them); a job of
    several tasks ends as soon as one task fails (``srun --kill-on-bad-exit``), so the others
    never wait on a collective with a rank that is gone.
    """
    options.validate()
    slurm = options.cluster == "slurm"
    if slurm:
        check_cluster(options.partition, options.gpus_per_node, flags=options.flags)
    requeues = {"slurm_max_num_timeout": options.max_requeues} if slurm else {}
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=options.cluster, **requeues)
    extra = sbatch_extra(options.sbatch)
    params: dict[str, Any] = {
        "name": options.name,
        "timeout_min": options.timeout_min,
        "gpus_per_node": options.gpus_per_node,
        "cpus_per_task": options.cpus_per_task,
    }
    if options.ranks > 1:
        params |= {"nodes": options.nodes, "tasks_per_node": options.tasks_per_node}
    if options.mem_gb:
        params["mem_gb"] = options.mem_gb
    if slurm:
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
        if options.ranks > 1:
            params["slurm_srun_args"] = ["--kill-on-bad-exit=1"]
        params["slurm_setup"] = python_path_setup()
    executor.update_parameters(**params)
    submitter: Any = SlurmSubmitter(executor, options.flags) if slurm else executor
    return RankedSubmitter(submitter) if options.ranks > 1 else submitter
