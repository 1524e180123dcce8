"""One search trial: a real training run returning the validation metric of what it exports.

The value is that of the checkpoint train.py exports as ``final.pt`` (``--final-checkpoint``):
the averaged model's single validation when it is the averaged one, the last epoch's for
``last``, the best epoch's for ``best``, so a search optimises the model a user would take.

``TrialRunner`` is what executors run (in-process, as a local subprocess or as a Slurm job). It
touches no global state of the search. It is a submitit ``Checkpointable``: when Slurm preempts
the job or its time limit nears, submitit requeues it with the same arguments, and the training
resumes from its last checkpoint (``resume=True``) instead of starting over. A trial job of
several tasks (``--gpus-per-trial``, ``--tasks-per-trial``) is one distributed run: every task
trains as a rank (``e2espk.cluster.ranks``) and rank 0 reports the outcome.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import submitit

from e2espk.cluster.ranks import join_job_ranks
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


def exported_metrics(
    history: list[dict[str, Any]], exported: dict[str, Any], objective: str, final: str
) -> tuple[float, dict[str, float], int | None]:
    """(objective value, valid metrics, epoch) of the checkpoint exported as final.pt."""
    key = objective_key(objective)
    entries = [entry for entry in history if key in entry]
    if not entries:
        raise ValueError(f"trial produced no {key} (is --valid-hdf-file set?)")
    averaged = exported.get("averaged") or {}
    if final == "averaged" and key in averaged:
        metrics = {k: float(v) for k, v in averaged.items() if k.startswith("valid/")}
        return float(averaged[key]), metrics, entries[-1]["epoch"]
    chosen = entries[-1] if final == "last" else min(entries, key=lambda entry: entry[key])
    metrics = {k: float(v) for k, v in chosen.items() if k.startswith("valid/")}
    return float(chosen[key]), metrics, chosen["epoch"]


class TrialRunner(submitit.helpers.Checkpointable):
    """Train with a config dict and return a TrialOutcome; resumable after requeue."""

    def __init__(self) -> None:
        self.restarts = -1

    def __call__(
        self, config: dict[str, Any], objective: str, seeds: int = 1
    ) -> TrialOutcome | None:
        """Train ``config`` (with ``seeds`` > 1: once per seed, in ``RUN/seed_K``) and report
        the exported checkpoint's validation ``objective`` (the mean over the seeds)."""
        from e2espk.training.trainer import train

        rank = join_job_ranks()
        self.restarts += 1
        started_at = time.time()
        started = time.perf_counter()
        values: list[float] = []
        per_seed: list[dict[str, float]] = []
        epochs: set[int | None] = set()
        epochs_run = 0
        for config_k in seed_configs(config, seeds):
            train_config = TrainConfig.from_flat(
                {**config_k, "resume": True, "select_metric": objective, "progress": False}
            )
            result = train(train_config)  # a seed finished before a requeue only re-exports
            if rank.rank > 0:
                continue  # rank 0 speaks for the trial
            value, metrics, epoch = exported_metrics(
                result.history, result.exported, objective, train_config.final_checkpoint
            )
            values.append(value)
            per_seed.append(metrics)
            epochs.add(epoch)
            epochs_run = max(epochs_run, len(result.history))
        if rank.rank > 0:
            return None
        mean = mean_metrics(per_seed)
        if seeds > 1:
            mean |= {f"{objective_key(objective)}@seed_{k}": v for k, v in enumerate(values)}
        return TrialOutcome(
            value=float(np.mean(values)),
            metrics=mean,
            best_epoch=epochs.pop() if len(epochs) == 1 else None,
            epochs_run=epochs_run,
            run_dir=str(config["checkpoint_path"]),
            duration_s=time.perf_counter() - started,
            restarts=self.restarts,
            started_at=started_at,
            finished_at=time.time(),
        )


def seed_configs(config: dict[str, Any], seeds: int) -> list[dict[str, Any]]:
    """The training runs of one trial: the config itself, or with ``seeds`` > 1 one run per
    seed (``seed``, ``seed + 1``, ...) in ``checkpoint_path/seed_K``."""
    if seeds == 1:
        return [config]
    base_seed = int(config.get("seed", 0))
    return [
        config
        | {
            "seed": base_seed + k,
            "checkpoint_path": str(Path(config["checkpoint_path"]) / f"seed_{k}"),
        }
        for k in range(seeds)
    ]


def mean_metrics(per_seed: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each validation metric that every seed reported."""
    keys = set.intersection(*(set(metrics) for metrics in per_seed))
    return {key: float(np.mean([metrics[key] for metrics in per_seed])) for key in sorted(keys)}
