"""eval.py: trial formats, scoring, AS-norm, calibration, plots and every bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import matplotlib.image
import numpy as np
import pytest

from e2espk.cli.eval import main as eval_main
from e2espk.data.corpus import Corpus
from e2espk.errors import InputDataError
from e2espk.inference.extraction import window_starts
from e2espk.scoring.asnorm import as_norm, top_n_statistics
from e2espk.scoring.metrics import compute_eer
from e2espk.scoring.trials import read_trials


def valid_pairs(demo_hdf: dict[str, Path]) -> tuple[list[str], list[str]]:
    with Corpus(demo_hdf["valid"]) as corpus:
        utts = corpus.utterances.tolist()
        spks = corpus.speakers[corpus.speaker_of].tolist()
    return utts, spks


def write_kaldi_trials(path: Path, utts: list[str], spks: list[str]) -> Path:
    lines = [
        f"{a} {b} {'target' if spks[i] == spks[j] else 'nontarget'}\n"
        for i, a in enumerate(utts)
        for j, b in enumerate(utts)
        if i < j
    ]
    path.write_text("".join(lines))
    return path


def test_trial_formats(tmp_path: Path) -> None:
    (tmp_path / "kaldi").write_text("a b target\nc d nontarget\n")
    (tmp_path / "vox").write_text("1 a b\n0 c d\n")
    (tmp_path / "blind").write_text("a b\nc d\n")
    for name in ("kaldi", "vox"):
        trials = read_trials(tmp_path / name)
        assert (
            trials.enroll == ["a", "c"]
            and trials.test == ["b", "d"]
            and trials.labels.tolist() == [True, False]
        )  # type: ignore[union-attr]
    assert read_trials(tmp_path / "blind").labels is None
    (tmp_path / "bad").write_text("a b target\na b c d\n")
    with pytest.raises(InputDataError, match=r"bad: line 2: 'a b c d' is not"):
        read_trials(tmp_path / "bad")
    (tmp_path / "mixed").write_text("a b target\nc d\n")
    with pytest.raises(InputDataError, match="line 2: mixes labelled and unlabelled"):
        read_trials(tmp_path / "mixed")


def test_window_starts_cover_the_utterance() -> None:
    assert window_starts(3.0, 4.0, 4.0) == [0.0]
    assert window_starts(10.0, 4.0, 4.0) == [0.0, 4.0, 6.0]


def test_asnorm_hand_case() -> None:
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0]])
    cohort = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    means, stds = top_n_statistics(embeddings, cohort, top_n=2)
    # utterance 0 vs cohort: cos = [1, 0, 0.7071]; top-2 = [1, 0.7071]
    np.testing.assert_allclose(means, [(1 + 2**-0.5) / 2] * 2)
    np.testing.assert_allclose(stds, [(1 - 2**-0.5) / 2] * 2)
    normalized = as_norm(np.array([0.5]), np.array([0]), np.array([1]), means, stds)
    np.testing.assert_allclose(normalized, (0.5 - means[0]) / stds[0], rtol=1e-6)


def test_eval_scores_metrics_and_plots(
    demo_hdf: dict[str, Path],
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    trials = write_kaldi_trials(tmp_path / "trials", *valid_pairs(demo_hdf))
    calibration = write_kaldi_trials(tmp_path / "calibration", *valid_pairs(demo_hdf))
    out = tmp_path / "scores"
    args = ["--cp-path", str(tiny_checkpoint), "--test-hdf-file", str(demo_hdf["valid"]), "--trials-path", str(trials), "--out-path", str(out),
            "--cohort-hdf-file", str(demo_hdf["train"]), "--cohort-top-n", "3", "--calibration-trials", str(calibration), "--c-primary", "--no-progress"]  # fmt: skip
    assert eval_main(args) == 0
    printed = capsys.readouterr().out
    assert "28 trials" in printed and "fused_asnorm" in printed and "det plot" in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results["metrics"]) == {
        "cosine",
        "learned",
        "fused",
        "cosine_asnorm",
        "learned_asnorm",
        "fused_asnorm",
    }
    lines = (out / "scores_cosine.txt").read_text().splitlines()
    assert len(lines) == 28
    scores = np.array([float(line.split()[2]) for line in lines])
    labels = np.array([line.split()[3] == "target" for line in lines])
    assert results["metrics"]["cosine"]["eer"] == pytest.approx(
        compute_eer(scores, labels), abs=1e-6
    )
    assert {"eer", "min_dcf@0.01", "min_dcf@0.05", "c_primary", "cllr", "act_dcf@0.01"} <= set(
        results["metrics"]["fused"]
    )
    for png in ("det.png", "score_histograms.png"):
        assert matplotlib.image.imread(out / png).ndim == 3


def test_eval_builds_trials_and_blind_scoring(
    demo_hdf: dict[str, Path], tiny_checkpoint: Path, tmp_path: Path
) -> None:
    assert (
        eval_main(
            [
                "--cp-path",
                str(tiny_checkpoint),
                "--test-hdf-file",
                str(demo_hdf["valid"]),
                "--out-path",
                str(tmp_path / "built"),
                "--no-progress",
                "--no-plots",
            ]
        )
        == 0
    )
    built = json.loads((tmp_path / "built" / "results.json").read_text())
    labels = [
        line.split()[3]
        for line in (tmp_path / "built" / "scores_cosine.txt").read_text().splitlines()
    ]
    # 2 valid speakers x 4 utterances: all 12 target pairs; 3 x 12 non-target pairs wanted, only 16 exist
    assert (
        built["trials"] == 28 and labels.count("target") == 12 and labels.count("nontarget") == 16
    )
    utts, _ = valid_pairs(demo_hdf)
    (tmp_path / "blind").write_text(f"{utts[0]} {utts[5]}\n{utts[1]} {utts[2]}\n")
    assert (
        eval_main(
            [
                "--cp-path",
                str(tiny_checkpoint),
                "--test-hdf-file",
                str(demo_hdf["valid"]),
                "--trials-path",
                str(tmp_path / "blind"),
                "--out-path",
                str(tmp_path / "blind_out"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert len((tmp_path / "blind_out" / "scores_fused.txt").read_text().split()) == 2 * 3


def test_eval_missing_utterances(
    demo_hdf: dict[str, Path],
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    utts, spks = valid_pairs(demo_hdf)
    trials = write_kaldi_trials(tmp_path / "trials", [*utts, "ghost1", "ghost2"], [*spks, "x", "y"])
    base = [
        "--cp-path",
        str(tiny_checkpoint),
        "--test-hdf-file",
        str(demo_hdf["valid"]),
        "--trials-path",
        str(trials),
        "--out-path",
        str(tmp_path / "o"),
        "--no-progress",
        "--no-plots",
    ]
    assert eval_main(base) == 2
    assert "2 ('ghost1', 'ghost2') utterance(s) are not in the test data" in capsys.readouterr().err
    assert eval_main([*base, "--skip-missing"]) == 0
    assert "28 trials (17 skipped: missing utterances)" in capsys.readouterr().out


def test_eval_stream_missing_and_bad_checkpoint(
    demo_hdf: dict[str, Path],
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from e2espk.data.packing import PackConfig, pack_corpus

    kaldi = demo_hdf["root"] / "corpus" / "kaldi"
    pack_corpus(
        PackConfig.from_flat(
            dict(
                path_to_data=[str(kaldi)],
                out_path=str(tmp_path),
                out_name="mel_only",
                progress=False,
            )
        )
    )
    assert (
        eval_main(
            [
                "--cp-path",
                str(tiny_checkpoint),
                "--test-hdf-file",
                str(tmp_path / "mel_only.hdf"),
                "--out-path",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert (
        "mel_only.hdf: feature mode 'mfbe_pitch' needs stream(s) ['pitch']"
        in capsys.readouterr().err
    )
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert (
        eval_main(
            ["--cp-path", str(tmp_path / "junk.pt"), "--test-hdf-file", str(demo_hdf["valid"])]
        )
        == 2
    )
    assert "junk.pt: cannot read checkpoint" in capsys.readouterr().err


def test_eval_straight_from_sources(
    demo_hdf: dict[str, Path], tiny_checkpoint: Path, tmp_path: Path
) -> None:
    corpus = demo_hdf["root"] / "corpus"
    args = ["--cp-path", str(tiny_checkpoint), "--test-data", f"ptm={corpus / 'ptm' / 'embedding.pt'}", f"mfbe=kaldi:{corpus / 'kaldi'}", f"pitch=kaldi:{corpus / 'kaldi'}:pitch.scp",
            "--out-path", str(tmp_path / "o"), "--no-progress", "--no-plots"]  # fmt: skip
    assert eval_main(args) == 0
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["trials"] > 0 and 0 <= results["metrics"]["fused"]["eer"] <= 1


def test_eval_from_sources_reuses_its_packing_until_an_input_changes(
    demo_hdf: dict[str, Path], tiny_checkpoint: Path, tmp_path: Path, capfd
) -> None:
    source = demo_hdf["root"] / "corpus"
    corpus = tmp_path / "corpus"  # a copy: this test changes a file
    shutil.copytree(source, corpus)
    out = tmp_path / "o"
    args = ["--cp-path", str(tiny_checkpoint), "--test-data", f"ptm={corpus / 'ptm' / 'embedding.pt'}", f"mfbe=kaldi:{corpus / 'kaldi'}", f"pitch=kaldi:{corpus / 'kaldi'}:pitch.scp",
            "--out-path", str(out), "--no-progress", "--no-plots"]  # fmt: skip
    assert eval_main(args) == 0
    packed = (out / "test_data.hdf").stat().st_mtime_ns
    scores = (out / "scores_fused.txt").read_text()
    capfd.readouterr()
    assert eval_main(args) == 0
    err = capfd.readouterr().err
    assert "reusing" in err and "from the embedding cache" in err
    assert (out / "test_data.hdf").stat().st_mtime_ns == packed  # not re-packed
    assert (out / "scores_fused.txt").read_text() == scores
    pitch_scp = corpus / "kaldi" / "pitch.scp"
    os.utime(pitch_scp, ns=(pitch_scp.stat().st_atime_ns, pitch_scp.stat().st_mtime_ns + 10**9))
    assert eval_main(args) == 0
    err = capfd.readouterr().err
    assert (
        "reusing" not in err and "from the embedding cache" not in err
    )  # packed and embedded anew
    assert (out / "test_data.hdf").stat().st_mtime_ns != packed


BACKEND_SCORES = ["cosine_mean", "cosine_lda", "plda"]


def test_eval_with_backends_and_their_asnorm(
    demo_hdf: dict[str, Path],
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from e2espk.scoring.backends import backend_from_dict

    trials = write_kaldi_trials(tmp_path / "trials", *valid_pairs(demo_hdf))
    out = tmp_path / "scores"
    args = ["--cp-path", str(tiny_checkpoint), "--test-hdf-file", str(demo_hdf["valid"]), "--trials-path", str(trials),
            "--out-path", str(out), "--backend-hdf-file", str(demo_hdf["train"]), "--cohort-hdf-file", str(demo_hdf["train"]),
            "--cohort-top-n", "3", "--calibration-trials", str(trials), "--no-progress"]  # fmt: skip
    assert eval_main(args) == 0
    printed = capsys.readouterr().out
    base = ["cosine", "learned", "fused"]
    expected = [*base, *BACKEND_SCORES, *(f"{name}_asnorm" for name in [*base, *BACKEND_SCORES])]
    results = json.loads((out / "results.json").read_text())
    assert list(results["metrics"]) == expected
    for name in expected:
        assert name in printed
        scores = np.array(
            [
                float(line.split()[2])
                for line in (out / f"scores_{name}.txt").read_text().splitlines()
            ]
        )
        assert len(scores) == 28 and np.isfinite(scores).all()
        assert 0 <= results["metrics"][name]["eer"] <= 1 and "cllr" in results["metrics"][name]
    saved = json.loads((out / "backends.json").read_text())
    assert saved["fitted_on"] == str(demo_hdf["train"]) and saved["utterances"] == 16
    lda = backend_from_dict(saved["cosine_lda"])
    assert lda.projection.shape == (8, 3)  # type: ignore[attr-defined]  # 4 training speakers
    # the back-end corpus is the cohort corpus: one embedding cache serves both
    assert sorted(p.name for p in (out / "embedding_cache").glob("*.h5")) == [
        "cohort.h5",
        "test.h5",
    ]
    # PLDA AS-norm by hand: cohort models are the speaker means of PLDA-transformed cohort
    # utterances, scored by the PLDA; every row of both corpora is in the caches
    plda = backend_from_dict(saved["plda"])
    with h5py.File(out / "embedding_cache" / "test.h5") as handle:
        test = plda.transform(handle["embeddings"][()])
    with (
        h5py.File(out / "embedding_cache" / "cohort.h5") as handle,
        Corpus(demo_hdf["train"]) as cohort,
    ):
        models = plda.cohort_models(handle["embeddings"][()], cohort.speaker_of)
    with Corpus(demo_hdf["valid"]) as corpus:
        lines = [line.split() for line in (out / "scores_plda.txt").read_text().splitlines()]
        idx_a, idx_b = (np.array([corpus.utterance_row(line[k]) for line in lines]) for k in (0, 1))
    raw = plda.score_pairs(test, idx_a, idx_b)
    np.testing.assert_allclose([float(line[2]) for line in lines], raw, atol=1e-5)
    means, stds = top_n_statistics(test, models, 3, plda.score_matrix)
    normalized = as_norm(raw, idx_a, idx_b, means, stds)
    got = [
        float(line.split()[2]) for line in (out / "scores_plda_asnorm.txt").read_text().splitlines()
    ]
    np.testing.assert_allclose(got, normalized, atol=1e-5)
    assert matplotlib.image.imread(out / "det.png").ndim == 3


def test_eval_backend_selection_and_errors(
    demo_hdf: dict[str, Path],
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "o"
    base = ["--cp-path", str(tiny_checkpoint), "--test-hdf-file", str(demo_hdf["valid"]),
            "--out-path", str(out), "--no-progress", "--no-plots"]  # fmt: skip
    assert (
        eval_main(
            [
                *base,
                "--backend-hdf-file",
                str(demo_hdf["train"]),
                "--backends",
                "plda",
                "--lda-dim",
                "2",
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert list(results["metrics"]) == ["cosine", "learned", "fused", "plda"]
    assert (out / "embedding_cache" / "backend.h5").is_file()
    capsys.readouterr()
    assert eval_main([*base, "--backends", "plda"]) == 2
    assert "--backends needs --backend-hdf-file" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: the choices come from the registry
        eval_main([*base, "--backend-hdf-file", str(demo_hdf["train"]), "--backends", "cds"])
    assert "invalid choice: 'cds' (choose from 'lda', 'mean', 'plda')" in capsys.readouterr().err
    # a sample too small to show two speakers cannot fit a back-end
    args = [*base, "--backend-hdf-file", str(demo_hdf["train"]), "--backend-max-utterances", "1"]
    assert eval_main(args) == 2
    assert (
        "demo_train.hdf: cannot fit the 'mean' back-end: a back-end needs at least 2 speakers"
        in capsys.readouterr().err
    )
