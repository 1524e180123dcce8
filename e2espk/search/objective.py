"""One search trial: a real training run returning its best validation metric.

``TrialRunner`` is what executors run (in-process, as a local subprocess or as a Slurm job). It
touches no global state of the search. It is a submitit ``Checkpointable``: when Slurm preempts
the job or its time limit nears, submitit requeues it with the same arguments, and the training
resumes from its last checkpoint (``resume=True``) instead of starting over.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import submitit

from e2espk.training.config import TrainConfig


@dataclasses.dataclass
class TrialOutcome:
    """What a finished trial reports back to the search."""

    value: float  # best validation objective (lower is better)
    metrics: dict[str, float]  # validation metrics of the best epoch
    best_epoch: int | None
    epochs_run: int
    run_dir: str
    duration_s: float
    restarts: int  # times this trial was requeued and resumed
    started_at: float = 0.0  # wall clock in the job when the trial started (last start if requeued)
    finished_at: float = 0.0  # ... and when it returned


def objective_key(objective: str) -> str:
    return f"valid/{objective}"


class TrialRunner(submitit.helpers.Checkpointable):
    """Train with a config dict and return a TrialOutcome; resumable after requeue."""

    def __init__(self) -> None:
        self.restarts = -1

    def __call__(self, config: dict[str, Any], objective: str) -> TrialOutcome:
        from e2espk.training.trainer import train

        self.restarts += 1
        started_at = time.time()
        started = time.perf_counter()
        train_config = TrainConfig(
            **{**config, "resume": True, "select_metric": objective, "progress": False}
        )
        result = train(train_config)
        key = objective_key(objective)
        values = [entry[key] for entry in result.history if key in entry]
        if not values:
            raise ValueError(f"trial produced no {key} (is --valid-hdf-file set?)")
        best = min(range(len(values)), key=values.__getitem__)
        best_entry = [entry for entry in result.history if key in entry][best]
        return TrialOutcome(
            value=float(values[best]),
            metrics={k: float(v) for k, v in best_entry.items() if k.startswith("valid/")},
            best_epoch=best_entry["epoch"],
            epochs_run=len(result.history),
            run_dir=str(result.run_dir),
            duration_s=time.perf_counter() - started,
            restarts=self.restarts,
            started_at=started_at,
            finished_at=time.time(),
        )
