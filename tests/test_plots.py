"""DET and histogram plots: valid images, atomic writes, no pyplot state, clear errors."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from e2espk.scoring.metrics import ScoringInputError, compute_eer
from e2espk.scoring.plots import DetCurve, plot_det, plot_score_histograms


@pytest.fixture(scope="module")
def score_sets():
    rng = np.random.default_rng(0)
    labels = rng.random(3000) < 0.2
    return {
        "cosine": (rng.normal(size=labels.size) + 2.5 * labels, labels),
        "tied": (np.round(rng.normal(size=labels.size) + 1.5 * labels, 1), labels),
    }


def read_png(path):
    assert path.stat().st_size > 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(path)


def test_plot_det_writes_png(tmp_path, score_sets):
    out = plot_det(score_sets, tmp_path / "sub" / "det.png", title="dev", dpi=50)
    assert out == tmp_path / "sub" / "det.png"
    image = read_png(out)
    assert image.shape == (300, 300, 4)  # 6 x 6 inches at 50 dpi, RGBA
    assert image[..., :3].std() > 0.05  # not a blank canvas
    assert [p.name for p in out.parent.iterdir()] == ["det.png"]  # no temp file left


def test_plot_det_accepts_precomputed_curves_and_limits(tmp_path, score_sets):
    curve = DetCurve.from_scores(*score_sets["cosine"], p_target=0.05)
    assert curve.eer == compute_eer(*score_sets["cosine"])
    bare = DetCurve(np.array([0.0, 0.5, 1.0]), np.array([1.0, 0.2, 0.0]), eer=0.3)
    out = plot_det({"pre": curve, "bare": bare}, tmp_path / "det.png", limits=(0.01, 0.6))
    assert read_png(out).ndim == 3


def test_plot_det_overwrites_atomically(tmp_path, score_sets):
    path = tmp_path / "det.png"
    path.write_bytes(b"old")
    plot_det({"cosine": score_sets["cosine"]}, path, dpi=30)
    assert read_png(path).shape[:2] == (180, 180)


def test_plot_score_histograms(tmp_path, score_sets):
    out = plot_score_histograms(score_sets, tmp_path / "hist.png", bins=20, dpi=50)
    image = read_png(out)
    assert image.shape == (150, 400, 4)  # two 4 x 3 inch subplots side by side at 50 dpi


def test_no_pyplot_figures_leak(tmp_path, score_sets):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_det(score_sets, tmp_path / "det.png", dpi=30)
    plot_score_histograms(score_sets, tmp_path / "hist.png", dpi=30)
    assert plt.get_fignums() == before


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="differ in length"):
        plot_det({"x": ([0.1, 0.2], [])}, tmp_path / "det.png")
    with pytest.raises(ValueError, match="no target trials among 0"):
        plot_score_histograms({"x": ([], [])}, tmp_path / "hist.png")
    with pytest.raises(ScoringInputError, match="at least one curve"):
        plot_det({}, tmp_path / "det.png")
    with pytest.raises(ScoringInputError, match="limits"):
        plot_det({"x": ([0.1, 0.9], [0, 1])}, tmp_path / "det.png", limits=(0.5, 0.1))
    with pytest.raises(ScoringInputError, match="bins"):
        plot_score_histograms({"x": ([0.1, 0.9], [0, 1])}, tmp_path / "hist.png", bins=0)
    assert list(tmp_path.iterdir()) == []  # nothing written on failure
