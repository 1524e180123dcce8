"""``data_prep.py extract --slurm-array`` on the project's real local Slurm cluster.

A 3-task array over generated audio, one task made to fail once (the test-only hook
``E2ESPK_TEST_FAIL_SHARD_ONCE``, after the task has written its first window): it is
resubmitted alone, continues its shard, and the joined corpus equals a serial extraction.
About 40 s on the 2-core dev VM (each task imports torch and runs the tiny PTM).
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

from e2espk.extract.shards import FAIL_ONCE_ENV
from tests.extract_support import tiny_ptm
from tests.slurm_support import REPO_ROOT, slurm_cluster, slurm_executor  # noqa: F401
from tests.test_extract_array import same_files
from tests.test_extract_pipeline import extract_args, write_audio

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


def data_prep(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # cwd: the array tasks start in it and import this checkout's e2espk from it
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "data_prep.py"), *args], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip


def test_a_slurm_array_resubmits_a_failed_task_alone_and_joins_to_the_serial_corpus(
    tmp_path: Path,
) -> None:
    write_audio(tmp_path / "audio", speakers=3, utterances=3, seed=3)
    model = tiny_ptm(tmp_path / "wavlm", "wavlm")
    common = ["--audio-dir", str(tmp_path / "audio"), "--streams", "ptm", "mfbe", "pitch",
              "--ptm-model", str(model), "--ptm-batch-seconds", "2", "--bucket-window", "2",
              "--split-by", "speaker", "--valid-size", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    serial = data_prep(extract_args(tmp_path / "serial", *common), env)
    assert serial.returncode == 0, serial.stderr

    marker = tmp_path / "failed-once"
    env[FAIL_ONCE_ENV] = f"1:{marker}"
    array = data_prep(
        extract_args(
            tmp_path / "array", *common, "--slurm-array", "3", "--slurm-retries", "1",
            "--timeout-min", "5", "--poll-seconds", "0.5",
        ),
        env,
    )  # fmt: skip
    assert array.returncode == 0, array.stdout + array.stderr
    out = array.stdout
    assert marker.exists()
    first = re.search(r"shard 1 \(utterances 2-5 .*\): job (\d+_1), log (\S+)", out)
    assert first and "submitted 3 shard tasks as job array" in out, out
    assert Path(first.group(2)).exists() and FAIL_ONCE_ENV in Path(first.group(2)).read_text()
    again = re.search(
        rf"shard 1 .* failed in job {first.group(1)}: RuntimeError: {FAIL_ONCE_ENV}.*"
        r"resubmitted alone as job (\d+) \(submission 2 of 2\), log (\S+)",
        out,
    )
    assert again, out
    assert "continuing a partial run (2 utterances done" in Path(again.group(2)).read_text()
    assert out.count("resubmitted alone") == 1
    for part in ("train", "valid"):
        same_files(tmp_path / "serial" / f"vox_{part}.hdf", tmp_path / "array" / f"vox_{part}.hdf")


def test_a_rerun_is_refused_while_a_task_of_a_killed_run_still_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command was killed (its tasks run on): a rerun must not start a second writer."""
    from e2espk.cli.data_prep import main

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
