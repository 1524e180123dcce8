"""Side scores (--side-scores pitch_level): fitted into the score fusion, stored, used by eval."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from e2espk.cli.eval import main as eval_main
from e2espk.data.corpus import Corpus
from e2espk.errors import ConfigError, InputDataError
from e2espk.inference.checkpoint_file import load_checkpoint, save_checkpoint
from e2espk.inference.side_values import side_values
from e2espk.inference.system import load_embedding_system
from e2espk.scoring.side_scores import PitchLevel, side_score_from_dict
from e2espk.training.trainer import train
from tests.test_eval import valid_pairs, write_kaldi_trials
from tests.test_generalisation import config


def test_pitch_level_is_the_median_log_f0_of_voiced_frames() -> None:
    side = PitchLevel()
    frames = np.zeros((10, 2), dtype=np.float32)
    frames[:, 0] = np.log([100, 100, 100, 100, 200, 210, 220, 230, 240, 900])
    frames[4:9, 1] = 1.0  # voiced: 200..240 Hz; the 900 Hz frame is an unvoiced artefact
    assert np.exp(side.describe(frames)) == pytest.approx(220.0, rel=1e-5)
    # too few voiced frames: the median over all of them
    frames[:, 1] = 0.0
    frames[0, 1] = 1.0
    assert np.exp(side.describe(frames)) == pytest.approx(np.sqrt(200 * 210), rel=1e-5)
    assert np.exp(PitchLevel(voicing_column=None).describe(frames)) == pytest.approx(
        np.sqrt(200 * 210), rel=1e-5
    )
    values = np.log(np.array([100.0, 110.0, 200.0]))
    pairs = side.score_pairs(values, np.array([0, 0, 2]), np.array([1, 2, 2]))
    np.testing.assert_allclose(pairs, [-np.log(1.1), -np.log(2.0), 0.0], rtol=1e-5)
    matrix = side.score_matrix(values, values[:2])
    assert matrix.shape == (3, 2) and matrix[1, 0] == pairs[0]
    assert "voicing column is 1" in (side.check_columns(1) or "")
    assert side.check_columns(2) is None
    assert side_score_from_dict(side.to_dict()) == side


def test_a_fusion_with_the_pitch_level_and_plda_is_trained_stored_and_evaluated(
    demo_hdf: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    # the demo corpus's pitch stream is ln F0 alone (no voicing column)
    result = train(config(demo_hdf, run, epochs=1, side_scores=["pitch_level"],
                          pitch_voicing_column=-1, fusion_backends=["plda"],
                          fusion_asnorm=True, fusion_asnorm_top_n=3))  # fmt: skip
    entry = result.history[0]
    assert 0.0 <= entry["valid/pitch_level/eer"] <= 1.0 and "valid/fused/eer" in entry
    assert "valid/plda/eer" not in entry  # the back-ends are fitted once, at export
    assert "valid/plda/eer" in result.exported["final"]
    payload = load_checkpoint(run / "final.pt", "cpu")
    assert payload["side_scores"] == [PitchLevel(voicing_column=None).to_dict()]
    assert payload["score_fusion"]["inputs"] == ["cosine", "learned", "pitch_level", "plda"]
    assert payload["score_fusion_asnorm"]["inputs"] == ["cosine", "learned", "plda", "pitch_level"]
    assert "valid/fused_asnorm/eer" in result.exported["final"]
    # final.pt got its own file: averaged.pt keeps the fusion fitted without back-ends
    averaged = load_checkpoint(run / "averaged.pt", "cpu")
    assert averaged["score_fusion"]["inputs"] == ["cosine", "learned", "pitch_level"]
    assert averaged["fusion_backends"] == []
    system = load_embedding_system(run / "final.pt")
    assert system.side_streams == ("pitch",) and list(system.fusion_backends) == ["plda"]

    trials = write_kaldi_trials(tmp_path / "trials", *valid_pairs(demo_hdf))
    out = tmp_path / "scores"
    args = ["--cp-path", str(run / "final.pt"), "--test-hdf-file", str(demo_hdf["valid"]),
            "--trials-path", str(trials), "--out-path", str(out), "--cohort-hdf-file",
            str(demo_hdf["train"]), "--cohort-top-n", "3", "--backend-hdf-file", str(demo_hdf["train"]),
            "--backends", "plda", "--no-progress", "--no-plots"]  # fmt: skip
    assert eval_main(args) == 0
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    assert {"pitch_level", "fused", "fused_asnorm"} <= set(metrics)
    assert "pitch_level_asnorm" not in metrics  # a side score is normalised inside the fused one

    def read(name: str) -> tuple[list[tuple[str, str]], np.ndarray]:
        lines = [line.split() for line in (out / f"scores_{name}.txt").read_text().splitlines()]
        return [(line[0], line[1]) for line in lines], np.array([float(x[2]) for x in lines])

    pairs, pitch = read("pitch_level")
    with Corpus(demo_hdf["valid"]) as corpus:
        level = {
            utt: float(np.median(corpus.read(row, "pitch")[:, 0]))
            for row, utt in enumerate(corpus.utterances.tolist())
        }
    np.testing.assert_allclose(pitch, [-abs(level[a] - level[b]) for a, b in pairs], atol=1e-6)
    assert list(metrics).count("plda") == 1  # eval's own; the checkpoint's is a fusion input
    with (
        h5py.File(out / "embedding_cache" / "test.h5") as handle,
        Corpus(demo_hdf["valid"]) as corpus,
    ):
        plda = system.fusion_backends["plda"]
        table = plda.transform(handle["embeddings"][()])
        rows = [[corpus.utterance_row(pair[k]) for pair in pairs] for k in (0, 1)]
    scores = {name: read(name)[1] for name in ("cosine", "learned")} | {"pitch_level": pitch}
    scores["plda"] = plda.score_pairs(table, np.array(rows[0]), np.array(rows[1]))
    assert system.score_fusion is not None
    np.testing.assert_allclose(read("fused")[1], system.score_fusion.apply(scores), atol=1e-4)
    # fused_asnorm is the checkpoint's AS-norm fusion of eval's AS-normed scores (its PLDA,
    # fitted on the same training file, is the checkpoint's) and the raw pitch level
    normed = {name: read(f"{name}_asnorm")[1] for name in ("cosine", "learned", "plda")}
    assert system.score_fusion_asnorm is not None
    expected = system.score_fusion_asnorm.apply(normed | {"pitch_level": pitch})
    np.testing.assert_allclose(read("fused_asnorm")[1], expected, atol=1e-4)

    # averaged.pt (like best.pt and last.pt) has a fusion with the pitch level but no AS-norm
    # fusion: its fused_asnorm normalises the embedding part alone and adds the pitch part
    out = tmp_path / "scores_averaged"
    args[args.index(str(run / "final.pt"))] = str(run / "averaged.pt")
    args[args.index(str(tmp_path / "scores"))] = str(out)
    assert eval_main(args) == 0
    averaged_system = load_embedding_system(run / "averaged.pt")
    fusion = averaged_system.score_fusion
    assert fusion is not None and averaged_system.score_fusion_asnorm is None
    weight = dict(zip(fusion.inputs, fusion.weights.tolist(), strict=True))
    pairs, pitch = read("pitch_level")
    embedding_part = read("fused")[1] - weight["pitch_level"] * pitch
    with (
        h5py.File(out / "embedding_cache" / "test.h5") as test_handle,
        h5py.File(out / "embedding_cache" / "cohort.h5") as cohort_handle,
        Corpus(demo_hdf["valid"]) as corpus,
        Corpus(demo_hdf["train"]) as cohort_corpus,
    ):
        test_x = test_handle["embeddings"][()]
        cohort_x, cohort_speakers = cohort_handle["embeddings"][()], cohort_corpus.speaker_of[:]
        rows = np.array([[corpus.utterance_row(pair[k]) for pair in pairs] for k in (0, 1)])

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    models = np.stack(
        [unit(cohort_x[cohort_speakers == s]).mean(0) for s in np.unique(cohort_speakers)]
    )
    cohort_cosine = unit(test_x) @ unit(models).T
    cohort_learned = averaged_system.verifier.score_matrix(
        torch.from_numpy(test_x), torch.from_numpy(models.astype(np.float32))
    ).numpy()
    cohort_part = (
        fusion.bias + weight["cosine"] * cohort_cosine + weight["learned"] * cohort_learned
    )
    top = np.sort(cohort_part, axis=1)[:, -3:]
    mean, std = top.mean(1), top.std(1)
    normalised = 0.5 * sum((embedding_part - mean[r]) / std[r] for r in rows)
    expected = normalised * std.mean() + weight["pitch_level"] * pitch
    np.testing.assert_allclose(read("fused_asnorm")[1], expected, atol=1e-3)


def test_side_score_errors_name_the_option_or_the_file(
    demo_hdf: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="--valid-hdf-file"):
        config(
            demo_hdf, tmp_path / "a", valid_hdf_file=None, side_scores=["pitch_level"]
        ).validate()
    with pytest.raises(ConfigError, match="unknown side score 'pitch_range'"):
        config(demo_hdf, tmp_path / "b", side_scores=["pitch_range"]).validate()
    # the default voicing column (1) does not exist in the demo's one-column pitch stream
    with pytest.raises(InputDataError, match="voicing column is 1") as error:
        train(config(demo_hdf, tmp_path / "c", side_scores=["pitch_level"]))
    assert str(demo_hdf["valid"]) in str(error.value)
    assert not (tmp_path / "c").exists()
    with Corpus(demo_hdf["valid"]) as corpus, pytest.raises(InputDataError, match="'f0'") as error:
        side_values(corpus, [0], {"pitch_level": PitchLevel(stream="f0")})
    assert str(demo_hdf["valid"]) in str(error.value)


def test_a_finished_run_resumed_with_side_scores_re_exports_its_fusion(
    demo_hdf: dict[str, Path], tmp_path: Path
) -> None:
    """Side scores and fusion back-ends do not change training: a finished run resumed with
    them only refits final.pt's fusion, and the checkpoint says how to compute every input."""
    run = tmp_path / "run"
    train(config(demo_hdf, run, epochs=1))
    before = load_checkpoint(run / "final.pt", "cpu")
    assert before["score_fusion"]["inputs"] == ["cosine", "learned"]
    result = train(config(demo_hdf, run, epochs=1, resume=True, side_scores=["pitch_level"],
                          pitch_voicing_column=-1, fusion_backends=["plda"]))  # fmt: skip
    assert len(result.history) == 1  # no epoch trained again
    after = load_checkpoint(run / "final.pt", "cpu")
    assert after["score_fusion"]["inputs"] == ["cosine", "learned", "pitch_level", "plda"]
    for key in before["model"]:
        assert np.array_equal(before["model"][key].numpy(), after["model"][key].numpy()), key
    system = load_embedding_system(run / "final.pt")
    assert set(system.side_scores) == {"pitch_level"} and set(system.fusion_backends) == {"plda"}
    # a fusion whose inputs the checkpoint cannot compute is refused when loading
    after["side_scores"] = []
    save_checkpoint(tmp_path / "broken.pt", after)
    with pytest.raises(InputDataError, match="pitch_level") as error:
        load_embedding_system(tmp_path / "broken.pt")
    assert "broken.pt" in str(error.value)
