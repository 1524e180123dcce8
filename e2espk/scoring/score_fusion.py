"""Score-level fusion of the cosine and learned-distance scores with fitted weights.

``fused = w_cosine * cosine + w_learned * learned + b`` is fitted by prior-weighted logistic
regression (:func:`e2espk.scoring.calibration.fit_prior_weighted_logistic`, as in BOSARIS
linear fusion) on labelled trials: train.py fits it on the validation trials at every
validation and stores it in the checkpoint, and eval.py applies it to the test trials. The
fused score is an LLR-like quantity (calibrated on the trials it was fitted on), not a
z-score.

"Score fusion", not "fusion": alone, that word means the model's feature fusion in e2espk
(``e2espk.models.fusion``, ``--fusion``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from e2espk.scoring.calibration import fit_prior_weighted_logistic
from e2espk.scoring.metrics import ScoringInputError, check_trials, compute_eer

LOG = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_KIND = "logistic_score_fusion"
INPUTS = ("cosine", "learned")

# Inverse L2 strength on the standardised scores, per unit of total trial weight. Mild for a
# validation list of thousands of trials, but it keeps the weights finite on a separable list
# and pulls a useless score's weight towards 0 on a small one.
DEFAULT_C = 1.0


class LogisticFusion:
    """Fitted linear fusion of score types, ``fused = sum_k w_k * score_k + b``.

    Fitting: logistic regression on all the given trials, then a guard: if one input score
    alone has a lower EER on those trials than the combination, the fusion becomes that
    score alone (refitted as a 1-D calibration). So on the trials it was fitted on, ``fused``
    is never worse in EER than the better of its inputs. Only the ratio of the weights
    changes the ranking of trials (``b`` and the overall scale do not), so the fit has one
    effective degree of freedom and its in-sample optimism is small next to the sampling
    noise of a validation list; train.py therefore fits and reports on the same validation
    trials (the checkpoint's selection metric ``fused/*`` includes that small optimism).
    eval.py applies the stored fusion to test trials it was never fitted on.

    Args:
        inputs: names of the score types combined, in order.
        p_target: effective target prior of the weighted logistic fit.
        c: inverse L2 strength on the standardised scores.
    """

    def __init__(
        self, inputs: tuple[str, ...] = INPUTS, p_target: float = 0.5, c: float = DEFAULT_C
    ) -> None:
        self.inputs = tuple(inputs)
        self.p_target = float(p_target)
        self.c = float(c)
        self.weights: np.ndarray | None = None  # (K,) per unit of each raw score
        self.bias = 0.0
        self.selected = "logistic"  # or the name of the single input the guard kept

    def fit(self, scores: Mapping[str, npt.ArrayLike], labels: npt.ArrayLike) -> LogisticFusion:
        """Fit on labelled trials; ``scores`` maps each input name to its (N,) scores."""
        columns = [check_trials(scores[name], labels)[0] for name in self.inputs]
        _, y = check_trials(columns[0], labels)
        x = np.stack(columns, axis=1)
        w, b = fit_prior_weighted_logistic(x, y, self.p_target, self.c)
        self.weights, self.bias, self.selected = w, b, "logistic"
        best_single = min(range(len(columns)), key=lambda k: compute_eer(columns[k], y))
        if compute_eer(columns[best_single], y) < compute_eer(x @ w, y):
            w1, b1 = fit_prior_weighted_logistic(x[:, [best_single]], y, self.p_target, self.c)
            self.weights = np.zeros(len(columns))
            self.weights[best_single] = w1[0]
            self.bias, self.selected = b1, self.inputs[best_single]
        LOG.debug("score fusion: %s", self)
        return self

    def apply(self, scores: Mapping[str, npt.ArrayLike]) -> np.ndarray:
        """The fused score of each trial (float32), from the input score types by name."""
        if self.weights is None:
            raise RuntimeError("LogisticFusion.apply called before fit()")
        missing = [name for name in self.inputs if name not in scores]
        if missing:
            raise ScoringInputError(
                f"the score fusion of {', '.join(self.inputs)} lacks the score(s) {', '.join(missing)}"
            )
        fused = np.full(np.shape(scores[self.inputs[0]]), self.bias, dtype=np.float64)
        for name, weight in zip(self.inputs, self.weights.tolist(), strict=True):
            fused += weight * np.asarray(scores[name], dtype=np.float64)
        return fused.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for checkpoints and JSON)."""
        if self.weights is None:
            raise RuntimeError("LogisticFusion.to_dict called before fit()")
        return {
            "kind": _KIND,
            "version": SCHEMA_VERSION,
            "inputs": list(self.inputs),
            "weights": [float(w) for w in self.weights],
            "bias": float(self.bias),
            "selected": self.selected,
            "p_target": self.p_target,
            "c": self.c,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LogisticFusion:
        """Rebuild a fusion saved by :meth:`to_dict`.

        Raises:
            ScoringInputError: if the mapping is not a saved fusion of this version.
        """
        if data.get("kind") != _KIND or data.get("version") != SCHEMA_VERSION:
            raise ScoringInputError(
                f"unsupported score fusion {data.get('kind')!r}/{data.get('version')!r}, "
                f"this version of e2espk reads {_KIND!r}/{SCHEMA_VERSION}"
            )
        fusion = cls(tuple(data["inputs"]), float(data["p_target"]), float(data["c"]))
        weights = np.asarray(data["weights"], dtype=np.float64)
        if weights.shape != (len(fusion.inputs),) or not all(
            math.isfinite(v) for v in [*weights.tolist(), float(data["bias"])]
        ):
            raise ScoringInputError(f"score fusion weights/bias are not usable: {dict(data)}")
        fusion.weights, fusion.bias = weights, float(data["bias"])
        fusion.selected = str(data.get("selected", "logistic"))
        return fusion

    def __repr__(self) -> str:
        weights = None if self.weights is None else [round(float(w), 4) for w in self.weights]
        return f"LogisticFusion(inputs={self.inputs}, weights={weights}, bias={self.bias:.4g}, selected={self.selected!r})"
