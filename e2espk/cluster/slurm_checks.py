"""What the Slurm cluster offers, checked before the first job is submitted (a search's trial,
train.py's run).

Flags copied from an example (``--partition gpu --gpus-per-node 1``) onto a cluster that lacks
them make sbatch fail inside submitit, which shows a traceback. Here the partition and GPUs
asked for are checked against ``sinfo`` first, and an sbatch refusal that still happens (an
account, a QoS) becomes a one-line error that names the option concerned, as the command that
submits spells it (:class:`JobFlags`).
"""

from __future__ import annotations

import dataclasses
import getpass
import logging
import shutil
import subprocess
from collections.abc import Callable, Iterable
from typing import Any

from e2espk.errors import ConfigError

LOG = logging.getLogger(__name__)
SINFO = ["sinfo", "--noheader", "--format=%P|%G|%a"]  # partition (* = default) | GRES | avail
SBATCH_HINTS = (  # (text in sbatch's error, lower case) -> the option to check
    ("partition", "check {partition} against `sinfo`"),
    ("gres", "check {gpus_per_node}: `sinfo -o '%P %G'` lists each partition's GPUs"),
    ("account", "check {account} (`sacctmgr show assoc user=$USER` lists yours)"),
    ("qos", "check {qos} (`sacctmgr show assoc user=$USER` lists yours)"),
    ("memory", "check {mem_gb}"),
    ("time limit", "check {time} against the partition's MaxTime (`sinfo -o '%P %l'`)"),
)


@dataclasses.dataclass(frozen=True)
class JobFlags:
    """How the submitting command spells its resource flags and its jobs, for the messages."""

    job: str  # "trial job", "training job"
    partition: str
    gpus_per_node: str
    account: str
    qos: str
    mem_gb: str
    time: str
    without_cluster: str  # what to do where there is no Slurm


SEARCH_FLAGS = JobFlags(
    "trial job", "--partition", "--gpus-per-node", "--account", "--qos", "--mem-gb",
    "--timeout-min",
    "hp_search_slurm.py submits each trial as a Slurm job: on one machine use --cluster local, "
    "or start the project's single-node test cluster with `bash scripts/slurm_local.sh up`",
)  # fmt: skip
TRAIN_FLAGS = JobFlags(
    "training job", "--slurm-partition", "--slurm-gpus-per-node", "--slurm-account",
    "--slurm-qos", "--slurm-mem-gb", "--slurm-time",
    "the --slurm-* flags submit the run as a Slurm job: leave them out to train here (or with "
    "torchrun), or start the project's single-node test cluster with "
    "`bash scripts/slurm_local.sh up`",
)  # fmt: skip
EXTRACT_FLAGS = JobFlags(
    "extraction job", "--partition", "--gpus-per-node", "--account", "--qos", "--mem-gb",
    "--timeout-min",
    "data_prep.py extract --slurm-array submits each shard as a Slurm array task: on one "
    "machine leave it out, or start the project's single-node test cluster with "
    "`bash scripts/slurm_local.sh up`",
)  # fmt: skip


@dataclasses.dataclass
class Partition:
    """One partition as sinfo reports it (several lines when its nodes differ)."""

    name: str
    default: bool = False
    max_gpus: int = 0  # most GPUs of one node
    available: str = "up"


def last_line(text: str) -> str:
    """The line of a Slurm tool's output that says what went wrong (they end with it)."""
    lines = [line.strip() for line in text.splitlines() if line.strip().strip("*")]
    return lines[-1][:300] if lines else "(no output)"


def gpu_count(gres: str) -> int:
    """GPUs per node in a sinfo GRES field: ``gpu:a100:4(S:0-1),mps:100`` -> 4; ``(null)`` -> 0."""
    count = 0
    for entry in gres.split(","):
        parts = entry.split("(")[0].strip().split(":")
        if parts[0] == "gpu":
            count = max(count, int(parts[-1]) if parts[-1].isdigit() else 1)
    return count


def parse_sinfo(text: str) -> dict[str, Partition]:
    """Partitions from the output of :data:`SINFO`."""
    partitions: dict[str, Partition] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, _, rest = line.strip().partition("|")
        gres, _, available = rest.partition("|")
        default = name.endswith("*")
        name = name.rstrip("*")
        part = partitions.setdefault(name, Partition(name))
        part.default |= default
        part.max_gpus = max(part.max_gpus, gpu_count(gres))
        part.available = available or part.available
    return partitions


def check_resources(
    partitions: dict[str, Partition],
    partition: str | None,
    gpus: int,
    flags: JobFlags = SEARCH_FLAGS,
) -> None:
    """ConfigError naming the option when the cluster cannot run the jobs asked for."""
    names = ", ".join(f"{p.name} (default)" if p.default else p.name for p in partitions.values())
    if not partitions:
        raise ConfigError("this Slurm cluster reports no partition (`sinfo` lists none)")
    if partition is not None and partition not in partitions:
        raise ConfigError(
            f"{flags.partition} {partition}: this Slurm cluster has no such partition; it has {names}"
        )
    chosen = (
        partitions[partition]
        if partition
        else next((p for p in partitions.values() if p.default), None)
    )
    if chosen is None:
        raise ConfigError(
            f"this Slurm cluster has no default partition: give {flags.partition} ({names})"
        )
    if gpus > chosen.max_gpus:
        with_gpus = [p.name for p in partitions.values() if p.max_gpus >= gpus]
        where = (
            f"partitions with GPUs: {', '.join(with_gpus)}"
            if with_gpus
            else "no partition has GPUs"
        )
        has = (
            f"at most {chosen.max_gpus} GPU(s) per node"
            if chosen.max_gpus
            else "no GPUs (no gpu GRES)"
        )
        raise ConfigError(
            f"{flags.gpus_per_node} {gpus}: partition {chosen.name!r} has {has}; {where} "
            f"({flags.gpus_per_node} 0 runs the {flags.job}s on CPUs)"
        )
    if chosen.available != "up":
        LOG.warning(
            "partition %r is %s: %ss will wait until it is up",
            chosen.name,
            chosen.available,
            flags.job,
        )


Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def check_cluster(
    partition: str | None,
    gpus: int,
    run: Runner = subprocess.run,
    flags: JobFlags = SEARCH_FLAGS,
) -> None:
    """Ask ``sinfo`` what the cluster has and check the jobs' resources against it."""
    if not (shutil.which("sinfo") and shutil.which("sbatch")):
        raise ConfigError(
            f"Slurm's client tools (sinfo, sbatch) are not on PATH. {flags.without_cluster}"
        )
    try:
        answer = run(SINFO, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"`sinfo` did not answer in 60 s: is slurmctld up? {flags.without_cluster}"
        ) from None
    if answer.returncode != 0:
        raise ConfigError(
            f"no Slurm cluster answers (`sinfo`: {last_line(answer.stderr or answer.stdout)}). {flags.without_cluster}"
        )
    check_resources(parse_sinfo(answer.stdout), partition, gpus, flags)


def sbatch_refusal(error: Any, flags: JobFlags = SEARCH_FLAGS) -> ConfigError:
    """submitit's error for a failed sbatch (its stderr) as a one-line ConfigError with a hint."""
    reason = last_line(str(error))
    names = dataclasses.asdict(flags)
    hints = [hint.format(**names) for key, hint in SBATCH_HINTS if key in reason.lower()]
    return ConfigError(
        f"sbatch refused the {flags.job}: {reason}" + (f" ({hints[0]})" if hints else "")
    )


def active_jobs(job_ids: Iterable[str], run: Runner = subprocess.run) -> list[str]:
    """The ids among ``job_ids`` (``123`` or array tasks ``123_4``) that Slurm still queues
    or runs, from ``squeue`` (one line per array task)."""
    wanted = set(job_ids)
    if not wanted:
        return []
    command = ["squeue", "--noheader", "--array", "--format=%i", "--user", getpass.getuser()]
    answer = run(command, capture_output=True, text=True, timeout=60, check=False)
    if answer.returncode != 0:
        raise ConfigError(f"`squeue` failed: {last_line(answer.stderr or answer.stdout)}")
    return sorted(wanted.intersection(answer.stdout.split()))
