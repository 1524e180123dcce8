"""Logistic calibration: recovers known LLRs, improves Cllr, round-trips through JSON."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from e2espk.scoring.calibration import LogisticCalibration
from e2espk.scoring.metrics import ScoringInputError, compute_cllr, compute_min_dcf

# equal-variance Gaussians: targets N(MU_T, SIGMA), non-targets N(MU_N, SIGMA). The LLR is
#   log N(s; MU_T) - log N(s; MU_N) = ((MU_T - MU_N) s + (MU_N^2 - MU_T^2) / 2) / SIGMA^2
# = 2 s - 2 for (2, 0, 1). The raw score is then mis-scaled: raw = 0.2 s + 5, so
#   s = (raw - 5) / 0.2 and LLR = 10 raw - 52.
MU_T, MU_N, SIGMA = 2.0, 0.0, 1.0
TRUE_A, TRUE_B = 10.0, -52.0


def gaussian_trials(seed: int, n_tar: int, n_non: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = np.concatenate([rng.normal(MU_T, SIGMA, n_tar), rng.normal(MU_N, SIGMA, n_non)])
    labels = np.repeat([True, False], [n_tar, n_non])
    return 0.2 * s + 5.0, labels


def test_true_llr_formula():
    # sanity check of the comment above against the Gaussian densities
    raw = np.array([4.0, 5.0, 5.3])
    s = (raw - 5.0) / 0.2
    log_ratio = (-((s - MU_T) ** 2) + (s - MU_N) ** 2) / (2 * SIGMA**2)
    np.testing.assert_allclose(TRUE_A * raw + TRUE_B, log_ratio)


@pytest.mark.parametrize("p_target", [0.5, 0.1])
def test_fit_recovers_true_affine_llr(p_target):
    # 1:4 target ratio in the data; the prior weighting makes the fit independent of it
    scores, labels = gaussian_trials(0, 10_000, 40_000)
    cal = LogisticCalibration(p_target=p_target).fit(scores, labels)
    assert cal.a == pytest.approx(TRUE_A, rel=0.05)
    assert cal.b == pytest.approx(TRUE_B, rel=0.05)
    # LLR 0 where the two densities are equal: s = 1, raw = 5.2
    assert float(cal.transform(5.2)) == pytest.approx(0.0, abs=0.1)


def test_calibration_lowers_cllr_and_keeps_min_dcf():
    train_s, train_y = gaussian_trials(1, 3000, 6000)
    test_s, test_y = gaussian_trials(2, 3000, 6000)
    cal = LogisticCalibration().fit(train_s, train_y)
    llrs = cal.transform(test_s)
    before = compute_cllr(test_s, test_y)
    after = compute_cllr(llrs, test_y)
    assert before > 1.0  # raw scores around 5 claim strong target evidence everywhere
    assert after < 0.7 * before
    # the truth is the bound: Cllr of the exact LLRs
    exact = compute_cllr(TRUE_A * test_s + TRUE_B, test_y)
    assert after == pytest.approx(exact, abs=0.01)
    # a monotone map does not change discrimination
    assert compute_min_dcf(llrs, test_y, 0.01) == pytest.approx(compute_min_dcf(test_s, test_y))


def test_round_trip_through_json():
    scores, labels = gaussian_trials(3, 500, 1500)
    cal = LogisticCalibration(p_target=0.2).fit(scores, labels)
    loaded = LogisticCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert (loaded.a, loaded.b, loaded.p_target) == (cal.a, cal.b, cal.p_target)
    x = np.linspace(3, 7, 11).reshape(11, 1)
    np.testing.assert_array_equal(loaded.transform(x), cal.transform(x))
    assert loaded.transform(x).shape == (11, 1)


def test_separated_trials_give_finite_fit(caplog):
    with caplog.at_level(logging.WARNING, logger="e2espk.scoring.calibration"):
        cal = LogisticCalibration().fit([0.0, 1.0, 2.0, 3.0], [0, 0, 1, 1])
    assert cal.a is not None and cal.b is not None
    assert math.isfinite(cal.a) and cal.a > 0 and math.isfinite(cal.b)
    assert "perfectly separated" in caplog.text


def test_errors():
    with pytest.raises(RuntimeError, match="before fit"):
        LogisticCalibration().transform([1.0])
    with pytest.raises(RuntimeError, match="before fit"):
        LogisticCalibration().to_dict()
    with pytest.raises(ValueError, match="p_target"):
        LogisticCalibration(p_target=1.0)
    with pytest.raises(ValueError, match="no target"):
        LogisticCalibration().fit([0.1, 0.2], [0, 0])
    good = {"kind": "logistic_calibration", "version": 1, "p_target": 0.5, "a": 1.0, "b": 0.0}
    with pytest.raises(ScoringInputError, match="expected keys"):
        LogisticCalibration.from_dict({k: v for k, v in good.items() if k != "b"})
    with pytest.raises(ScoringInputError, match="version"):
        LogisticCalibration.from_dict({**good, "version": 99})
    with pytest.raises(ScoringInputError, match="finite"):
        LogisticCalibration.from_dict({**good, "a": float("nan")})
    with pytest.raises(ScoringInputError, match="numbers"):
        LogisticCalibration.from_dict({**good, "a": "x"})
