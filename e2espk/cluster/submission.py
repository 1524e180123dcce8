"""train.py's ``--slurm-*`` flags: the run submitted as one submitit job on Slurm.

``train.py … --slurm-nodes 2 --slurm-gpus-per-node 4 --slurm-time 24:00:00`` submits one job
of 2 × 4 tasks; each task is a rank (``e2espk.cluster.ranks``), and the job is requeued and
resumed from its last checkpoint when Slurm preempts it or its time runs out
(``e2espk.cluster.training_job``). The flags are not training options: they are not saved
with the run, and the same run can be resumed elsewhere with other resources.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from e2espk.cluster.executors import ClusterOptions, submitit_executor
from e2espk.cluster.slurm_checks import TRAIN_FLAGS
from e2espk.cluster.tasks import MultiTaskJob
from e2espk.cluster.training_job import TrainingJob
from e2espk.config import config_to_dict, option
from e2espk.distributed.sharding import check_divisible
from e2espk.errors import ConfigError, InputDataError
from e2espk.training.config import TrainConfig
from e2espk.training.run_setup import check_run_dir

# Slurm's --time formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def slurm_time_minutes(value: str) -> int:
    """Minutes (rounded up) of a Slurm ``--time`` value such as ``24:00:00`` or ``2-00:00``.

    Raises:
        ConfigError: not one of Slurm's formats, or zero.
    """
    match = SLURM_TIME.match(value.strip())
    if not match:
        raise ConfigError(
            f"--slurm-time {value!r}: use Slurm's formats, e.g. 90 (minutes), 24:00:00, 2-00:00:00"
        )
    days, first, second, third = (int(g) if g else None for g in match.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = days * 86400 + first * 3600 + (second or 0) * 60 + (third or 0)  # type: ignore[operator]
    elif third is not None:  # HH:MM:SS
        seconds = first * 3600 + (second or 0) * 60 + third  # type: ignore[operator]
    else:  # MM[:SS]
        seconds = first * 60 + (second or 0)  # type: ignore[operator]
    if seconds <= 0:
        raise ConfigError(f"--slurm-time {value!r}: must be more than 0")
    return -(-seconds // 60)


@dataclasses.dataclass
class SlurmSubmitOptions:
    """Where and how train.py's run goes as a Slurm job; giving any of them submits it."""

    slurm_nodes: int = option(1, help="nodes of the job")
    slurm_gpus_per_node: int = option(
        0, help="GPUs per node, one rank each (NCCL); 0: CPU ranks (gloo)"
    )
    slurm_tasks_per_node: int | None = option(
        None,
        help="ranks per node (default: --slurm-gpus-per-node, or 1 on CPUs); world size = "
        "nodes x tasks per node",
    )
    slurm_cpus_per_task: int = option(
        1, help="CPUs per rank (DataLoader workers and torch threads; default --threads)"
    )
    slurm_mem_gb: float | None = option(None, help="memory per node (GB)")
    slurm_partition: str | None = option(
        None, help="Slurm partition (default: the cluster's default; `sinfo` lists them)"
    )
    slurm_time: str = option(
        "01:00:00",
        help="time limit of each run of the job (Slurm's formats: 90, 24:00:00, 2-00:00:00); "
        "near it the job is requeued and resumes from its last checkpoint",
    )
    slurm_account: str | None = option(None, help="Slurm account")
    slurm_qos: str | None = option(None, help="Slurm QoS")
    slurm_sbatch: list[str] = option(
        default_factory=list, help="extra sbatch options as KEY=VALUE (e.g. constraint=a100)"
    )
    slurm_max_requeues: int = option(
        3, help="requeues after a time-out or preemption before the job counts as failed"
    )
    slurm_folder: str | None = option(
        None, help="submitit's folder: job logs and pickles (default: CHECKPOINT_PATH/slurm)"
    )
    slurm_wait: bool = option(
        False,
        help="follow the job (state, the run's log) until it ends and exit with its status; "
        "without it train.py prints the job id and log paths and returns at once",
    )

    def requested(self) -> bool:
        """Any --slurm-* flag given: the run goes to Slurm instead of running here."""
        return self != SlurmSubmitOptions()

    def cluster_options(self, run_name: str) -> ClusterOptions:
        """The job's resources, checked (the flags named in errors are train.py's)."""
        gpus, tasks = self.slurm_gpus_per_node, self.slurm_tasks_per_node
        if gpus and tasks is not None and tasks != gpus:
            raise ConfigError(
                f"--slurm-tasks-per-node {tasks} with --slurm-gpus-per-node {gpus}: the run has "
                "one rank per GPU (leave --slurm-tasks-per-node out)"
            )
        tasks = tasks or gpus or 1
        return ClusterOptions(
            cluster="slurm",
            partition=self.slurm_partition,
            gpus_per_node=gpus,
            cpus_per_task=self.slurm_cpus_per_task,
            mem_gb=self.slurm_mem_gb,
            timeout_min=slurm_time_minutes(self.slurm_time),
            account=self.slurm_account,
            qos=self.slurm_qos,
            sbatch=list(self.slurm_sbatch),
            max_requeues=self.slurm_max_requeues,
            nodes=self.slurm_nodes,
            tasks_per_node=tasks,
            name=f"e2espk-train-{run_name}",
            flags=TRAIN_FLAGS,
        ).validate()


def job_options(config: TrainConfig, cluster: ClusterOptions) -> dict[str, Any]:
    """The run's flat options for the job: paths absolute (the job may start elsewhere), one
    torch thread per CPU of a task unless --threads says otherwise."""
    options = config_to_dict(config)
    for name in ("train_hdf_file", "valid_hdf_file", "valid_trials", "checkpoint_path",
                 "logdir", "init_from"):  # fmt: skip
        if options.get(name):
            options[name] = str(Path(options[name]).absolute())
    if options.get("threads") is None:
        options["threads"] = cluster.cpus_per_task
    return options


def check_inputs(config: TrainConfig) -> None:
    """What fails a job at its start, refused before it waits in the queue: a missing corpus
    or trial list, a run directory that holds another run."""
    for flag, path in (("--train-hdf-file", config.train_hdf_file),
                       ("--valid-hdf-file", config.valid_hdf_file),
                       ("--valid-trials", config.valid_trials), ("--init-from", config.init_from)):  # fmt: skip
        if path and not Path(path).is_file():
            raise InputDataError(path, f"{flag}: no such file")
    check_run_dir(config)


def submit_training(config: TrainConfig, slurm: SlurmSubmitOptions) -> MultiTaskJob:
    """Submit the run as one job of ``nodes × tasks_per_node`` ranks; returns it at once."""
    check_inputs(config)
    run_dir = Path(config.checkpoint_path).absolute()
    cluster = slurm.cluster_options(run_dir.name)
    if (
        cluster.ranks > 1
    ):  # the global batch must split over the ranks: refused here, not in the job
        check_divisible(config.batch_size, config.utts_per_speaker, cluster.ranks)
    folder = Path(slurm.slurm_folder) if slurm.slurm_folder else run_dir / "slurm"
    executor = submitit_executor(folder, cluster)
    job = executor.submit(TrainingJob(cluster.max_requeues), job_options(config, cluster))
    return job if isinstance(job, MultiTaskJob) else MultiTaskJob(job)
