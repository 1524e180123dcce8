"""eval.py --test-data: the model's streams are checked before packing; nothing is left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2espk.cli.eval import main as eval_main
from e2espk.data.corpus import Corpus
from e2espk.pipelines import evaluation


def source_args(checkpoint: Path, corpus: Path, out: Path, *streams: str) -> list[str]:
    sources = {
        "ptm": f"ptm={corpus / 'ptm' / 'embedding.pt'}",
        "mfbe": f"mfbe=kaldi:{corpus / 'kaldi'}",
        "mfcc_as_mfbe": f"mfbe=kaldi:{corpus / 'kaldi'}:mfcc.scp",
        "pitch": f"pitch=kaldi:{corpus / 'kaldi'}:pitch.scp",
    }
    return ["--cp-path", str(checkpoint), "--test-data", *(sources[s] for s in streams),
            "--out-path", str(out), "--no-progress", "--no-plots"]  # fmt: skip


def test_missing_stream_is_named_before_anything_is_packed(
    demo_hdf: dict[str, Path],
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    packed: list[object] = []
    monkeypatch.setattr(evaluation, "pack_corpus", lambda config: packed.append(config))
    out = tmp_path / "o"
    args = source_args(tiny_checkpoint, demo_hdf["root"] / "corpus", out, "ptm", "mfbe")
    assert eval_main(args) == 2
    err = capsys.readouterr().err
    assert "--test-data lacks stream 'pitch'" in err and "pitch=SOURCE" in err, err
    assert not packed, "nothing is packed when a stream the model reads is missing"
    assert not list(out.glob("test_data*"))


def test_a_packing_the_model_cannot_read_is_removed(
    demo_hdf: dict[str, Path],
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # MFCCs given as the log-mel stream: every stream is there, but the dims differ from the model's
    out = tmp_path / "o"
    args = source_args(
        tiny_checkpoint, demo_hdf["root"] / "corpus", out, "ptm", "mfcc_as_mfbe", "pitch"
    )
    assert eval_main(args) == 2
    assert "does not match the model's inputs" in capsys.readouterr().err
    assert not list(out.glob("test_data*")), "no packed file, record or report is left behind"


def test_ptm_is_packed_as_float16_like_data_prep(
    demo_hdf: dict[str, Path], tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "o"
    args = source_args(tiny_checkpoint, demo_hdf["root"] / "corpus", out, "ptm", "mfbe", "pitch")
    assert eval_main(args) == 0
    with Corpus(out / "test_data.hdf") as corpus:
        assert corpus.streams["ptm"].dtype == "float16"
        assert corpus.dataset(0, "ptm").dtype.name == "float16"
