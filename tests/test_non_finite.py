"""Corrupt values are named where they are read, and nothing non-finite is ever written.

The corpus files here are real HDF5 files whose bytes are overwritten in place (as a failing
disk or a stray writer would), not arrays built with NaN in them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from e2espk.cli.embed import main as embed_main
from e2espk.cli.eval import main as eval_main
from e2espk.data.corpus import Corpus, utterance_path
from e2espk.data.features import resolve_layout
from e2espk.data.loader import CropDataset
from e2espk.errors import InputDataError
from e2espk.inference.contract import EmbeddingContract, ExtractionOptions
from e2espk.inference.extraction import extract
from e2espk.pipelines import evaluation
from e2espk.training.checkpoint import load_embedding_system

ROW = 3  # the utterance that gets corrupted


def overwrite_bytes(path: Path, row: int, stream: str, frame: int, values: int) -> str:
    """Overwrite ``values`` float32 values from ``frame`` of one stream with 0xFF bytes (NaN);
    returns the utterance id."""
    with Corpus(path) as corpus:
        utterance = str(corpus.utterances[row])
        speaker = str(corpus.speakers[corpus.speaker_of[row]])
    with h5py.File(path, "r") as handle:
        dataset = handle[utterance_path(speaker, utterance, stream)]
        assert dataset.dtype == np.float32 and frame < (dataset.chunks or dataset.shape)[0]
        start = (
            dataset.id.get_chunk_info(0).byte_offset if dataset.chunks else dataset.id.get_offset()
        )
        start += frame * dataset.shape[1] * 4
    with path.open("r+b") as raw:
        raw.seek(start)
        raw.write(b"\xff" * 4 * values)
    return utterance


@pytest.fixture
def corrupt_valid(demo_hdf: dict[str, Path], tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "valid.hdf"
    shutil.copy(demo_hdf["valid"], path)
    return path, overwrite_bytes(path, ROW, "mfbe", frame=5, values=20)


def cached_embeddings(directory: Path) -> list[np.ndarray]:
    stored = []
    for cache in directory.rglob("*.h5"):
        with h5py.File(cache) as handle:
            if "embeddings" in handle:
                stored.append(handle["embeddings"][handle["done"][()]])
    return stored


def test_eval_names_the_corrupt_utterance_and_writes_no_nan(
    corrupt_valid: tuple[Path, str],
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, utterance = corrupt_valid
    out = tmp_path / "o"
    args = ["--cp-path", str(tiny_checkpoint), "--test-hdf-file", str(path), "--out-path", str(out),
            "--no-progress", "--no-plots"]  # fmt: skip
    assert eval_main(args) == 2
    err = capsys.readouterr().err
    expected = f"{path}: utterance {utterance!r} stream 'mfbe': 20 NaN and 0 Inf values, the first at frame 5"
    assert expected in err, err
    assert not list(out.glob("scores_*")), "no score file"
    assert all(np.isfinite(stored).all() for stored in cached_embeddings(out))


def test_embed_names_the_corrupt_utterance_and_exports_nothing(
    corrupt_valid: tuple[Path, str],
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, utterance = corrupt_valid
    out = tmp_path / "emb.h5"
    assert (
        embed_main(
            [
                "--cp-path",
                str(tiny_checkpoint),
                "--data",
                str(path),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 2
    )
    assert f"utterance {utterance!r} stream 'mfbe'" in capsys.readouterr().err
    assert not out.exists()
    assert all(np.isfinite(stored).all() for stored in cached_embeddings(tmp_path))


def test_a_training_crop_names_file_utterance_and_stream(corrupt_valid: tuple[Path, str]) -> None:
    path, utterance = corrupt_valid
    with Corpus(path) as corpus:
        crops = CropDataset(
            corpus, resolve_layout(corpus, "fusion", "mfbe_pitch"), crop_seconds=10.0
        )
        crops[(ROW - 1, 0)]  # a clean utterance reads as before
        with pytest.raises(
            InputDataError, match=f"utterance {utterance!r} stream 'mfbe'.*at frame 5"
        ):
            crops[(ROW, 0)]


def test_out_of_range_features_are_named_and_not_cached(
    demo_hdf: dict[str, Path], tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from e2espk.inference.embedding_cache import EmbeddingCache

    path = tmp_path / "valid.hdf"
    shutil.copy(demo_hdf["valid"], path)
    with Corpus(path) as corpus:
        utterance = str(corpus.utterances[ROW])
        name = utterance_path(str(corpus.speakers[corpus.speaker_of[ROW]]), utterance, "mfbe")
    with h5py.File(path, "r+") as handle:  # finite, but far beyond anything the model saw
        handle[name][0::2] = 3e38
        handle[name][1::2] = -3e38
    system = load_embedding_system(tiny_checkpoint)
    corpus = Corpus(path)
    match = f"non-finite embeddings for 1 \\({utterance!r}\\)"
    with (
        corpus,
        EmbeddingCache(tmp_path / "cache.h5", {"t": 1}, len(corpus)) as cache,
        pytest.raises(InputDataError, match=match),
    ):
        contract = EmbeddingContract(system.model.config, system.layout, system.normalization, 1.0)
        options = ExtractionOptions(batch_size=8, segment_size=4)
        extract(system.model, corpus, list(range(len(corpus))), contract, options, cache)
    assert all(np.isfinite(stored).all() for stored in cached_embeddings(tmp_path))


def test_a_checkpoint_with_nan_weights_is_named(
    demo_hdf: dict[str, Path],
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    payload = torch.load(tiny_checkpoint, weights_only=False)
    name = next(k for k, v in payload["model"].items() if v.is_floating_point())
    payload["model"][name] = torch.full_like(payload["model"][name], float("nan"))
    torch.save(payload, tmp_path / "nan.pt")
    args = ["--cp-path", str(tmp_path / "nan.pt"), "--test-hdf-file", str(demo_hdf["valid"]),
            "--out-path", str(tmp_path / "o"), "--no-progress", "--no-plots"]  # fmt: skip
    assert eval_main(args) == 2
    assert f"nan.pt: model weight {name!r} holds NaN/Inf values" in capsys.readouterr().err


def test_non_finite_scores_are_named_and_not_written(
    demo_hdf: dict[str, Path],
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = evaluation.score_trials

    def one_nan(*args, **kwargs):  # type: ignore[no-untyped-def]
        sets = real(*args, **kwargs)
        sets[0]["cosine"][7] = np.nan  # e.g. a degenerate normalisation
        return sets

    monkeypatch.setattr(evaluation, "score_trials", one_nan)
    out = tmp_path / "o"
    args = ["--cp-path", str(tiny_checkpoint), "--test-hdf-file", str(demo_hdf["valid"]),
            "--out-path", str(out), "--no-progress", "--no-plots"]  # fmt: skip
    assert eval_main(args) == 2
    err = capsys.readouterr().err
    assert (
        "cosine scores: 1 NaN/inf value(s), the first for trial" in err
        and "no score file written" in err
    )
    assert not list(out.glob("scores_*"))
