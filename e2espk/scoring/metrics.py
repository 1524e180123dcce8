"""Speaker-verification metrics on trial scores, following the NIST SRE definitions.

Every function takes ``scores`` (N,) where higher means "more likely the same speaker" and
``labels`` (N,) with 1/True for target trials. A trial is accepted as a target when
``score >= threshold``; tied scores therefore always cross a threshold together, so the
metrics do not depend on the order of the trials.

Error rates are fractions in [0, 1] (an EER of 0.021 is 2.1 %). DCFs are *normalised*: divided
by the cost of the best trivial system (accept all or reject all), so 1.0 means "no better
than ignoring the scores". Cllr is in bits.

Everything here is pure numpy and does no I/O; reading trial lists and printing belong to the
CLI.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from e2espk.errors import E2eSpkError

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: The two target priors averaged by :func:`compute_c_primary` (NIST SRE 2016/2018).
C_PRIMARY_P_TARGETS = (0.01, 0.005)


class ScoringInputError(E2eSpkError, ValueError):
    """Scores, labels or metric parameters are unusable.

    A ``ValueError`` for callers that treat it as bad arguments, and an ``E2eSpkError`` so
    the CLIs report it as a user error without a traceback.
    """


@dataclass(frozen=True)
class EerResult:
    """The equal error rate and a threshold that realises it (approximately).

    Attributes:
        eer: EER as a fraction in [0, 1].
        threshold: accepting ``score >= threshold`` gives the operating point that ends the
            segment crossing p_miss == p_fa; always finite.
    """

    eer: float
    threshold: float


@dataclass(frozen=True)
class DcfResult:
    """The minimum normalised DCF and the operating point that attains it.

    Attributes:
        min_dcf: normalised minimum detection cost.
        threshold: accept ``score >= threshold`` to attain it; always finite (a threshold just
            above the highest score stands for "reject everything").
        p_miss: miss rate at that threshold.
        p_fa: false-alarm rate at that threshold.
    """

    min_dcf: float
    threshold: float
    p_miss: float
    p_fa: float


def check_trials(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[FloatArray, BoolArray]:
    """Validate a trial list and return it as (float64 scores, bool labels).

    Every metric needs at least one target and one non-target trial (the miss and false-alarm
    rates are fractions of each), and a NaN or infinite score would silently corrupt the sort
    they all rely on, so these are rejected up front with a message naming the problem.

    Raises:
        ScoringInputError: on a shape or length mismatch, labels other than 0/1, non-finite
            scores, or a list without targets or without non-targets.
    """
    s = np.asarray(scores)
    y = np.asarray(labels)
    if s.ndim != 1 or y.ndim != 1:
        raise ScoringInputError(
            f"scores and labels must be 1-D arrays, got shapes {s.shape} and {y.shape}"
        )
    if s.shape[0] != y.shape[0]:
        raise ScoringInputError(
            f"scores and labels differ in length: {s.shape[0]} scores, {y.shape[0]} labels"
        )
    if not (np.issubdtype(s.dtype, np.number) or s.dtype == np.bool_):
        raise ScoringInputError(f"scores must be numeric, got dtype {s.dtype}")
    s = s.astype(np.float64)
    bad = ~np.isfinite(s)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ScoringInputError(
            f"scores must be finite: {int(bad.sum())} NaN/inf value(s), "
            f"the first at index {first} ({s[first]})"
        )
    if y.dtype != np.bool_:
        if not np.issubdtype(y.dtype, np.number):
            raise ScoringInputError(f"labels must be 0/1 or bool, got dtype {y.dtype}")
        odd = (y != 0) & (y != 1)
        if odd.any():
            values = np.unique(y[odd])[:5].tolist()
            raise ScoringInputError(f"labels must be 0/1 or bool, found {values}")
    y = y.astype(np.bool_)
    n_tar = int(y.sum())
    if n_tar == 0 or n_tar == y.shape[0]:
        missing = "target" if n_tar == 0 else "non-target"
        raise ScoringInputError(
            f"need at least one target and one non-target trial, got no {missing} trials "
            f"among {y.shape[0]}"
        )
    return s, y


def _check_costs(p_target: float, c_miss: float, c_fa: float) -> None:
    if not 0.0 < p_target < 1.0:
        raise ScoringInputError(f"p_target must be in (0, 1), got {p_target}")
    if not (c_miss > 0.0 and c_fa > 0.0 and math.isfinite(c_miss) and math.isfinite(c_fa)):
        raise ScoringInputError(f"costs must be positive and finite, got {c_miss=}, {c_fa=}")


def error_rates(
    scores: npt.ArrayLike, labels: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Miss and false-alarm rates at every distinct threshold, in one sort.

    Candidate thresholds are the distinct scores in ascending order followed by +inf; the
    operating points thus run from (p_miss=0, p_fa=1) (accept all) to (p_miss=1, p_fa=0)
    (reject all). Tied scores form one group, so a tie moves all its trials at once and the
    result does not depend on trial order. O(N log N).

    Returns:
        thresholds (K+1,), p_miss (K+1,), p_fa (K+1,) for K distinct scores; p_miss is
        non-decreasing and p_fa non-increasing.
    """
    s, y = check_trials(scores, labels)
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    y_sorted = y[order]
    # last index of each group of equal scores
    ends = np.flatnonzero(np.append(s_sorted[1:] != s_sorted[:-1], True))
    tar_cum = np.cumsum(y_sorted)[ends]  # targets with score <= group score
    non_cum = (ends + 1) - tar_cum  # non-targets with score <= group score
    n_tar = tar_cum[-1]
    n_non = non_cum[-1]
    # at threshold = k-th distinct score, the trials below it are the groups before k
    tar_below = np.concatenate(([0], tar_cum))
    non_below = np.concatenate(([0], non_cum))
    thresholds = np.append(s_sorted[ends], np.inf)
    p_miss = tar_below / n_tar
    p_fa = (n_non - non_below) / n_non
    return thresholds, p_miss.astype(np.float64), p_fa.astype(np.float64)


def _eer_from_rates(p_miss: FloatArray, p_fa: FloatArray) -> tuple[float, int, float]:
    """EER, the index ending the crossing segment and the interpolation weight on it."""
    # p_miss[0] = 0 < p_fa[0] = 1 and p_miss[-1] = 1 > p_fa[-1] = 0, so k is in [1, K]
    k = int(np.argmax(p_miss >= p_fa))
    m0, f0, m1, f1 = p_miss[k - 1], p_fa[k - 1], p_miss[k], p_fa[k]
    # (m0, f0) lies above the diagonal and (m1, f1) on or below it: the segment
    # (m0, f0) + alpha * (m1 - m0, f1 - f0) meets m == f at alpha in (0, 1]
    alpha = (f0 - m0) / ((f0 - m0) + (m1 - f1))
    return float(m0 + alpha * (m1 - m0)), k, float(alpha)


def _finite_threshold(thresholds: FloatArray, k: int) -> float:
    """Threshold k, with the reject-all +inf replaced by the next float above the top score."""
    t = float(thresholds[k])
    return t if math.isfinite(t) else float(np.nextafter(thresholds[k - 1], np.inf))


def eer_result(scores: npt.ArrayLike, labels: npt.ArrayLike) -> EerResult:
    """EER with a threshold; see :func:`compute_eer` for the definition used."""
    thresholds, p_miss, p_fa = error_rates(scores, labels)
    eer, k, alpha = _eer_from_rates(p_miss, p_fa)
    lo, hi = float(thresholds[k - 1]), _finite_threshold(thresholds, k)
    # any threshold in (lo, hi] realises operating point k; interpolate like the EER itself
    t = max(lo + alpha * (hi - lo), float(np.nextafter(lo, np.inf)))
    return EerResult(eer=eer, threshold=min(t, hi))


def compute_eer(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Equal error rate as a fraction in [0, 1].

    The operating points of :func:`error_rates` are joined by straight segments and the EER is
    where the segment that crosses p_miss == p_fa meets that line. Without ties the segment is
    horizontal or vertical and the EER equals one of the empirical rates; with ties it is the
    point on the diagonal of the chord, so the value does not depend on how ties are broken
    (all-equal scores give exactly 0.5). This is not the ROC convex hull EER: perfectly
    inverted scores give 1.0, not 0.5.
    """
    return eer_result(scores, labels).eer


def _min_dcf_from_rates(
    p_miss: FloatArray, p_fa: FloatArray, p_target: float, c_miss: float, c_fa: float
) -> tuple[float, int]:
    _check_costs(p_target, c_miss, c_fa)
    w_miss = c_miss * p_target
    w_fa = c_fa * (1.0 - p_target)
    dcf = (w_miss * p_miss + w_fa * p_fa) / min(w_miss, w_fa)
    k = int(np.argmin(dcf))
    return float(dcf[k]), k


def min_dcf_result(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> DcfResult:
    """Minimum normalised DCF with the threshold and error rates that attain it.

    Used to mark the minDCF operating point on DET plots; see :func:`compute_min_dcf`.
    """
    thresholds, p_miss, p_fa = error_rates(scores, labels)
    value, k = _min_dcf_from_rates(p_miss, p_fa, p_target, c_miss, c_fa)
    return DcfResult(
        min_dcf=value,
        threshold=_finite_threshold(thresholds, k),
        p_miss=float(p_miss[k]),
        p_fa=float(p_fa[k]),
    )


def compute_min_dcf(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> float:
    """Minimum normalised detection cost over all thresholds (NIST SRE).

    DCF(t) = c_miss * p_target * P_miss(t) + c_fa * (1 - p_target) * P_fa(t), divided by
    min(c_miss * p_target, c_fa * (1 - p_target)), the cost of the better trivial system.
    "Minimum" means the threshold is chosen with hindsight on these very trials, so it
    measures discrimination only; :func:`compute_act_dcf` adds the cost of miscalibration.
    The result is in [0, 1].
    """
    return min_dcf_result(scores, labels, p_target, c_miss, c_fa).min_dcf


def compute_min_dcfs(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    p_targets: Iterable[float],
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> dict[float, float]:
    """Normalised minDCF for several target priors, keyed by prior, sorting the trials once."""
    _, p_miss, p_fa = error_rates(scores, labels)
    return {float(p): _min_dcf_from_rates(p_miss, p_fa, p, c_miss, c_fa)[0] for p in p_targets}


def compute_c_primary(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Mean of the normalised minDCFs at p_target 0.01 and 0.005 (c_miss = c_fa = 1).

    This is the NIST SRE 2016/2018 primary cost with minimum instead of actual DCFs, i.e. a
    calibration-independent variant; average :func:`compute_act_dcf` at the same priors for
    the official actual-cost version.
    """
    return float(np.mean(list(compute_min_dcfs(scores, labels, C_PRIMARY_P_TARGETS).values())))


def bayes_threshold(p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """LLR threshold of the Bayes decision: -logit(p_eff).

    p_eff = p_target * c_miss / (p_target * c_miss + (1 - p_target) * c_fa); computed as
    log(c_fa * (1 - p_target)) - log(c_miss * p_target), which is the same without the
    cancellation of forming p_eff at small priors.
    """
    _check_costs(p_target, c_miss, c_fa)
    return math.log(c_fa * (1.0 - p_target)) - math.log(c_miss * p_target)


def compute_act_dcf(
    llrs: npt.ArrayLike,
    labels: npt.ArrayLike,
    p_target: float,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> float:
    """Actual normalised DCF of Bayes decisions, treating the scores as calibrated LLRs.

    A trial is accepted when ``llr >= bayes_threshold(p_target, c_miss, c_fa)``; an LLR
    exactly at the threshold is accepted (both decisions have the same expected cost there).
    The gap to :func:`compute_min_dcf` at the same prior is the cost of miscalibration. Unlike
    minDCF it can exceed 1 for badly calibrated scores.
    """
    s, y = check_trials(llrs, labels)
    threshold = bayes_threshold(p_target, c_miss, c_fa)
    p_miss = float(np.mean(s[y] < threshold))
    p_fa = float(np.mean(s[~y] >= threshold))
    w_miss = c_miss * p_target
    w_fa = c_fa * (1.0 - p_target)
    return (w_miss * p_miss + w_fa * p_fa) / min(w_miss, w_fa)


def _cllr_bits(llr_tar: FloatArray, llr_non: FloatArray) -> float:
    # log(1 + exp(x)) == logaddexp(0, x): no overflow for large |x|
    c_tar = np.mean(np.logaddexp(0.0, -llr_tar))
    c_non = np.mean(np.logaddexp(0.0, llr_non))
    return float(0.5 * (c_tar + c_non) / math.log(2.0))


def compute_cllr(llrs: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Log-likelihood-ratio cost in bits (Brümmer & du Preez, 2006).

    Cllr = 0.5 * (mean over targets of log2(1 + exp(-llr)) + mean over non-targets of
    log2(1 + exp(llr))). It scores the LLRs as probabilistic statements over all priors at
    once: 0 is perfect, 1 bit is what LLR = 0 everywhere (no information) costs, and worse
    than 1 means the LLRs mislead.
    """
    s, y = check_trials(llrs, labels)
    return _cllr_bits(s[y], s[~y])


def compute_min_cllr(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Cllr after the optimal monotonic calibration (PAV), in bits.

    The pool-adjacent-violators fit is the monotone score-to-posterior map with the lowest
    Cllr on these trials, so min Cllr measures discrimination and ``cllr - min_cllr`` the loss
    to miscalibration. Tied scores share one posterior. At most 1 bit.
    """
    from sklearn.isotonic import IsotonicRegression

    s, y = check_trials(scores, labels)
    posterior = IsotonicRegression(increasing=True).fit_transform(s, y.astype(np.float64))
    posterior = np.clip(posterior, 0.0, 1.0)
    n_tar = int(y.sum())
    n_non = y.shape[0] - n_tar
    with np.errstate(divide="ignore"):
        # logit(posterior) minus the log prior odds of the trial list: +/-inf where PAV is
        # certain, and those trials cost exactly 0 bits in _cllr_bits
        llr = np.log(posterior) - np.log1p(-posterior) - math.log(n_tar / n_non)
    return _cllr_bits(llr[y], llr[~y])


def det_curve(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """DET curve points (p_miss, p_fa), thinned for plotting.

    Same operating points as :func:`error_rates`, minus those strictly inside a run where only
    p_miss or only p_fa changes: a probit axis maps such a run to a straight line, so dropping
    them changes nothing on the plot and shrinks a million-trial curve to about
    2 * min(n_target, n_non-target) points.
    """
    _, p_miss, p_fa = error_rates(scores, labels)
    keep = np.ones(p_miss.shape[0], dtype=np.bool_)
    same_fa = (p_fa[:-2] == p_fa[1:-1]) & (p_fa[1:-1] == p_fa[2:])
    same_miss = (p_miss[:-2] == p_miss[1:-1]) & (p_miss[1:-1] == p_miss[2:])
    keep[1:-1] = ~(same_fa | same_miss)
    return p_miss[keep], p_fa[keep]


def _p_key(p: float) -> str:
    return f"{p:g}"


def summarize(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    p_targets: Iterable[float] = (0.01, 0.05),
    c_primary: bool = False,
    llr: bool = False,
) -> dict[str, float]:
    """The metrics reported by validation and evaluation, sorting the trials once.

    Keys: ``"eer"`` (a fraction in [0, 1], not a percentage), ``"min_dcf@<p>"`` for each p in
    ``p_targets`` (e.g. ``"min_dcf@0.01"``; c_miss = c_fa = 1), ``"c_primary"`` when
    ``c_primary`` is set, and when ``llr`` is set (the scores are calibrated LLRs)
    ``"act_dcf@<p>"`` per prior, ``"cllr"`` and ``"min_cllr"`` (bits).
    """
    s, y = check_trials(scores, labels)
    priors = [float(p) for p in p_targets]
    _, p_miss, p_fa = error_rates(s, y)
    out: dict[str, float] = {"eer": _eer_from_rates(p_miss, p_fa)[0]}
    for p in priors:
        out[f"min_dcf@{_p_key(p)}"] = _min_dcf_from_rates(p_miss, p_fa, p, 1.0, 1.0)[0]
    if c_primary:
        costs = [_min_dcf_from_rates(p_miss, p_fa, p, 1.0, 1.0)[0] for p in C_PRIMARY_P_TARGETS]
        out["c_primary"] = float(np.mean(costs))
    if llr:
        for p in priors:
            out[f"act_dcf@{_p_key(p)}"] = compute_act_dcf(s, y, p)
        out["cllr"] = _cllr_bits(s[y], s[~y])
        out["min_cllr"] = compute_min_cllr(s, y)
    return out
