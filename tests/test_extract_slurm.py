"""``data_prep.py extract --slurm-array`` on the project's real local Slurm cluster.

A 3-task array over generated audio with two test-only faults (``E2ESPK_TEST_SHARD_FAULTS``,
after a task has written its first window): shard 1 fails once and is resubmitted alone as a
new job; shard 2 stalls and is preempted (SIGTERM then USR2, as submitit's own tests do), so
submitit requeues it under the same job id. Both continue their shards, and the joined corpus
equals a serial extraction. About 55 s on the 2-core dev VM (each task imports torch and runs
the tiny PTM; the requeue waits for Slurm's cred_expire of 10 s).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("soundfile")

from e2espk.cli.data_prep import main
from e2espk.extract.shards import FAULTS_ENV
from tests.extract_support import tiny_ptm
from tests.slurm_support import REPO_ROOT, preempt, slurm_cluster, slurm_executor  # noqa: F401
from tests.test_extract_array import same_files
from tests.test_extract_pipeline import extract_args, write_audio
from tests.test_slurm_cluster import _wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


def data_prep(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    # cwd: the array tasks start in it and import this checkout's e2espk from it
    return subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "data_prep.py"), *args], cwd=REPO_ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_slurm_array_resubmits_a_failed_task_alone_requeues_a_preempted_one_and_joins(
    tmp_path: Path,
) -> None:
    write_audio(tmp_path / "audio", speakers=3, utterances=3, seed=3)
    model = tiny_ptm(tmp_path / "wavlm", "wavlm")
    common = ["--audio-dir", str(tmp_path / "audio"), "--streams", "ptm", "mfbe", "pitch",
              "--ptm-model", str(model), "--ptm-batch-seconds", "2", "--bucket-window", "2",
              "--split-by", "speaker", "--valid-size", "1"]  # fmt: skip
    assert main(extract_args(tmp_path / "serial", *common)) == 0  # in this process: quicker
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    failed, stalled = tmp_path / "failed-once", tmp_path / "stalled-once"
    env[FAULTS_ENV] = f"1:fail:{failed},2:stall:{stalled}"
    array = data_prep(
        extract_args(
            tmp_path / "array", *common, "--slurm-array", "3", "--slurm-retries", "1",
            "--timeout-min", "5", "--poll-seconds", "0.5",
        ),
        env,
    )  # fmt: skip
    try:
        assert array.stdout is not None
        lines = [array.stdout.readline() for _ in range(4)]  # the array, then a line per shard
        preempted = re.search(r"^shard 2 .*: job (\d+_2), log (\S+)$", lines[3])
        assert preempted, lines
        _wait_until(stalled.exists, 120, "shard 2 to stall after its first window")
        preempt(preempted.group(1), [Path(preempted.group(2))])
        rest, err = array.communicate(timeout=300)
    finally:
        array.kill()
    out = "".join(lines) + rest
    assert array.returncode == 0, out + err
    assert "submitted 3 shard tasks as job array" in out and failed.exists()

    first = re.search(r"shard 1 \(utterances 2-5 .*\): job (\d+_1), log (\S+)", out)
    assert first and FAULTS_ENV in Path(first.group(2)).read_text(), out
    again = re.search(
        rf"shard 1 .* failed in job {first.group(1)}: RuntimeError: {FAULTS_ENV}.*"
        r"resubmitted alone as job (\d+) \(submission 2 of 2\), log (\S+)",
        out,
    )
    assert again and out.count("resubmitted alone") == 1, out
    assert "continuing a partial run (2 utterances done" in Path(again.group(2)).read_text()

    assert f"shard 2 finished (job {preempted.group(1)})" in out  # requeued, not resubmitted
    log = Path(preempted.group(2)).read_text()
    assert "continuing a partial run (2 utterances done" in log, log

    for part in ("train", "valid"):
        same_files(tmp_path / "serial" / f"vox_{part}.hdf", tmp_path / "array" / f"vox_{part}.hdf")


def test_a_rerun_is_refused_while_a_task_of_a_killed_run_still_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command was killed (its tasks run on): a rerun must not start a second writer."""
    write_audio(tmp_path / "audio", speakers=2, utterances=2)
    job = slurm_executor(tmp_path / "jobs").submit(time.sleep, 120)  # the earlier run's task
    try:
        work = tmp_path / "hdf" / "vox.shards"
        work.mkdir(parents=True)
        (work / "jobs.json").write_text(json.dumps({"0": job.job_id}))
        args = extract_args(
            tmp_path / "hdf", "--audio-dir", str(tmp_path / "audio"), "--streams", "mfbe",
            "--slurm-array", "2", "--bucket-window", "1",
        )  # fmt: skip
        assert main(args) == 2
        assert f"job(s) {job.job_id} of an earlier run of this command" in capsys.readouterr().err
        assert not list(work.glob("*shard*"))
    finally:
        job.cancel(check=False)
