"""``data_prep.py extract``: audio (Kaldi wav.scp or a wav/flac tree) -> PTM and handcrafted
streams -> an e2espk corpus. A stopped run continues when rerun with the same options.
With --slurm-array N the work runs as N Slurm array tasks, joined into the same corpus."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from e2espk import interrupts
from e2espk.cli.common import setup_logging, user_errors_exit_cleanly
from e2espk.config import parse_config, save_config


@user_errors_exit_cleanly
def main(argv: Sequence[str] | None = None) -> int:
    from pathlib import Path

    from e2espk.extract.config import ExtractConfig
    from e2espk.extract.pipeline import extract_corpus

    setup_logging()
    config = parse_config(ExtractConfig, argv, description=__doc__, prog="data_prep.py extract")
    try:
        if config.slurm.slurm_array:
            from e2espk.extract.array import run_array

            report = run_array(config, slurm_executor(config), say=print_now)
        else:
            report = extract_corpus(config)
    except interrupts.Interrupted as stop:
        print(f"{stop.args[0]}: stopped; rerun the same command to continue", file=sys.stderr)
        return stop.exit_code
    save_config(config, Path(config.output.out_path) / f"{config.output.out_name}.extract.yaml")
    for part, path in report.outputs.items():
        print(
            f"{part}: {path}: {report.speakers[part]} speakers, {report.utterances[part]} utterances"
        )
    if report.dropped_min_recordings:
        print(
            f"dropped {report.dropped_min_recordings} utterances of speakers below --min-recordings"
        )
    if report.skipped_bad:
        print(f"skipped {len(report.skipped_bad)} bad utterances (listed in the report JSON):")
        for utterance, why in sorted(report.skipped_bad.items()):
            print(f"  {utterance}: {why}")
    return 0


def print_now(line: str) -> None:
    print(line, flush=True)


def slurm_executor(config: Any) -> Any:
    """The search's submitit executor (its checks against ``sinfo``, its sbatch errors), with
    the array's resources; task logs go to the work folder. Refused while tasks of an earlier
    run (this command killed) still run: two writers of one shard would corrupt it."""
    from e2espk.cluster.executors import ClusterOptions, submitit_executor
    from e2espk.cluster.slurm_checks import EXTRACT_FLAGS, active_jobs
    from e2espk.errors import ConfigError
    from e2espk.extract.array import recorded_jobs
    from e2espk.extract.shards import work_dir

    slurm = config.slurm
    options = ClusterOptions(
        "slurm", **slurm.resources.as_kwargs(), name="e2espk-extract", flags=EXTRACT_FLAGS
    )
    executor = submitit_executor(work_dir(config) / "jobs", options)  # checks sinfo first
    running = active_jobs(recorded_jobs(work_dir(config)))
    if running:
        raise ConfigError(
            f"job(s) {', '.join(running)} of an earlier run of this command still write its "
            "shards: wait for them to end (squeue) or scancel them, then rerun"
        )
    return executor
