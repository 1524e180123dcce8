"""Every bad input stops with a message naming the file, the item and what is wrong."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from e2espk.cli.data_prep import main as data_prep
from e2espk.cli.inspect import main as inspect
from e2espk.data.packing import PackConfig, pack_corpus
from e2espk.errors import InputDataError
from tests.conftest import TinyFeatures, pack_args, write_kaldi_dir


def run_failing(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert data_prep(args) == 2
    return capsys.readouterr().err


def save_ptm(path: Path, table: dict[str, np.ndarray]) -> None:
    torch.save({u: torch.from_numpy(np.asarray(a)) for u, a in table.items()}, path)


def test_duplicate_ids_in_scp(
    tiny_inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    scp = tiny_inputs["kaldi"] / "feats.scp"
    first = scp.read_text().splitlines()[0]
    scp.write_text(scp.read_text() + first + "\n")
    err = run_failing(pack_args(tiny_inputs), capsys)
    assert "feats.scp" in err and "duplicate utterance id" in err and repr(first.split()[0]) in err


def test_duplicate_ids_across_sources(
    tmp_path: Path, tiny: TinyFeatures, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_kaldi_dir(tmp_path / "a", tiny.mfbe, tiny.utt2spk)
    b = write_kaldi_dir(tmp_path / "b", {"spk0-utt0": tiny.mfbe["spk0-utt0"]}, tiny.utt2spk)
    err = run_failing(
        ["--path-to-data", str(a), "--more-data", str(b), "--out-path", str(tmp_path)], capsys
    )
    assert "'spk0-utt0'" in err and "also in" in err and str(a / "feats.scp") in err


def test_missing_from_one_stream_fails_then_drops(
    tiny_inputs: dict[str, Path], tiny: TinyFeatures, capsys: pytest.CaptureFixture[str]
) -> None:
    save_ptm(
        tiny_inputs["ptm"],
        {u: a for u, a in tiny.ptm.items() if u not in ("spk1-utt0", "spk2-utt2")},
    )
    err = run_failing(pack_args(tiny_inputs), capsys)
    assert "stream 'ptm' lacks 2 ('spk1-utt0', 'spk2-utt2')" in err and "--drop-incomplete" in err
    assert not (tiny_inputs["out"] / "corpus.hdf").exists()
    assert data_prep(pack_args(tiny_inputs, "--drop-incomplete")) == 0
    assert "dropped 2 utterances missing from some stream" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values(
    tiny_inputs: dict[str, Path], tiny: TinyFeatures, capsys: pytest.CaptureFixture[str], bad: float
) -> None:
    ptm = dict(tiny.ptm)
    ptm["spk2-utt1"] = ptm["spk2-utt1"].copy()
    ptm["spk2-utt1"][3, 1, 2] = bad
    save_ptm(tiny_inputs["ptm"], ptm)
    err = run_failing(pack_args(tiny_inputs), capsys)
    assert (
        str(tiny_inputs["ptm"]) in err
        and "'spk2-utt1'" in err
        and ("1 NaN" if np.isnan(bad) else "1 Inf") in err
    )
    assert not (tiny_inputs["out"] / "corpus.hdf").exists(), (
        "a failed run must not leave an output file"
    )


def test_skip_bad_reports_and_continues(
    tiny_inputs: dict[str, Path], tiny: TinyFeatures, capsys: pytest.CaptureFixture[str]
) -> None:
    ptm = dict(tiny.ptm)
    ptm["spk0-utt1"] = np.full_like(ptm["spk0-utt1"], np.nan)
    save_ptm(tiny_inputs["ptm"], ptm)
    assert data_prep(pack_args(tiny_inputs, "--skip-bad")) == 0
    assert "skipped 1 bad utterances" in capsys.readouterr().out


def test_dims_differ(
    tiny_inputs: dict[str, Path], tiny: TinyFeatures, capsys: pytest.CaptureFixture[str]
) -> None:
    ptm = dict(tiny.ptm)
    ptm["spk1-utt1"] = ptm["spk1-utt1"][:, :, :5]
    save_ptm(tiny_inputs["ptm"], ptm)
    err = run_failing(pack_args(tiny_inputs), capsys)
    assert "'spk1-utt1'" in err and "per-frame dims (3, 5) differ from (3, 8)" in err


def test_empty_utterance(
    tiny_inputs: dict[str, Path], tiny: TinyFeatures, capsys: pytest.CaptureFixture[str]
) -> None:
    ptm = dict(tiny.ptm)
    ptm["spk0-utt2"] = ptm["spk0-utt2"][:0]
    save_ptm(tiny_inputs["ptm"], ptm)
    err = run_failing(pack_args(tiny_inputs), capsys)
    assert "'spk0-utt2'" in err and "no frames" in err


def test_durations_disagree(
    tiny_inputs: dict[str, Path], tiny: TinyFeatures, capsys: pytest.CaptureFixture[str]
) -> None:
    ptm = dict(tiny.ptm)
    ptm["spk2-utt0"] = np.concatenate([ptm["spk2-utt0"]] * 2)  # twice as long as its log-mel frames
    save_ptm(tiny_inputs["ptm"], ptm)
    err = run_failing(pack_args(tiny_inputs), capsys)
    assert "'spk2-utt0'" in err and "stream durations disagree" in err and "tolerance 0.040s" in err
    assert "--duration-tolerance" in err  # the message names the option that allows more


def test_a_mismatch_equal_to_the_tolerance_passes(
    tiny_inputs: dict[str, Path], tiny: TinyFeatures, capsys: pytest.CaptureFixture[str]
) -> None:
    # every log-mel/pitch 2 frames (0.020 s) longer than its PTM: 1.53 - 1.51 > 0.02 in floats
    longer = {u: np.concatenate([a, a[-2:]]) for u, a in tiny.mfbe.items()}
    write_kaldi_dir(tiny_inputs["kaldi"], longer, tiny.utt2spk)
    pitch = {u: np.concatenate([a, a[-2:]])[:, None] for u, a in tiny.pitch.items()}
    write_kaldi_dir(tiny_inputs["kaldi"], pitch, tiny.utt2spk, name="pitch")
    assert data_prep(pack_args(tiny_inputs, "--duration-tolerance", "0.02")) == 0, (
        capsys.readouterr().err
    )


def test_transposed_ptm_names_the_layout_option(
    tiny_inputs: dict[str, Path], tiny: TinyFeatures, capsys: pytest.CaptureFixture[str]
) -> None:
    save_ptm(tiny_inputs["ptm"], {u: a.transpose(1, 0, 2) for u, a in tiny.ptm.items()})
    err = run_failing(pack_args(tiny_inputs), capsys)
    assert "looks like [layers, frames, dims]" in err and "pass --ptm-layout LTD" in err
    assert "(3 layers," in err
    assert data_prep(pack_args(tiny_inputs, "--ptm-layout", "LTD")) == 0


def test_speaker_missing_from_utt2spk(
    tiny_inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    lines = tiny_inputs["utt2spk"].read_text().splitlines()
    tiny_inputs["utt2spk"].write_text("\n".join(lines[1:]) + "\n")
    err = run_failing(pack_args(tiny_inputs, "--utt2spk", str(tiny_inputs["utt2spk"])), capsys)
    assert str(tiny_inputs["utt2spk"]) in err and "no speaker for 1 ('spk0-utt0')" in err


def test_malformed_utt2spk_line(
    tiny_inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_inputs["utt2spk"].write_text("spk0-utt0 spk0\nlonely_token\n")
    err = run_failing(pack_args(tiny_inputs, "--utt2spk", str(tiny_inputs["utt2spk"])), capsys)
    assert "line 2" in err and "lonely_token" in err


def test_existing_output_is_kept_without_overwrite(
    tiny_inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tiny_inputs["out"] / "corpus.hdf"
    out.parent.mkdir(parents=True)
    out.write_bytes(b"precious")
    err = run_failing(pack_args(tiny_inputs), capsys)
    assert "output exists" in err and out.read_bytes() == b"precious"


def test_interrupted_run_leaves_no_partial_file(
    tiny_inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from e2espk.data import corpus as corpus_module

    calls = {"n": 0}
    original = corpus_module.CorpusWriter.add

    def add_then_die(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(corpus_module.CorpusWriter, "add", add_then_die)
    assert data_prep(pack_args(tiny_inputs)) == 130
    assert not tiny_inputs["out"].exists(), (
        "nothing, not even a temp file or the empty output directory, may be left behind"
    )


def test_unknown_source_kind_and_missing_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "feats.bin").write_bytes(b"x")
    err = run_failing(["--mfbe", str(tmp_path / "feats.bin"), "--out-path", str(tmp_path)], capsys)
    assert "feats.bin" in err and "cannot tell what kind" in err and "kaldi" in err
    err = run_failing(["--mfbe", str(tmp_path / "nope.scp"), "--out-path", str(tmp_path)], capsys)
    assert "nope.scp" in err and "not found" in err


def test_corrupt_pt_dict(
    tmp_path: Path, tiny: TinyFeatures, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "embedding.pt").write_bytes(b"not a torch file")
    err = run_failing(
        [
            "--ptm",
            str(tmp_path / "embedding.pt"),
            "--utt2spk",
            str(tiny.write_utt2spk(tmp_path / "u2s")),
            "--out-path",
            str(tmp_path),
        ],
        capsys,
    )
    assert "embedding.pt" in err and "cannot read torch file" in err


def test_truncated_ark(tiny_inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    ark = tiny_inputs["kaldi"] / "feats.ark"
    ark.write_bytes(ark.read_bytes()[: ark.stat().st_size // 2])
    err = run_failing(pack_args(tiny_inputs), capsys)
    assert "feats.scp" in err and "cannot read ark entry" in err


def test_bad_flags(
    tiny_inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "--ptm-layers" in run_failing(pack_args(tiny_inputs, "--ptm-layers", "0,x"), capsys)
    assert "out of range for 3 layers" in run_failing(
        pack_args(tiny_inputs, "--ptm-layers", "0,7"), capsys
    )
    assert "NAME=SOURCE" in run_failing(pack_args(tiny_inputs, "--stream", "nonsense"), capsys)
    config = tmp_path / "prep.yaml"
    config.write_text("min_recordings: 2\nmin_recording: 3\n")
    err = run_failing(pack_args(tiny_inputs, "--config", str(config)), capsys)
    assert "unknown option(s) min_recording" in err and "min_recordings" in err
    err = run_failing(
        pack_args(tiny_inputs, "--chunk-seconds", "0", "--compression", "lzf"), capsys
    )
    assert "contiguous datasets) cannot be compressed" in err and "--compression none" in err
    assert "must be >= 0" in run_failing(pack_args(tiny_inputs, "--chunk-seconds", "-1"), capsys)


def test_no_speaker_information(tmp_path: Path, tiny: TinyFeatures) -> None:
    save_ptm(tmp_path / "ptm.pt", tiny.ptm)
    with pytest.raises(Exception, match="no speaker information"):
        pack_corpus(
            PackConfig.from_flat(
                dict(ptm=[str(tmp_path / "ptm.pt")], out_path=str(tmp_path), progress=False)
            )
        )


def test_inspect_reports_corruption(
    tiny_inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert data_prep(pack_args(tiny_inputs)) == 0
    path = tiny_inputs["out"] / "corpus.hdf"
    assert inspect([str(path)]) == 0
    assert "integrity:  OK" in capsys.readouterr().out
    with h5py.File(path, "a") as handle:
        del handle["speakers/spk1/spk1-utt2/mfbe"]
        handle.create_group("speakers/intruder")
    assert inspect([str(path)]) == 1
    out = capsys.readouterr().out
    assert (
        "'spk1-utt2' stream 'mfbe': dataset missing" in out
        and "'intruder' is not in the index" in out
    )


def test_reader_rejects_foreign_and_broken_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.hdf"
    junk.write_bytes(b"\x00" * 100)
    assert inspect([str(junk)]) == 2
    assert "junk.hdf: not a readable HDF5 file" in capsys.readouterr().err
    with h5py.File(tmp_path / "other.hdf", "w") as handle:
        handle["x"] = 1
    assert inspect([str(tmp_path / "other.hdf")]) == 2
    assert "not an e2espk corpus" in capsys.readouterr().err
    with pytest.raises(InputDataError, match="corpus file not found"):
        from e2espk.data.corpus import Corpus

        Corpus(tmp_path / "missing.hdf")


@pytest.mark.parametrize(
    "mfbe", ["ark:{k}/feats.ark", "ark,s,cs:{k}/feats.ark", "scp,p:{k}/feats.scp"]
)
def test_kaldi_rspecifiers_are_sources(
    tiny_inputs: dict[str, Path], capsys: pytest.CaptureFixture[str], mfbe: str
) -> None:
    kaldi = tiny_inputs["kaldi"]
    args = ["--ptm", str(tiny_inputs["ptm"]), "--mfbe", mfbe.format(k=kaldi), "--pitch", f"scp:{kaldi}/pitch.scp",
            "--utt2spk", str(tiny_inputs["utt2spk"]), "--out-path", str(tiny_inputs["out"]), "--ptm-dtype", "float32", "--no-progress"]  # fmt: skip
    assert data_prep(args) == 0, capsys.readouterr().err
    reference = tiny_inputs["out"] / "reference"
    assert data_prep([*pack_args(tiny_inputs), "--out-path", str(reference)]) == 0
    with (
        h5py.File(tiny_inputs["out"] / "corpus.hdf") as got,
        h5py.File(reference / "corpus.hdf") as want,
    ):
        names: list[str] = []
        want.visit(names.append)
        compared = [n for n in names if isinstance(want[n], h5py.Dataset) and "/mfbe" in n]
        assert len(compared) == 9
        for name in compared:
            np.testing.assert_array_equal(got[name][()], want[name][()])
    assert run_failing(["--mfbe", "ark:-", "--out-path", str(tiny_inputs["out"])], capsys).count(
        "pipes and stdin cannot be read"
    )


def test_inspect_takes_no_progress_like_the_other_commands(
    tiny_inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert data_prep(pack_args(tiny_inputs)) == 0
    corpus = str(tiny_inputs["out"] / "corpus.hdf")
    capsys.readouterr()
    assert data_prep(["inspect", corpus, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "integrity:  OK" in captured.out and "it/s" not in captured.err
    assert inspect([corpus, "--progress"]) == 0
