"""Properties of the HDF5 corpus format itself: chunking, dtypes, compression, ids, laziness."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from e2espk.data.corpus import (
    SCHEMA_VERSION,
    Corpus,
    CorpusWriter,
    StreamSpec,
    escape_id,
    unescape_id,
)
from e2espk.errors import InputDataError

PTM = StreamSpec("ptm", "ptm", (2, 4), "float16", 50.0, layers=(0, 1), chunk_frames=25)
MFBE = StreamSpec("mfbe", "handcrafted", (5,), "float32", 100.0, chunk_frames=50)


def write(path: Path, compression: str = "none") -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    data = {}
    with CorpusWriter(path, [PTM, MFBE], compression=compression) as writer:
        for utt, spk, frames in [
            ("b/2", "B", 130),
            ("a/1", "A", 10),
            ("b/1", "B", 7),
            (".", "A", 60),
        ]:
            arrays = {
                "ptm": rng.standard_normal((frames, 2, 4)),
                "mfbe": rng.standard_normal((2 * frames, 5)),
            }
            writer.add(spk, utt, arrays)
            data[utt] = arrays
    return data


@pytest.mark.parametrize("compression", ["none", "gzip", "lzf"])
def test_write_read_round_trip(tmp_path: Path, compression: str) -> None:
    data = write(tmp_path / "c.hdf", compression)
    with Corpus(tmp_path / "c.hdf") as corpus:
        assert corpus.speakers.tolist() == ["A", "B"]
        assert corpus.utterances.tolist() == [
            ".",
            "a/1",
            "b/1",
            "b/2",
        ]  # grouped by speaker, sorted
        assert corpus.speaker_utterances()["B"].tolist() == [2, 3]
        assert corpus.frames("ptm").tolist() == [60, 10, 7, 130]
        for row, _, utt in corpus.iter_rows():
            np.testing.assert_array_equal(
                corpus.read(row, "ptm"), data[utt]["ptm"].astype(np.float16)
            )
            np.testing.assert_array_equal(
                corpus.read(row, "mfbe"), data[utt]["mfbe"].astype(np.float32)
            )
        row = corpus.utterance_row("b/2")
        np.testing.assert_array_equal(
            corpus.read(row, "mfbe", 100, 140), data["b/2"]["mfbe"][100:140].astype(np.float32)
        )
        dataset = corpus.dataset(row, "ptm")
        assert dataset.chunks == (25, 2, 4), "chunked along time only"
        assert (dataset.compression or "none") == compression
        assert corpus.dataset(corpus.utterance_row("b/1"), "ptm").chunks == (7, 2, 4), (
            "short utterances: one chunk"
        )
        assert corpus.hours() == pytest.approx(207 / 50 / 3600)


def test_ids_with_slashes_do_not_nest(tmp_path: Path) -> None:
    write(tmp_path / "c.hdf")
    with h5py.File(tmp_path / "c.hdf") as handle:
        assert sorted(handle["speakers/B"].keys()) == ["b%2F1", "b%2F2"]
    assert unescape_id(escape_id("id10001/1zcIwhmdeo4/00001")) == "id10001/1zcIwhmdeo4/00001"
    assert escape_id("..") != ".." and unescape_id(escape_id("..")) == ".."


def test_corpus_pickles_without_handle_and_reopens(tmp_path: Path) -> None:
    write(tmp_path / "c.hdf")
    corpus = Corpus(tmp_path / "c.hdf")
    clone = pickle.loads(pickle.dumps(corpus))
    assert clone._handle is None
    np.testing.assert_array_equal(clone.read(0, "mfbe"), corpus.read(0, "mfbe"))
    corpus.close()
    clone.close()


def test_errors_name_the_problem(tmp_path: Path) -> None:
    write(tmp_path / "c.hdf")
    with Corpus(tmp_path / "c.hdf") as corpus:
        with pytest.raises(InputDataError, match="unknown utterance 'zzz'"):
            corpus.utterance_row("zzz")
        with pytest.raises(InputDataError, match="no stream 'mfcc'; this corpus has: ptm, mfbe"):
            corpus.frames("mfcc")
    with h5py.File(tmp_path / "c.hdf", "a") as handle:
        handle.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(InputDataError, match="newer than this e2espk reads"):
        Corpus(tmp_path / "c.hdf")
    with pytest.raises(InputDataError, match="output exists"):
        CorpusWriter(tmp_path / "c.hdf", [PTM])


def test_writer_rejects_duplicates_and_shapes(tmp_path: Path) -> None:
    writer = CorpusWriter(tmp_path / "c.hdf", [MFBE])
    writer.add("A", "u1", {"mfbe": np.zeros((4, 5))})
    with pytest.raises(InputDataError, match="'u1' added twice"):
        writer.add("A", "u1", {"mfbe": np.zeros((4, 5))})
    with pytest.raises(ValueError, match="shape"):
        writer.add("A", "u2", {"mfbe": np.zeros((4, 6))})
    writer.abort()
    assert list(tmp_path.iterdir()) == []
