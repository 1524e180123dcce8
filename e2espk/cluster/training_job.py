"""train.py's run as a submitit job: every task trains as one rank; requeued, it resumes.

Slurm signals the job (USR2, ``--signal``) some time before its limit or when it is
preempted; submitit then calls :meth:`TrainingJob.checkpoint` on rank 0, saves what it returns
(the same run, with ``--resume``) and requeues the job. The requeued run continues from the
last checkpoint the run directory holds (``last.pt``, written at every epoch's end): the epochs
already done are not trained again. Requeues stop after ``max_requeues`` (time-outs and
preemptions alike); the job then fails, saying so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import DelayedSubmission

import e2espk
from e2espk.cluster.ranks import join_job_ranks, restart_count
from e2espk.training.config import TrainConfig

LOG = logging.getLogger(__name__)


def run_summary(result: Any, restarts: int) -> dict[str, Any]:
    """What rank 0 reports back: results.json's entries, the restarts and the code it ran."""
    exported = result.exported
    return {
        "run_dir": str(result.run_dir),
        "epochs_run": len(result.history),
        "final": result.history[-1] if result.history else None,
        "best_metric": result.best_metric,
        "best_epoch": result.best_epoch,
        "averaged": exported.get("averaged"),
        "final_checkpoint": exported.get("final"),
        "restarts": restarts,
        "code": str(Path(e2espk.__file__).resolve().parent),  # which e2espk the job imported
    }


class TrainingJob(submitit.helpers.Checkpointable):
    """Train with flat train.py options in a submitit job; rank 0 returns :func:`run_summary`."""

    def __init__(self, max_requeues: int) -> None:
        self.max_requeues = max_requeues

    def __call__(self, options: dict[str, Any]) -> dict[str, Any] | None:
        from e2espk.training.trainer import train  # in the job: the submitter need not load it

        rank = join_job_ranks()
        result = train(TrainConfig.from_flat(options))
        return run_summary(result, rank.restarts) if rank.rank == 0 else None

    def checkpoint(self, options: dict[str, Any]) -> DelayedSubmission | None:  # type: ignore[override]
        """The same run resumed from its run directory, or None (no requeue) past the limit."""
        restarts = restart_count()
        if restarts >= self.max_requeues:
            LOG.warning(
                "not requeued: the job was requeued %d time(s) already (limit %d)",
                restarts, self.max_requeues,
            )  # fmt: skip
            return None
        LOG.warning(
            "requeued (%d of at most %d): resumes from last.pt", restarts + 1, self.max_requeues
        )
        return DelayedSubmission(self, {**options, "resume": True})
