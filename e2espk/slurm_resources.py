"""The Slurm resources of each job a command submits, declared once.

``hp_search_slurm.py`` (a trial per job) and ``data_prep.py extract --slurm-array`` (a shard per
array task) hold :class:`SlurmResources` as a part of their options, so both take the same
flags with the same meaning; ``e2espk.cluster.executors.ClusterOptions`` turns them into
submitit's parameters. train.py spells its own as ``--slurm-*`` (its flags share one
namespace with the training options) in ``e2espk.cluster.submission``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from e2espk.config import option


@dataclasses.dataclass
class SlurmResources:
    """Where each job runs and what it may use (submitit's Slurm parameters)."""

    partition: str | None = option(
        None, help="Slurm partition (default: the cluster's default; `sinfo` lists them)"
    )
    gpus_per_node: int = option(
        0, help="GPUs per job (needs a partition with gpu GRES: `sinfo -o '%%P %%G'`)"
    )
    cpus_per_task: int = option(1, help="CPUs per job")
    mem_gb: float | None = option(None, help="memory per job (GB)")
    timeout_min: int = option(
        60,
        help="time limit per job (minutes); near it the job is requeued and continues from its checkpoint",
    )
    account: str | None = option(None, help="Slurm account")
    qos: str | None = option(None, help="Slurm QoS")
    sbatch: list[str] = option(
        default_factory=list, help="extra sbatch options as KEY=VALUE (e.g. constraint=a100)"
    )
    max_requeues: int = option(
        3, help="requeues of a timed-out or preempted job before it counts as failed"
    )

    def as_kwargs(self) -> dict[str, Any]:
        """The resources as keyword arguments of ``ClusterOptions``."""
        return {**dataclasses.asdict(self), "sbatch": list(self.sbatch)}


@dataclasses.dataclass
class ArrayTaskResources(SlurmResources):
    """The same, for the tasks of an extraction array: longer jobs by default."""

    timeout_min: int = option(
        240,
        help="time limit per array task (minutes); near it the task is requeued and continues its shard",
    )
