"""``data_prep.py extract`` end to end: inputs, alignment, bad files, resuming a killed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("transformers")
soundfile = pytest.importorskip("soundfile")

from e2espk.cli.data_prep import main  # noqa: E402
from e2espk.data.corpus import Corpus  # noqa: E402
from e2espk.data.features import resolve_layout  # noqa: E402
from e2espk.extract.audio import AudioItem, decode  # noqa: E402
from e2espk.extract.handcrafted import log_mel  # noqa: E402
from tests.extract_support import SR, harmonic, noise, tiny_ptm  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_ptm(tmp_path_factory.mktemp("ptm") / "wavlm", "wavlm")


def write_audio(
    root: Path, speakers: int = 3, utterances: int = 3, seed: int = 0
) -> dict[str, Path]:
    """Speech-like files of varied length and sample rate: utt id -> path."""
    rng = np.random.default_rng(seed)
    paths = {}
    for s in range(speakers):
        for u in range(utterances):
            rate = (16000, 8000, 44100)[u % 3]
            seconds = float(rng.uniform(0.6, 1.6))
            t = np.arange(int(seconds * rate)) / rate
            wave = 0.2 * np.sin(2 * np.pi * (110 + 40 * s) * t) + 0.01 * rng.standard_normal(len(t))
            path = root / f"spk{s}" / f"utt{u}.{'flac' if u % 2 else 'wav'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(path, wave.astype(np.float32), rate)
            paths[f"spk{s}/utt{u}"] = path
    return paths


def kaldi_dir(root: Path, paths: dict[str, Path], pipe: set[str] = frozenset()) -> Path:  # type: ignore[assignment]
    """wav.scp (some entries as `cat PATH |` pipes) and utt2spk with Kaldi-style ids."""
    root.mkdir(parents=True, exist_ok=True)
    lines, spk = [], []
    for utt, path in sorted(paths.items()):
        kid = utt.replace("/", "-")
        lines.append(f"{kid} cat {path} |" if utt in pipe else f"{kid} {path}")
        spk.append(f"{kid} {utt.split('/')[0]}")
    (root / "wav.scp").write_text("\n".join(lines) + "\n")
    (root / "utt2spk").write_text("\n".join(spk) + "\n")
    return root


def extract_args(out: Path, *extra: str, name: str = "vox") -> list[str]:
    return ["extract", "--out-path", str(out), "--out-name", name, "--no-progress", *extra]


def corpus_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of a corpus file by HDF5 path (index included)."""
    arrays: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(
            lambda name, item: (
                arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
            )
        )
    return arrays


def test_audio_dir_to_a_split_corpus_with_every_stream(tmp_path: Path, model: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    paths = write_audio(tmp_path / "audio")
    out = tmp_path / "hdf"
    args = extract_args(
        out, "--audio-dir", str(tmp_path / "audio"), "--streams", "ptm", "mfbe", "mfcc", "pitch",
        "--ptm-model", str(model), "--ptm-layers", "0-3", "--split-by", "speaker",
        "--valid-size", "1", "--bucket-window", "4",
    )  # fmt: skip
    assert main(args) == 0
    assert "train:" in capsys.readouterr().out
    train, valid = Corpus(out / "vox_train.hdf"), Corpus(out / "vox_valid.hdf")
    assert len(train) + len(valid) == len(paths) and len(valid.speakers) == 1
    spec = train.streams["ptm"]
    assert (spec.dims, spec.frame_rate_hz, spec.layers, spec.dtype) == (
        (4, 32),
        50.0,
        (0, 1, 2, 3),
        "float16",
    )
    assert train.streams["pitch"].dims == (2,) and train.streams["mfcc"].dims == (40,)
    for name in ("mfbe", "mfcc", "pitch"):  # every stream spans the same time
        assert (train.frames(name) == 2 * train.frames("ptm")).all()
    layout = resolve_layout(train, "fusion", "mfbe_pitch")
    assert layout.handcrafted_dim == 82 and layout.ptm_rate_hz == 50.0
    row = train.utterance_row("spk0/utt1")
    wav = decode(AudioItem("spk0/utt1", str(paths["spk0/utt1"])))
    assert train.frames("ptm")[row] == min(
        1 + (len(wav) - 400) // 320, (1 + (len(wav) - 400) // 160) // 2
    )
    stored = train.read(row, "mfbe")
    assert np.array_equal(stored, log_mel(wav)[: len(stored)])
    provenance = json.loads(train.handle.attrs["extraction"])
    assert provenance["ptm"]["layers"] == [0, 1, 2, 3] and len(provenance["ptm"]["sha256"]) == 64
    report = json.loads((out / "vox.report.json").read_text())
    assert report["skipped_bad"] == {} and report["utterances"]["train"] == len(train)
    capsys.readouterr()
    assert main(["inspect", str(out / "vox_train.hdf")]) == 0
    assert f"weights sha256 {provenance['ptm']['sha256'][:16]}" in capsys.readouterr().out


def test_wav_scp_with_pipes_equals_plain_paths(tmp_path: Path) -> None:
    paths = write_audio(tmp_path / "audio", speakers=2, utterances=2)
    plain = kaldi_dir(tmp_path / "plain", paths)
    piped = kaldi_dir(tmp_path / "piped", paths, pipe=set(paths))
    for data in (plain, piped):
        assert (
            main(
                extract_args(
                    tmp_path / data.name, "--wav-scp", str(data / "wav.scp"), "--streams", "mfcc"
                )
            )
            == 0
        )
    a, b = (
        corpus_arrays(tmp_path / "plain" / "vox.hdf"),
        corpus_arrays(tmp_path / "piped" / "vox.hdf"),
    )
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_worker_processes_give_the_same_corpus(tmp_path: Path, model: Path) -> None:
    write_audio(tmp_path / "audio", speakers=2, utterances=3)
    common = ["--audio-dir", str(tmp_path / "audio"), "--streams", "ptm", "mfcc", "pitch",
              "--ptm-model", str(model), "--bucket-window", "3"]  # fmt: skip
    for workers in ("0", "2"):
        assert main(extract_args(tmp_path / workers, *common, "--workers", workers)) == 0
    a, b = corpus_arrays(tmp_path / "0" / "vox.hdf"), corpus_arrays(tmp_path / "2" / "vox.hdf")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_an_undecodable_file_is_named_and_skip_bad_reports_it(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    paths = write_audio(tmp_path / "audio", speakers=2, utterances=2)
    broken = tmp_path / "audio" / "spk1" / "utt1.flac"
    broken.write_bytes(b"RIFF garbage")
    data = kaldi_dir(tmp_path / "data", paths)
    args = extract_args(tmp_path / "hdf", "--wav-scp", str(data / "wav.scp"), "--streams", "mfbe")
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "spk1-utt1" in error and str(broken) in error and "--skip-bad" in error
    assert not (tmp_path / "hdf" / "vox.hdf").exists()
    assert main([*args, "--skip-bad"]) == 0
    assert "spk1-utt1" in capsys.readouterr().out
    report = json.loads((tmp_path / "hdf" / "vox.report.json").read_text())
    assert (
        list(report["skipped_bad"]) == ["spk1-utt1"]
        and str(broken) in report["skipped_bad"]["spk1-utt1"]
    )
    assert len(Corpus(tmp_path / "hdf" / "vox.hdf")) == 3


def test_options_are_checked_before_any_work(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    audio = tmp_path / "audio"
    write_audio(audio, speakers=1, utterances=1)
    for extra, message in [
        (["--streams", "ptm"], "needs --ptm-model"),
        (["--streams", "ptm", "--ptm-model", str(tmp_path / "none")], "never downloads"),
        (["--streams", "mfbe", "--wav-scp", "x"], "exactly one audio input"),
    ]:
        assert main(extract_args(tmp_path / "o", "--audio-dir", str(audio), *extra)) == 2
        assert message in capsys.readouterr().err


def run_cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(REPO / "data_prep.py"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def killable(tmp_path_factory: pytest.TempPathFactory, model: Path) -> tuple[list[str], Path]:
    """Options of a run worth stopping (24 utterances, checkpoints every batch) and the
    directory of its uninterrupted corpus."""
    root = tmp_path_factory.mktemp("killable")
    write_audio(root / "audio", speakers=4, utterances=6, seed=1)
    common = ["--audio-dir", str(root / "audio"), "--streams", "ptm", "mfbe", "pitch",
              "--ptm-model", str(model), "--bucket-window", "4", "--ptm-batch-seconds", "2",
              "--split-by", "utterance", "--valid-size", "1"]  # fmt: skip
    assert main(extract_args(root / "whole", *common)) == 0
    return common, root / "whole"


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_extraction_continues_to_the_same_corpus(
    tmp_path: Path, killable: tuple[list[str], Path], stop: int
) -> None:
    common, whole = killable
    out = tmp_path / "resumed"
    journal = out / ".vox_train.hdf.resumable.jsonl"
    workers = ["--workers", "1"] if stop == signal.SIGKILL else []
    process = run_cli(extract_args(out, *common, *workers))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and journal.read_text().count('"frames"') >= 3:
            break
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before it could be stopped"
    process.send_signal(stop)
    _, err = process.communicate(timeout=60)
    assert process.returncode == (-stop if stop == signal.SIGKILL else 128 + stop), err
    assert not (out / "vox_train.hdf").exists() and (out / ".vox_train.hdf.resumable").exists()
    done = journal.read_text().count('"frames"')

    process = run_cli(extract_args(out, *common))
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert f"vox_train.hdf.resumable: continuing a partial run ({done} utterances done" in err, err
    assert not journal.exists()
    for part in ("train", "valid"):
        a = corpus_arrays(whole / f"vox_{part}.hdf")
        b = corpus_arrays(out / f"vox_{part}.hdf")
        assert a.keys() == b.keys()
        for key in a:
            assert np.array_equal(a[key], b[key]), key


def test_a_partial_run_with_other_options_is_not_continued(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    audio = tmp_path / "audio"
    write_audio(audio, speakers=2, utterances=2)
    out = tmp_path / "hdf"
    out.mkdir()
    (out / ".vox.hdf.resumable").write_bytes(b"")
    (out / ".vox.hdf.resumable.jsonl").write_text(json.dumps({"signature": {"other": 1}}) + "\n")
    args = extract_args(out, "--audio-dir", str(audio), "--streams", "mfbe")
    assert main(args) == 2
    assert "--restart" in capsys.readouterr().err
    assert main([*args, "--restart"]) == 0
    assert len(Corpus(out / "vox.hdf")) == 4 and not (out / ".vox.hdf.resumable").exists()


def test_too_short_audio_is_bad_not_a_crash(tmp_path: Path) -> None:
    audio = tmp_path / "audio" / "spk0"
    audio.mkdir(parents=True)
    soundfile.write(audio / "long.wav", harmonic(150, 0.5), SR)
    soundfile.write(audio / "short.wav", noise(0.02), SR)  # 320 samples: no 25 ms frame
    args = extract_args(tmp_path / "hdf", "--audio-dir", str(tmp_path / "audio"), "--skip-bad")
    assert main(args) == 0
    report = json.loads((tmp_path / "hdf" / "vox.report.json").read_text())
    assert "shorter than one 25 ms frame" in report["skipped_bad"]["spk0/short"]


@pytest.mark.slow
def test_audio_to_corpus_to_training(tmp_path: Path, killable: tuple[list[str], Path]) -> None:
    """What the extraction is for: its corpus trains a fusion model as it is."""
    from e2espk.training.config import TrainConfig
    from e2espk.training.trainer import train
    from tests.conftest import TINY_TRAIN

    _, whole = killable
    config = TrainConfig.from_flat(dict(
        train_hdf_file=str(whole / "vox_train.hdf"), checkpoint_path=str(tmp_path / "run"),
        mode="fusion", feature_mode="mfbe_pitch", backbone="ecapa_tdnn_tiny", epochs=1,
        max_steps_per_epoch=2, select_metric="cosine/eer", **TINY_TRAIN,
    ))  # fmt: skip
    result = train(config)
    assert result.history[0]["train/steps"] == 2
    assert np.isfinite(result.history[0]["train/loss"])
