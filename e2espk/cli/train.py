"""``train.py``: train a speaker embedding model and its verification network.

Runs here (one process, or one rank of ``torchrun``), or, with any ``--slurm-*`` flag, submits
the same run to Slurm as one submitit job of as many tasks as ranks (README: Scaling out).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from e2espk.cli.common import setup_logging, user_errors_exit_cleanly
from e2espk.cluster.follow import follow
from e2espk.cluster.submission import SlurmSubmitOptions, submit_training
from e2espk.cluster.tasks import MultiTaskJob
from e2espk.cluster.training_job import run_summary
from e2espk.config import build_parser, parse_config
from e2espk.distributed.process_group import env_rank, env_world_size
from e2espk.errors import ConfigError
from e2espk.logfile import format_metric
from e2espk.training.config import TrainConfig
from e2espk.training.trainer import train

SLURM_HELP = "Slurm: give any of these to submit the run as a Slurm job (submitit) instead"


def split_argv(argv: Sequence[str] | None) -> tuple[SlurmSubmitOptions, list[str]]:
    """The ``--slurm-*`` options, and the training options' arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(SlurmSubmitOptions, SLURM_HELP, "train.py", False, add_help=False)
    parser.usage = argparse.SUPPRESS
    if "-h" in args or "--help" in args:
        try:
            parse_config(TrainConfig, ["--help"], description=__doc__ or "", prog="train.py")
        finally:
            print("\n" + parser.format_help().strip())
    namespace, rest = parser.parse_known_args(args)
    return SlurmSubmitOptions(**vars(namespace)), rest


@user_errors_exit_cleanly
def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    if env_rank() > 0:  # under torchrun, rank 0 speaks for the run; the others only warn
        logging.getLogger("e2espk").setLevel(logging.WARNING)
    slurm, rest = split_argv(argv)
    config = parse_config(TrainConfig, rest, description=__doc__, prog="train.py").validate()
    if slurm.requested():
        return submit(config, slurm)
    result = train(config)  # writes RUN/train.log once the inputs have been checked
    if env_rank() > 0:
        return 0
    print_summary(config, run_summary(result, 0))
    return 0


def submit(config: TrainConfig, slurm: SlurmSubmitOptions) -> int:
    """Submit the run; print where to find it; with --slurm-wait follow it to its end."""
    if env_world_size() > 1:
        raise ConfigError(
            "--slurm-* submits the run as a Slurm job of its own ranks: run train.py with them "
            "in a plain process, not under torchrun"
        )
    job = submit_training(config, slurm)
    print_submitted(job, config)
    if not slurm.slurm_wait:
        return 0
    run_log = job_run_dir(config) / "train.log"
    followed = follow(job, run_log, lambda line: print(line, flush=True))
    if followed.status:
        print(f"error: {followed.error}", file=sys.stderr)
        return followed.status
    assert followed.summary is not None
    print_summary(config, followed.summary)
    return 0


def job_run_dir(config: TrainConfig) -> Path:
    return Path(config.checkpoint_path).absolute()


def print_submitted(job: MultiTaskJob, config: TrainConfig) -> None:
    first = job.job.task(0).paths
    ranks = job.num_tasks
    print(f"submitted Slurm job {job.job_id}: {ranks} rank(s); run directory {job_run_dir(config)}")
    print(f"job logs (rank 0): {first.stdout}  {first.stderr}")
    if ranks > 1:
        print(f"  rank r: {first.folder}/{job.job_id}_<r>_log.{{out,err}}")
    print(f"run log: {job_run_dir(config) / 'train.log'}")
    print(f"follow: squeue -j {job.job_id}; tail -f {job_run_dir(config) / 'train.log'}")


def print_summary(config: TrainConfig, summary: dict[str, Any]) -> None:
    """The run's end as results.json records it: validation EERs, best, averaged, final.pt."""
    last = summary.get("final") or {}
    print(f"run directory: {summary['run_dir']}")
    scores = [
        key.split("/")[1] for key in last if key.startswith("valid/") and key.endswith("/eer")
    ]
    for score in scores:  # cosine, learned, side scores, fused
        print(
            f"validation EER ({score}): {100 * last[f'valid/{score}/eer']:.2f}%  minDCF@0.01: {last[f'valid/{score}/min_dcf@0.01']:.3f}"
        )
    if summary.get("best_metric") is not None:
        print(
            f"best {config.select_metric}: {format_metric(config.select_metric, summary['best_metric'])} at epoch {summary['best_epoch']} -> {summary['run_dir']}/best.pt"
        )
    averaged = summary.get("averaged") or {}
    if f"valid/{config.select_metric}" in averaged:
        print(
            f"averaged epochs {averaged['epochs']}: {config.select_metric} {format_metric(config.select_metric, averaged[f'valid/{config.select_metric}'])} -> {averaged['checkpoint']}"
        )
    final = summary.get("final_checkpoint") or {}
    if final:
        print(f"final.pt = {final['source']} -> {summary['run_dir']}/final.pt")
    refitted = [key for key in ("fused/eer", "fused_asnorm/eer") if f"valid/{key}" in final]
    if refitted:  # --fusion-backends / --fusion-asnorm refitted its fusions at export
        figures = ", ".join(
            f"{key} {format_metric(key, final[f'valid/{key}'])}" for key in refitted
        )
        print(f"final.pt, score fusions refitted at export: {figures}")
