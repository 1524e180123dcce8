"""``data_prep.py extract --slurm-array``, without Slurm: sharding, joining, resubmitting.

The driver takes any executor with ``submit``; here it is the search's in-process
``InlineExecutor``, so the shards run in this process through the same task code that runs in
a Slurm array task (tests/test_extract_slurm.py runs it on the real cluster).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("soundfile")

from e2espk.config import parse_config
from e2espk.errors import ConfigError, InputDataError, JobError
from e2espk.extract.array import run_array
from e2espk.extract.config import ExtractConfig
from e2espk.extract.join import join_shards
from e2espk.extract.pipeline import extract_corpus, plan_extraction
from e2espk.extract.shards import (
    FAULTS_ENV,
    ShardJob,
    extract_shard,
    plan_id,
    split_windows,
    work_dir,
)
from e2espk.search.executors import InlineExecutor
from tests.extract_support import tiny_ptm
from tests.test_extract_pipeline import corpus_arrays, write_audio


class RecordingExecutor(InlineExecutor):
    """Runs each task at once in this process; remembers which shards were submitted."""

    def __init__(self) -> None:
        super().__init__()
        self.shards: list[int] = []

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.shards.append(args[1].shard.index)
        return super().submit(fn, *args, **kwargs)


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("array_audio")
    write_audio(root, speakers=3, utterances=3, seed=2)  # 9 utterances -> 5 windows of 2
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_ptm(tmp_path_factory.mktemp("array_ptm") / "wavlm", "wavlm")


def config_of(out: Path, audio: Path, *extra: str) -> ExtractConfig:
    args = ["--audio-dir", str(audio), "--out-path", str(out), "--out-name", "vox",
            "--no-progress", "--bucket-window", "2", *extra]  # fmt: skip
    if "--slurm-array" in extra:
        args += ["--poll-seconds", "0"]
    return parse_config(ExtractConfig, args, "test")


def same_files(a: Path, b: Path) -> None:
    """Same datasets (index included, compared exactly) and the same file attributes."""
    arrays_a, arrays_b = corpus_arrays(a), corpus_arrays(b)
    assert arrays_a.keys() == arrays_b.keys()
    for key in arrays_a:
        assert arrays_a[key].dtype == arrays_b[key].dtype, key
        assert np.array_equal(arrays_a[key], arrays_b[key]), key
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert dict(fa.attrs) == dict(fb.attrs)


def test_shards_are_runs_of_whole_windows_in_the_serial_order() -> None:
    ids = [f"u{i}" for i in range(9)]
    shards = split_windows(ids, window=2, count=3)  # 5 windows: 1 + 2 + 2
    assert [(s.start, s.stop, s.first, s.last) for s in shards] == [
        (0, 2, "u0", "u1"), (2, 6, "u2", "u5"), (6, 9, "u6", "u8"),
    ]  # fmt: skip
    assert split_windows(ids, window=4, count=3)[-1].stop == 9
    with pytest.raises(ConfigError, match="only 5 window"):
        split_windows(ids, window=2, count=6)


def test_slurm_resources_without_an_array_are_an_error(tmp_path: Path, audio: Path) -> None:
    with pytest.raises(ConfigError, match="--partition, --gpus-per-node: only with --slurm-array"):
        config_of(tmp_path, audio, "--partition", "gpu", "--gpus-per-node", "1").check()


@pytest.mark.slow
def test_an_array_with_a_failing_shard_joins_to_the_serial_corpus(
    tmp_path: Path, audio: Path, model: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:  # type: ignore[no-untyped-def]
    common = ("--streams", "ptm", "mfbe", "pitch", "--ptm-model", str(model),
              "--ptm-batch-seconds", "2", "--split-by", "speaker", "--valid-size", "1")  # fmt: skip
    serial = extract_corpus(config_of(tmp_path / "serial", audio, *common))
    monkeypatch.setenv(FAULTS_ENV, f"1:fail:{tmp_path / 'failed-once'}")
    executor = RecordingExecutor()
    said: list[str] = []
    caplog.set_level("INFO")
    config = config_of(tmp_path / "array", audio, *common, "--slurm-array", "3")
    report = run_array(config, executor, said.append)

    assert executor.shards == [0, 1, 2, 1]  # shard 1 failed once and was resubmitted alone
    assert (tmp_path / "failed-once").exists()
    assert any("shard 1 (utterances 2-5" in line and "resubmitted alone" in line for line in said)
    assert "shard-001.hdf.resumable: continuing a partial run (2 utterances done" in caplog.text
    assert dataclasses.replace(report, outputs=serial.outputs) == serial
    for part in ("train", "valid"):
        same_files(tmp_path / "serial" / f"vox_{part}.hdf", tmp_path / "array" / f"vox_{part}.hdf")
    serial_json = json.loads((tmp_path / "serial" / "vox.report.json").read_text())
    array_json = json.loads((tmp_path / "array" / "vox.report.json").read_text())
    assert {k: v for k, v in serial_json.items() if k != "outputs"} == {
        k: v for k, v in array_json.items() if k != "outputs"
    }
    assert not list(work_dir(config).glob("*shard-*"))  # shard files are gone after the join


def test_a_shard_failing_past_its_retries_is_named_and_a_rerun_continues(
    tmp_path: Path, audio: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serial = extract_corpus(config_of(tmp_path / "serial", audio, "--streams", "mfbe"))
    monkeypatch.setenv(FAULTS_ENV, f"2:fail:{tmp_path / 'failed-once'}")
    config = config_of(
        tmp_path / "array", audio, "--streams", "mfbe", "--slurm-array", "3", "--slurm-retries", "0"
    )
    with pytest.raises(JobError) as failure:
        run_array(config, RecordingExecutor(), print)
    message = str(failure.value)
    assert "shard 2 (utterances 6-8 of the serial order, 'spk2/utt0' .. 'spk2/utt2')" in message
    assert "failed 1 time(s)" in message and "fails once, as asked" in message
    assert "(log: " in message and "rerun the same command" in message

    executor = RecordingExecutor()  # the marker exists now: shard 2 succeeds
    said: list[str] = []
    report = run_array(config, executor, said.append)
    assert dataclasses.replace(report, outputs=serial.outputs) == serial
    assert (
        executor.shards == [2]
        and said[0] == f"2 of 3 shards already finished in {work_dir(config)}"
    )
    same_files(tmp_path / "serial" / "vox.hdf", tmp_path / "array" / "vox.hdf")


def test_the_join_refuses_shards_that_disagree(tmp_path: Path, audio: Path) -> None:
    config = config_of(tmp_path, audio, "--streams", "mfbe", "--slurm-array", "2")
    plan = plan_extraction(config)
    shards = split_windows(plan.ordered, 2, 2)
    pid = plan_id(config, plan, shards)
    work = work_dir(config)
    jobs = [ShardJob.of(plan, shard, 2, pid, work) for shard in shards]
    extract_shard(config, jobs[0])
    other = config_of(tmp_path, audio, "--streams", "mfcc", "--slurm-array", "2")
    extract_shard(other, jobs[1])  # another stream under this plan's name
    with pytest.raises(InputDataError, match=r"shard-001\.hdf: streams differ from .*shard-000"):
        join_shards(config, plan, shards, pid)
    extract_shard(other, ShardJob.of(plan, shards[1], 2, "another-plan", work))
    with pytest.raises(InputDataError, match=r"shard-001\.hdf: shard of another extraction"):
        join_shards(config, plan, shards, pid)
    with pytest.raises(InputDataError, match=r"shard-001\.hdf: a shard of an extraction with"):
        run_array(config, RecordingExecutor())  # refused before anything is submitted
    assert not (tmp_path / "vox.hdf").exists()


def test_a_shard_with_a_bad_file_fails_at_once_naming_it(tmp_path: Path) -> None:
    """An input error is no reason to retry: the same job would fail the same way."""
    paths = write_audio(tmp_path / "audio", speakers=2, utterances=2)
    paths["spk1/utt0"].write_bytes(b"RIFF garbage")
    config = config_of(
        tmp_path, tmp_path / "audio", "--streams", "mfbe", "--slurm-array", "2",
        "--bucket-window", "1",
    )  # fmt: skip
    executor = RecordingExecutor()
    with pytest.raises(JobError, match=r"shard 1 .* failed 1 time\(s\).*'spk1/utt0'.*--skip-bad"):
        run_array(config, executor)
    assert executor.shards == [0, 1]
