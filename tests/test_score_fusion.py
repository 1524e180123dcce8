"""Fitted score fusion: never worse than its better input, stored by train.py, applied by eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from e2espk.cli.eval import main as eval_main
from e2espk.scoring.metrics import ScoringInputError, compute_eer
from e2espk.scoring.score_fusion import LogisticFusion
from e2espk.scoring.scores import fuse, score_all
from e2espk.training.checkpoint import load_checkpoint, load_embedding_system, save_checkpoint


def trials(n: int, seed: int) -> tuple[np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    return rng.random(n) < 0.25, rng


def test_pure_noise_score_gets_no_weight() -> None:
    labels, rng = trials(4000, 0)
    good = 2.0 * labels + rng.standard_normal(len(labels))
    noise = 50.0 + 100.0 * rng.standard_normal(len(labels))  # another scale, no information
    scores = {"cosine": noise, "learned": good}
    fusion = LogisticFusion().fit(scores, labels)
    fused = fusion.apply(scores)
    assert compute_eer(fused, labels) <= compute_eer(good, labels)
    assert np.corrcoef(fused, good)[0, 1] > 0.999
    assert abs(fusion.weights[0] * noise.std()) < 0.05 * abs(fusion.weights[1] * good.std())  # type: ignore[index]


def test_complementary_scores_fuse_better_than_either() -> None:
    labels, rng = trials(4000, 1)
    a = labels + rng.standard_normal(len(labels))
    b = 3.0 * (labels + rng.standard_normal(len(labels))) - 7.0
    fusion = LogisticFusion().fit({"cosine": a, "learned": b}, labels)
    fused = fusion.apply({"cosine": a, "learned": b})
    assert compute_eer(fused, labels) < min(compute_eer(a, labels), compute_eer(b, labels)) - 0.02
    assert fusion.selected == "logistic"
    # an LLR: target trials above 0, non-target below, on average
    assert fused[labels].mean() > 0 > fused[~labels].mean()


@pytest.mark.parametrize("seed", range(8))
def test_fused_is_never_worse_than_the_better_input_on_its_fitting_trials(seed: int) -> None:
    labels, rng = trials(60, seed)  # small, noisy lists: where logistic regression alone can lose
    strength = rng.uniform(0.0, 3.0, 2)
    scores = {
        "cosine": strength[0] * labels + rng.standard_normal(len(labels)),
        "learned": np.exp(strength[1] * labels + rng.standard_normal(len(labels))),
    }
    fused = LogisticFusion().fit(scores, labels).apply(scores)
    best = min(compute_eer(scores[k], labels) for k in scores)
    assert compute_eer(fused, labels) <= best + 1e-12


def test_round_trip_and_bad_dicts() -> None:
    labels, rng = trials(200, 2)
    scores = {"cosine": labels + rng.standard_normal(200), "learned": rng.standard_normal(200)}
    fusion = LogisticFusion().fit(scores, labels)
    loaded = LogisticFusion.from_dict(json.loads(json.dumps(fusion.to_dict())))
    np.testing.assert_array_equal(loaded.apply(scores), fusion.apply(scores))
    with pytest.raises(ScoringInputError, match="unsupported score fusion"):
        LogisticFusion.from_dict({"kind": "mean"})
    with pytest.raises(ScoringInputError, match="not usable"):
        LogisticFusion.from_dict(fusion.to_dict() | {"weights": [1.0]})
    with pytest.raises(RuntimeError, match="before fit"):
        LogisticFusion().apply(scores)


def test_score_all_applies_a_fitted_fusion() -> None:
    from e2espk.models.verification import PairVerifier

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    table = rng.standard_normal((20, 12)).astype(np.float32)
    idx_a, idx_b = rng.integers(0, 20, 40), rng.integers(0, 20, 40)
    verifier = PairVerifier(12, hidden_size=8).eval()
    plain = score_all(table, idx_a, idx_b, verifier)
    fusion = LogisticFusion().fit(plain, rng.random(40) < 0.5)
    fitted = score_all(table, idx_a, idx_b, verifier, fusion=fusion)
    np.testing.assert_allclose(fitted["fused"], fusion.apply(plain), rtol=1e-6)
    np.testing.assert_allclose(plain["fused"], fuse([plain["cosine"], plain["learned"]]))


def test_training_stores_the_fusion_fitted_on_validation(tiny_checkpoint: Path) -> None:
    payload = load_checkpoint(tiny_checkpoint)
    fusion = LogisticFusion.from_dict(payload["score_fusion"])
    assert load_embedding_system(tiny_checkpoint).score_fusion is not None
    for entry in payload["history"]:
        assert entry["valid/fused/eer"] <= min(
            entry["valid/cosine/eer"], entry["valid/learned/eer"]
        )
    assert fusion.inputs == ("cosine", "learned")


def read_scores(path: Path) -> np.ndarray:
    return np.array([float(line.split()[2]) for line in path.read_text().splitlines()])


def test_eval_applies_the_fusion_and_old_checkpoints_fall_back(
    demo_hdf: dict[str, Path], tiny_checkpoint: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old.pt"
    payload = load_checkpoint(tiny_checkpoint)
    del payload["score_fusion"]
    save_checkpoint(old, payload)
    assert load_embedding_system(old).score_fusion is None
    fusion = LogisticFusion.from_dict(load_checkpoint(tiny_checkpoint)["score_fusion"])
    for checkpoint, name in ((tiny_checkpoint, "new"), (old, "old")):
        out = tmp_path / name
        args = ["--cp-path", str(checkpoint), "--test-hdf-file", str(demo_hdf["valid"]),
                "--out-path", str(out), "--no-progress", "--no-plots"]  # fmt: skip
        assert eval_main(args) == 0
        cosine, learned, fused = (
            read_scores(out / f"scores_{k}.txt") for k in ("cosine", "learned", "fused")
        )
        expected = (
            fusion.apply({"cosine": cosine, "learned": learned})
            if name == "new"
            else fuse([cosine, learned])
        )
        np.testing.assert_allclose(fused, expected, atol=2e-3)  # files keep 6 decimals
