"""The tasks of a submitit job as the ranks of one torch.distributed run.

Slurm starts one process per task (``srun``) and tells each its place in ``SLURM_PROCID``,
``SLURM_LOCALID``, ``SLURM_NTASKS`` and the node list; submitit reads them
(``JobEnvironment``) and its ``TorchDistributedEnvironment`` turns them into the env://
variables torchrun would have set (``MASTER_ADDR`` = the first node, ``MASTER_PORT`` drawn from
the job id, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``). ``e2espk.distributed.process_group``
then joins the group exactly as under torchrun: one code path for both launchers.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import submitit

RUN_STARTS = "e2espk: a run of this job starts"


@dataclasses.dataclass(frozen=True)
class JobRank:
    """This task's place in its job."""

    job_id: str
    rank: int
    world_size: int
    restarts: int  # times Slurm requeued the job before this run (SLURM_RESTART_COUNT)


def join_job_ranks() -> JobRank:
    """Export the env:// variables of this task's rank (nothing to do outside a submitit job or
    in a job of one task) and remove a result this task left in an earlier run of a requeued job.

    CUDA_VISIBLE_DEVICES is left as Slurm set it: each rank takes ``cuda:LOCAL_RANK`` of the
    GPUs its node shows (``process_group.rank_device``).
    """
    if not os.environ.get("SUBMITIT_EXECUTOR"):  # called in this process (a serial search)
        return JobRank("", 0, 1, 0)
    env = submitit.JobEnvironment()
    stale = env.paths.result_pickle  # a requeued job's earlier run may have left this task's
    if stale.exists():  # error behind: followers must not read it as this run's end
        stale.unlink()
    restarts = restart_count()
    if env.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(
            set_cuda_visible_devices=False, overwrite=True
        )
    # in the task's stderr log, which for task 0 is also where srun reports tasks that died:
    # what srun says after this line is about this run, not an earlier one of a requeued job
    print(f"{RUN_STARTS} (job {env.job_id}, task {env.global_rank} of {env.num_tasks}, "
          f"{env.hostname}, restart {restarts})", file=sys.stderr, flush=True)  # fmt: skip
    return JobRank(str(env.job_id), env.global_rank, env.num_tasks, restarts)


def restart_count() -> int:
    """Times Slurm requeued this job before the current run (0 outside Slurm)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
