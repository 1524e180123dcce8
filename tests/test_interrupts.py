"""Killed and interrupted commands: real processes, real signals, nothing half-written left.

Each command runs as ``python SCRIPT.py ...`` in a subprocess, as a user or Slurm runs it; the
test waits until it is in the middle of its work, sends the signal and checks the exit status
(130 for SIGINT, 143 for SIGTERM) and what is left on disk.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from e2espk.cli.data_prep import main as data_prep
from e2espk.cli.eval import main as eval_main
from e2espk.cli.hp_search import main as hp_search
from e2espk.cli.train import main as train_main
from e2espk.fileio import remove_stale_partials
from tests.conftest import TINY_TRAIN, write_kaldi_dir

REPO = Path(__file__).resolve().parents[1]
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
# runs a CLI with each utterance's embedding slowed down, so a signal lands mid-extraction
SLOW_EMBEDDING = """
import pathlib, sys, time
import e2espk.inference.extraction as embedding
original = embedding._utterance_windows
def slow(*args, **kwargs):
    pathlib.Path(sys.argv[1]).touch()
    time.sleep(0.3)
    yield from original(*args, **kwargs)
embedding._utterance_windows = slow
from importlib import import_module
raise SystemExit(import_module(sys.argv[2]).main(sys.argv[3:]))
"""


def start(*args: str) -> subprocess.Popen[str]:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, *args], cwd=REPO, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[str], limit: float = 60
) -> None:
    deadline = time.monotonic() + limit
    while not ready():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"finished (rc {process.returncode}) before the signal:\n{out}\n{err}")
        assert time.monotonic() < deadline, "never got to the point to interrupt"
        time.sleep(0.02)


def stop(process: subprocess.Popen[str], signum: int) -> tuple[int, str]:
    process.send_signal(signum)
    _, err = process.communicate(timeout=30)
    return process.returncode, err


def partials(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.partial")) if directory.exists() else []


@pytest.fixture
def many_utterances(tmp_path: Path) -> Path:
    """A Kaldi dir of 3000 short utterances: packing takes about a second."""
    rng = np.random.default_rng(0)
    feats = {f"spk{i % 10}-utt{i:05d}": rng.standard_normal((20, 4)).astype(np.float32) for i in range(3000)}  # fmt: skip
    return write_kaldi_dir(tmp_path / "kaldi", feats, {u: u.split("-")[0] for u in feats})


def pack_command(kaldi: Path, out: Path) -> list[str]:
    return ["data_prep.py", "--path-to-data", str(kaldi), "--out-path", str(out), "--no-progress"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_data_prep_stops_on_a_signal_and_keeps_nothing(
    many_utterances: Path, tmp_path: Path, signum: int
) -> None:
    out = tmp_path / "out"
    process = start(*pack_command(many_utterances, out))
    wait_until(lambda: bool(partials(out)), process)  # packing has begun
    status, err = stop(process, signum)
    assert status == EXIT[signum], err
    assert f"interrupted by {signal.Signals(signum).name}" in err
    assert not out.exists(), f"left behind: {list(out.rglob('*'))}"


def test_rerun_removes_the_temp_file_of_a_killed_run_but_not_a_live_ones(
    many_utterances: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    process = start(*pack_command(many_utterances, out))
    wait_until(lambda: bool(partials(out)), process)
    process.kill()  # SIGKILL: nothing runs in the process any more
    process.communicate()
    (left,) = partials(out)
    assert f".{process.pid}@" in left.name, "the temp file names its writer"
    alive = subprocess.Popen(["sleep", "30"])
    try:
        live = out / left.name.replace(f".{process.pid}@", f".{alive.pid}@")
        live.write_bytes(b"")  # as if another data_prep were writing the same file
        assert data_prep(pack_command(many_utterances, out)[1:]) == 0
        assert partials(out) == [live]
        assert remove_stale_partials(out / "corpus.hdf") == []
    finally:
        alive.kill()
        alive.wait()
    assert remove_stale_partials(out / "corpus.hdf") == [live]


def test_training_stops_on_sigterm_and_resumes(demo_hdf: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    tiny = [f"--{k.replace('_', '-')}={v}" for k, v in TINY_TRAIN.items() if k != "progress"]
    args = ["--train-hdf-file", str(demo_hdf["train"]), "--valid-hdf-file", str(demo_hdf["valid"]),
            "--checkpoint-path", str(run), "--backbone", "tdnn_tiny", "--no-progress",
            "--max-steps-per-epoch", "2", *tiny]  # fmt: skip
    process = start("train.py", *args, "--epochs", "1000")
    wait_until(lambda: (run / "last.pt").exists(), process)  # an epoch is checkpointed
    status, err = stop(process, signal.SIGTERM)
    assert status == 143, err
    assert "interrupted by SIGTERM" in err and "rerun with --resume" in err
    assert partials(run) == [] and not (run / "results.json").exists()
    log = (run / "train.log").read_text()
    assert "training interrupted by SIGTERM" in log and "stopped: Interrupted" in log
    assert train_main([*args, "--epochs", "1", "--resume"]) == 0, "last.pt resumes"


@pytest.mark.parametrize("command", ["eval", "embed"])
def test_eval_and_embed_stop_on_sigterm(
    demo_hdf: dict[str, Path], tiny_checkpoint: Path, tmp_path: Path, command: str
) -> None:
    marker, out = tmp_path / "embedding_started", tmp_path / "out"
    args = {
        "eval": ["--cp-path", str(tiny_checkpoint), "--test-hdf-file", str(demo_hdf["valid"]),
                 "--out-path", str(out), "--no-progress", "--no-plots"],
        "embed": ["--cp-path", str(tiny_checkpoint), "--data", str(demo_hdf["valid"]),
                  "--out", str(out / "emb.h5"), "--no-progress"],
    }[command]  # fmt: skip
    process = start("-c", SLOW_EMBEDDING, str(marker), f"e2espk.cli.{command}", *args)
    wait_until(marker.exists, process)
    status, err = stop(process, signal.SIGTERM)
    assert status == 143, err
    assert partials(out) == []
    assert not (out / "results.json").exists() and not (out / "emb.h5").exists()
    assert not list(out.glob("scores_*")), "no score file from a stopped eval"


def test_search_stops_on_sigint_and_keeps_its_state(
    demo_hdf: dict[str, Path], tmp_path: Path
) -> None:
    marker, search = tmp_path / "validating", tmp_path / "search"
    tiny = [f"--{k.replace('_', '-')}={v}" for k, v in TINY_TRAIN.items() if k != "progress"]
    args = ["--budget", "3", "--search-dir", str(search), "--train-hdf-file", str(demo_hdf["train"]),
            "--valid-hdf-file", str(demo_hdf["valid"]), "--backbone", "tdnn_tiny", "--epochs", "1",
            "--search-params", "lr", "--no-progress", *tiny]  # fmt: skip
    process = start("-c", SLOW_EMBEDDING, str(marker), "e2espk.cli.hp_search", *args)
    wait_until(marker.exists, process)  # trial 0 is validating
    status, err = stop(process, signal.SIGINT)
    assert status == 130, err
    assert "rerun the same command to continue" in err
    assert (search / "search_state.json").exists() and partials(search) == []
    assert (search / "trials" / "trial_000" / "train.log").exists()


def test_early_errors_leave_no_directories(
    demo_hdf: dict[str, Path], tiny_checkpoint: Path, tmp_path: Path
) -> None:
    missing = str(tmp_path / "missing.hdf")
    run = tmp_path / "run"
    assert train_main(["--train-hdf-file", missing, "--checkpoint-path", str(run)]) == 2
    assert train_main(["--train-hdf-file", str(demo_hdf["train"]), "--checkpoint-path", str(run),
                       "--valid-hdf-file", missing]) == 2  # fmt: skip
    assert not run.exists(), "no empty run dir, no 0-byte train.log"
    for bad in (["--trials-path", missing], ["--cohort-hdf-file", missing]):
        out = tmp_path / "scores"
        args = ["--cp-path", str(tiny_checkpoint), "--test-hdf-file", str(demo_hdf["valid"]),
                "--out-path", str(out), *bad]  # fmt: skip
        assert eval_main(args) == 2
        assert not out.exists(), bad
    search = tmp_path / "search"
    assert hp_search(["--search-dir", str(search), "--search-optimizer", "NoSuchOpt",
                      "--train-hdf-file", str(demo_hdf["train"]),
                      "--valid-hdf-file", str(demo_hdf["valid"])]) == 2  # fmt: skip
    assert not search.exists()


def test_data_prep_bad_utterance_leaves_no_output_dir(tmp_path: Path) -> None:
    feats = {"a-1": np.ones((20, 4), np.float32), "a-2": np.full((20, 4), np.nan, np.float32)}
    kaldi = write_kaldi_dir(tmp_path / "kaldi", feats, {u: "a" for u in feats})
    out = tmp_path / "nested" / "out"
    assert data_prep(pack_command(kaldi, out)[1:]) == 2
    assert not (tmp_path / "nested").exists()
