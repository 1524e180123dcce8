"""All three input kinds (Kaldi dirs, per-utterance files, whole-corpus .pt dicts) round-trip exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from e2espk.cli.data_prep import main as data_prep
from e2espk.data.corpus import Corpus
from tests.conftest import TinyFeatures, make_features, pack_args, write_kaldi_dir


def assert_corpus_equals(
    path: Path, tiny: TinyFeatures, streams: dict[str, dict[str, np.ndarray]]
) -> None:
    with Corpus(path) as corpus:
        assert sorted(corpus.utterances.tolist()) == sorted(tiny.utt2spk)
        assert sorted(corpus.speakers.tolist()) == sorted(set(tiny.utt2spk.values()))
        by_speaker = corpus.speaker_utterances()
        for speaker, rows in by_speaker.items():
            assert {str(corpus.utterances[r]) for r in rows} == {
                u for u, s in tiny.utt2spk.items() if s == speaker
            }
        for row, speaker, utt in corpus.iter_rows():
            assert tiny.utt2spk[utt] == speaker
            for name, table in streams.items():
                expected = (
                    table[utt] if table[utt].ndim > 1 or name == "ptm" else table[utt][:, None]
                )
                np.testing.assert_array_equal(corpus.read(row, name), expected)
                assert corpus.frames(name)[row] == expected.shape[0]


def test_kaldi_and_pt_dict_round_trip(tiny_inputs: dict[str, Path], tiny: TinyFeatures) -> None:
    assert data_prep(pack_args(tiny_inputs)) == 0
    assert_corpus_equals(
        tiny_inputs["out"] / "corpus.hdf",
        tiny,
        {"ptm": tiny.ptm, "mfbe": tiny.mfbe, "pitch": tiny.pitch},
    )
    with Corpus(tiny_inputs["out"] / "corpus.hdf") as corpus:
        assert (
            corpus.streams["ptm"].frame_rate_hz == 50.0
            and corpus.streams["mfbe"].frame_rate_hz == 100.0
        )
        assert corpus.streams["ptm"].dims == (3, 8) and corpus.streams["pitch"].dims == (1,)


def test_contiguous_and_chunked_layouts_hold_the_same_data(
    tiny_inputs: dict[str, Path], tiny: TinyFeatures
) -> None:
    """--chunk-seconds 0 stores utterances contiguously: same values and crops, no chunks."""
    assert data_prep(pack_args(tiny_inputs, "--chunk-seconds", "0", "--out-name", "flat")) == 0
    assert data_prep(pack_args(tiny_inputs, "--chunk-seconds", "0.1", "--out-name", "chunked")) == 0
    streams = {"ptm": tiny.ptm, "mfbe": tiny.mfbe, "pitch": tiny.pitch}
    assert_corpus_equals(tiny_inputs["out"] / "flat.hdf", tiny, streams)
    with (
        Corpus(tiny_inputs["out"] / "flat.hdf") as flat,
        Corpus(tiny_inputs["out"] / "chunked.hdf") as chunked,
    ):
        assert flat.streams["ptm"].chunk_frames == 0 and chunked.streams["ptm"].chunk_frames == 5
        for row in range(len(flat)):
            assert flat.dataset(row, "ptm").chunks is None
            assert chunked.dataset(row, "ptm").chunks[0] == min(5, chunked.frames("ptm")[row])
            np.testing.assert_array_equal(
                flat.read(row, "mfbe", 2, 7), chunked.read(row, "mfbe", 2, 7)
            )


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt"])
def test_per_utterance_files_round_trip(tmp_path: Path, tiny: TinyFeatures, suffix: str) -> None:
    tiny = make_features(id_sep="/")  # VoxCeleb-style ids: spk0/utt1 -> nested files
    for name, table in (("ptm", tiny.ptm), ("mfbe", tiny.mfbe)):
        for utt, array in table.items():
            file = tmp_path / name / f"{utt}{suffix}"
            file.parent.mkdir(parents=True, exist_ok=True)
            if suffix == ".npy":
                np.save(file, array)
            elif suffix == ".npz":
                np.savez(file, feats=array)
            else:
                torch.save(torch.from_numpy(array), file)
    out = tmp_path / "out"
    args = ["--ptm", str(tmp_path / "ptm"), "--mfbe", str(tmp_path / "mfbe"), "--speaker-from-id", "/",
            "--out-path", str(out), "--ptm-dtype", "float32", "--no-progress"]  # fmt: skip
    assert data_prep(args) == 0
    assert_corpus_equals(out / "corpus.hdf", tiny, {"ptm": tiny.ptm, "mfbe": tiny.mfbe})


def test_manifest_round_trip(tmp_path: Path, tiny: TinyFeatures) -> None:
    lines = []
    for utt, array in tiny.ptm.items():
        np.save(tmp_path / f"{utt}.npy", array)
        lines.append(f"{utt} {utt}.npy\n")
    (tmp_path / "ptm.list").write_text("".join(lines))
    torch.save({u: torch.from_numpy(a) for u, a in tiny.mfbe.items()}, tmp_path / "feature.pt")
    torch.save(dict(tiny.utt2spk), tmp_path / "utt2spk.pt")
    args = ["--ptm", str(tmp_path / "ptm.list"), "--mfbe", str(tmp_path / "feature.pt"),
            "--utt2spk", str(tmp_path / "utt2spk.pt"), "--out-path", str(tmp_path), "--ptm-dtype", "float32", "--no-progress"]  # fmt: skip
    assert data_prep(args) == 0
    assert_corpus_equals(tmp_path / "corpus.hdf", tiny, {"ptm": tiny.ptm, "mfbe": tiny.mfbe})


def test_more_data_merges_kaldi_dirs(tmp_path: Path, tiny: TinyFeatures) -> None:
    utts = sorted(tiny.mfbe)
    first = write_kaldi_dir(tmp_path / "a", {u: tiny.mfbe[u] for u in utts[:4]}, tiny.utt2spk)
    second = write_kaldi_dir(tmp_path / "b", {u: tiny.mfbe[u] for u in utts[4:]}, tiny.utt2spk)
    args = [
        "--path-to-data",
        str(first),
        "--more-data",
        str(second),
        "--out-path",
        str(tmp_path),
        "--no-progress",
    ]
    assert data_prep(args) == 0
    assert_corpus_equals(tmp_path / "corpus.hdf", tiny, {"mfbe": tiny.mfbe})


def test_spk2utt_and_ltd_layout_and_layer_subset(tmp_path: Path, tiny: TinyFeatures) -> None:
    torch.save(
        {u: torch.from_numpy(a.transpose(1, 0, 2).copy()) for u, a in tiny.ptm.items()},
        tmp_path / "ptm.pt",
    )
    speakers: dict[str, list[str]] = {}
    for utt, spk in tiny.utt2spk.items():
        speakers.setdefault(spk, []).append(utt)
    (tmp_path / "spk2utt").write_text(
        "".join(f"{s} {' '.join(us)}\n" for s, us in speakers.items())
    )
    args = ["--ptm", str(tmp_path / "ptm.pt"), "--ptm-layout", "LTD", "--ptm-layers", "0,2", "--utt2spk",
            str(tmp_path / "spk2utt"), "--out-path", str(tmp_path), "--ptm-dtype", "float32", "--ptm-model", "wavlm", "--no-progress"]  # fmt: skip
    assert data_prep(args) == 0
    subset = {u: a[:, [0, 2]] for u, a in tiny.ptm.items()}
    assert_corpus_equals(tmp_path / "corpus.hdf", tiny, {"ptm": subset})
    with Corpus(tmp_path / "corpus.hdf") as corpus:
        assert corpus.streams["ptm"].layers == (0, 2) and corpus.streams["ptm"].model == "wavlm"


def test_pooled_ptm_float16(tmp_path: Path, tiny: TinyFeatures) -> None:
    pooled = {u: a.mean(0) for u, a in tiny.ptm.items()}
    torch.save({u: torch.from_numpy(a) for u, a in pooled.items()}, tmp_path / "pooled.pt")
    args = ["--ptm", str(tmp_path / "pooled.pt"), "--utt2spk", str(tiny.write_utt2spk(tmp_path / "utt2spk")),
            "--out-path", str(tmp_path), "--no-progress"]  # fmt: skip
    assert data_prep(args) == 0
    with Corpus(tmp_path / "corpus.hdf") as corpus:
        spec = corpus.streams["ptm"]
        assert not spec.time_axis and spec.dims == (3, 8) and spec.dtype == "float16"
        row = corpus.utterance_row("spk1-utt2")
        np.testing.assert_array_equal(
            corpus.read(row, "ptm"), pooled["spk1-utt2"].astype(np.float16)
        )


def test_split_by_speaker_is_deterministic_and_disjoint(tiny_inputs: dict[str, Path]) -> None:
    assert (
        data_prep(
            pack_args(tiny_inputs, "--split-by", "speaker", "--valid-size", "1", "--seed", "3")
        )
        == 0
    )
    out = tiny_inputs["out"]
    with Corpus(out / "corpus_train.hdf") as train, Corpus(out / "corpus_valid.hdf") as valid:
        first = (train.speakers.tolist(), valid.speakers.tolist())
        assert len(valid.speakers) == 1 and not set(train.speakers) & set(valid.speakers)
    assert (
        data_prep(
            pack_args(
                tiny_inputs,
                "--split-by",
                "speaker",
                "--valid-size",
                "1",
                "--seed",
                "3",
                "--overwrite",
            )
        )
        == 0
    )
    with Corpus(out / "corpus_train.hdf") as train, Corpus(out / "corpus_valid.hdf") as valid:
        assert (train.speakers.tolist(), valid.speakers.tolist()) == first


def test_split_by_utterance_and_min_recordings(
    tiny_inputs: dict[str, Path], tiny: TinyFeatures
) -> None:
    tiny_inputs["utt2spk"].write_text(
        "".join(f"{u} {'lonely' if u == 'spk0-utt0' else s}\n" for u, s in tiny.utt2spk.items())
    )
    args = pack_args(
        tiny_inputs,
        "--utt2spk",
        str(tiny_inputs["utt2spk"]),
        "--min-recordings",
        "2",
        "--split-by",
        "utterance",
        "--valid-size",
        "1",
    )
    assert data_prep(args) == 0
    out = tiny_inputs["out"]
    with Corpus(out / "corpus_train.hdf") as train, Corpus(out / "corpus_valid.hdf") as valid:
        assert "lonely" not in train.speakers.tolist() + valid.speakers.tolist()
        assert set(train.speakers.tolist()) == set(valid.speakers.tolist())
        assert len(valid) == 3 and len(train) == 5  # spk0 lost one utterance to 'lonely'
        assert not set(train.utterances.tolist()) & set(valid.utterances.tolist())
