"""Logs a person can read: no carriage returns off a terminal, train.log and eval.log say what
ran on what, search trials keep their train.log, a resumed run repeats no TensorBoard step."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from e2espk import __version__, progress
from e2espk.cli.eval import main as eval_main
from e2espk.cli.hp_search import main as hp_search
from e2espk.cli.train import main as train_main
from e2espk.data.corpus import Corpus
from tests.conftest import TINY_TRAIN

REPO = Path(__file__).resolve().parents[1]
TINY = [f"--{k.replace('_', '-')}={v}" for k, v in TINY_TRAIN.items() if k != "progress"]


def train_args(demo_hdf: dict[str, Path], run: Path, *extra: str) -> list[str]:
    return ["--train-hdf-file", str(demo_hdf["train"]), "--valid-hdf-file", str(demo_hdf["valid"]),
            "--checkpoint-path", str(run), "--backbone", "tdnn_tiny", "--max-steps-per-epoch", "3",
            "--no-progress", *TINY, *extra]  # fmt: skip


def test_progress_off_a_terminal_is_logged_lines(
    tiny_inputs: dict[str, Path], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import pack_args

    args = [a for a in pack_args(tiny_inputs) if a != "--no-progress"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "data_prep.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr, "a bar redrawn with carriage returns in a log file"
    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="e2espk.progress"):
        for _ in progress.progress_bar(
            range(20), desc="packing", unit="utt", mininterval=0, miniters=1
        ):
            pass
    lines = [r.getMessage() for r in caplog.records if r.name == "e2espk.progress"]
    assert lines[0].startswith("packing:  10% 2/20") and lines[-1].startswith("packing: 100% 20/20")
    assert len(lines) == 10
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="e2espk.progress"):
        for _ in progress.progress_bar(range(20), enabled=False, desc="packing"):
            pass
    assert not caplog.records, "--no-progress: nothing"


def test_train_log_says_what_ran_on_what(demo_hdf: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train_main(train_args(demo_hdf, run, "--epochs", "2")) == 0
    log = (run / "train.log").read_text()
    head = log[: log.index("epoch 0/2")]
    for expected in (f"e2espk {__version__}", "device cpu", "resolved config", "backbone: tdnn_tiny",
                     f"train corpus {demo_hdf['train']}: 4 speakers, 16 utterances",
                     f"valid corpus {demo_hdf['valid']}: 2 speakers, 8 utterances", "EER in %"):  # fmt: skip
        assert expected in head, expected
    epochs = [line for line in log.splitlines() if " epoch " in line and " steps/s" in line]
    assert len(epochs) == 2
    assert all(" 3 steps, " in line and "valid/fused/eer=" in line for line in epochs)
    assert all(line.split("valid/fused/eer=")[1].split(",")[0].endswith("%") for line in epochs)
    history = json.loads((run / "history.json").read_text())
    assert all(entry["steps_per_second"] > 0 and entry["train_seconds"] > 0 for entry in history)


def test_resumed_run_repeats_no_tensorboard_step(demo_hdf: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = train_args(demo_hdf, run, "--epochs", "2", "--save-every", "1", "--warmup", "0")
    assert train_main(args) == 0
    shutil.copy(run / "epoch_000.pt", run / "last.pt")  # as if killed after epoch 1 was logged
    assert train_main([*args, "--resume"]) == 0
    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    for tag in ("train/loss", "valid/fused/eer", "train_epoch/loss"):
        steps = [event.step for event in events.Scalars(tag)]
        assert steps == sorted(set(steps)), f"{tag}: steps {steps}"
    assert [e.step for e in events.Scalars("valid/fused/eer")] == [3, 6]


def test_eval_log_and_results_name_their_inputs(
    demo_hdf: dict[str, Path], tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores"
    trials = tmp_path / "trials.txt"
    with Corpus(demo_hdf["valid"]) as corpus:
        ids, speakers = corpus.utterances.tolist(), corpus.speaker_of.tolist()
    other = speakers.index(speakers[-1])
    trials.write_text(f"{ids[0]} {ids[1]} target\n{ids[0]} {ids[other]} nontarget\n")
    args = ["--cp-path", str(tiny_checkpoint), "--test-hdf-file", str(demo_hdf["valid"]),
            "--trials-path", str(trials), "--cohort-hdf-file", str(demo_hdf["train"]),
            "--out-path", str(out), "--no-plots", "--no-progress"]  # fmt: skip
    assert eval_main(args) == 0
    inputs = json.loads((out / "results.json").read_text())["inputs"]
    assert inputs["trials"] == str(trials.resolve())
    assert inputs["test_file"] == str(demo_hdf["valid"].resolve())
    assert inputs["cohort_file"] == str(demo_hdf["train"].resolve())
    assert inputs["checkpoint"] == str(tiny_checkpoint.resolve())
    log = (out / "eval.log").read_text()
    assert str(tiny_checkpoint) in log and str(trials.resolve()) in log and "eer=" in log


def test_search_trials_keep_their_train_log(demo_hdf: dict[str, Path], tmp_path: Path) -> None:
    search = tmp_path / "search"
    args = ["--budget", "1", "--search-dir", str(search), "--search-params", "lr",
            *train_args(demo_hdf, tmp_path / "unused", "--epochs", "1")]  # fmt: skip
    args = [a for a in args if a not in ("--checkpoint-path", str(tmp_path / "unused"))]
    assert hp_search(args) == 0
    log = (search / "trials" / "trial_000" / "train.log").read_text()
    assert "resolved config" in log and "epoch 0/1:" in log


def test_console_shows_e2espk_info_but_not_other_libraries_info(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import logging

    from e2espk.cli.common import setup_logging

    setup_logging()
    logging.getLogger("torch._subclasses.fake_tensor").info("FakeTensor cache stats:")
    logging.getLogger("e2espk.training.trainer").info("epoch 0")
    logging.getLogger("h5py").warning("a warning still shows")
    err = capsys.readouterr().err
    assert "epoch 0" in err and "a warning still shows" in err
    assert "FakeTensor" not in err


def test_help_into_a_closed_pipe_is_not_a_traceback() -> None:
    """`hp_search_slurm.py --help | head` : the reader leaving early is not an error."""
    import subprocess
    import sys

    child = subprocess.Popen(
        [sys.executable, "hp_search_slurm.py", "--help"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # before the child has imported anything, let alone printed
    err = child.stderr.read().decode()
    child.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
