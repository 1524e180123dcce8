"""Affine score calibration: turn raw verification scores into log-likelihood ratios.

Raw scores (cosine, PLDA, network logits) rank trials well but their scale is arbitrary, so a
fixed threshold or an actual DCF on them means little. Linear calibration, as in BOSARIS and
the NIST SRE systems, fits ``llr = a * score + b`` on a held-out trial list by prior-weighted
logistic regression; the result can be thresholded at the Bayes threshold for any prior and
cost (see :func:`e2espk.scoring.metrics.bayes_threshold`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from e2espk.scoring.metrics import FloatArray, ScoringInputError, check_trials

logger = logging.getLogger(__name__)

#: Written by :meth:`LogisticCalibration.to_dict`; bump when the fields change.
SCHEMA_VERSION = 1
_KIND = "logistic_calibration"

# Inverse L2 strength on the standardised score. Large enough that the fit is unbiased for
# any realistic trial list, yet it keeps the slope finite when the held-out trials are
# perfectly separated (where unpenalised logistic regression has no optimum).
_C = 1e6


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def fit_prior_weighted_logistic(
    x: npt.ArrayLike, labels: npt.ArrayLike, p_target: float = 0.5, c: float = _C
) -> tuple[FloatArray, float]:
    """Prior-weighted logistic regression of the trial labels on the columns of ``x``.

    Returns ``(w, b)`` with ``llr = x @ w + b``: the log posterior odds at prior ``p_target``
    less ``logit(p_target)``, so an LLR whatever the trial list's target/non-target ratio.
    Columns are standardised for the solver, so ``c`` (inverse L2 strength) penalises every
    column the same at any score scale; the weights are mapped back to the raw columns.

    Args:
        x: ``(N, K)`` scores of ``K`` systems (one column for calibration, several for fusion).
        labels: ``(N,)`` bool, True for target trials (both classes must be present).
        p_target: effective target prior of the weighted fit, in (0, 1).
        c: inverse L2 strength on the standardised columns (per unit of total weight N).
    """
    from sklearn.linear_model import LogisticRegression

    features = np.asarray(x, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n, n_tar = y.shape[0], int(y.sum())
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    std[std == 0] = 1.0
    # the weights sum to N, so the penalty is as small relative to the loss at any N
    weight = np.where(y, p_target * n / n_tar, (1.0 - p_target) * n / (n - n_tar))
    model = LogisticRegression(C=c, max_iter=1000, tol=1e-8)
    model.fit((features - mean) / std, y.astype(np.int64), sample_weight=weight)
    w = model.coef_[0] / std
    return w, float(model.intercept_[0] - w @ mean - _logit(p_target))


class LogisticCalibration:
    """Prior-weighted logistic-regression calibration, ``llr = a * score + b``.

    Target and non-target trials are weighted so that they carry ``p_target`` and
    ``1 - p_target`` of the total weight whatever their counts (BOSARIS ``train_linear_
    calibration``): the fitted log posterior odds are then those at prior ``p_target``, and
    subtracting ``logit(p_target)`` leaves an LLR that no longer depends on the trial list's
    target/non-target ratio. The prior only chooses which operating region the fit favours
    when the affine model is not exactly right; 0.5 optimises Cllr.

    Args:
        p_target: effective target prior of the weighted fit, in (0, 1).
    """

    def __init__(self, p_target: float = 0.5) -> None:
        if not 0.0 < p_target < 1.0:
            raise ScoringInputError(f"calibration p_target must be in (0, 1), got {p_target}")
        self.p_target = float(p_target)
        self.a: float | None = None  # LLR per unit of raw score
        self.b: float | None = None  # LLR at raw score 0

    @property
    def is_fitted(self) -> bool:
        return self.a is not None and self.b is not None

    def fit(self, scores: npt.ArrayLike, labels: npt.ArrayLike) -> LogisticCalibration:
        """Fit ``a`` and ``b`` on a held-out trial list (not the one being evaluated)."""
        s, y = check_trials(scores, labels)
        weights, self.b = fit_prior_weighted_logistic(s[:, None], y, self.p_target, _C)
        self.a = float(weights[0])
        if s[y].min() > s[~y].max():
            logger.warning(
                "calibration trials are perfectly separated; the slope (%.3g) is limited only "
                "by regularisation and the LLRs will be overconfident",
                self.a,
            )
        return self

    def transform(self, scores: npt.ArrayLike) -> FloatArray:
        """Map raw scores (any shape) to LLRs (natural log); NaN stays NaN."""
        if self.a is None or self.b is None:
            raise RuntimeError("LogisticCalibration.transform called before fit()")
        return self.a * np.asarray(scores, dtype=np.float64) + self.b

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description, so a calibration can be saved next to a model."""
        if self.a is None or self.b is None:
            raise RuntimeError("LogisticCalibration.to_dict called before fit()")
        return {
            "kind": _KIND,
            "version": SCHEMA_VERSION,
            "p_target": self.p_target,
            "a": self.a,
            "b": self.b,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LogisticCalibration:
        """Rebuild a calibration saved by :meth:`to_dict`.

        Raises:
            ScoringInputError: if the mapping is not a saved calibration of this version.
        """
        expected = {"kind", "version", "p_target", "a", "b"}
        if set(data) != expected:
            raise ScoringInputError(
                f"not a saved calibration: expected keys {sorted(expected)}, "
                f"got {sorted(map(str, data))}"
            )
        if data["kind"] != _KIND or data["version"] != SCHEMA_VERSION:
            raise ScoringInputError(
                f"unsupported calibration kind/version {data['kind']!r}/{data['version']!r}, "
                f"this version of e2espk reads {_KIND!r}/{SCHEMA_VERSION}"
            )
        try:
            a, b = float(data["a"]), float(data["b"])
        except (TypeError, ValueError) as exc:
            raise ScoringInputError(f"calibration a/b must be numbers: {exc}") from None
        if not (math.isfinite(a) and math.isfinite(b)):
            raise ScoringInputError(f"calibration a/b must be finite, got a={a}, b={b}")
        calibration = cls(p_target=float(data["p_target"]))
        calibration.a, calibration.b = a, b
        return calibration

    def __repr__(self) -> str:
        return f"LogisticCalibration(p_target={self.p_target}, a={self.a}, b={self.b})"
