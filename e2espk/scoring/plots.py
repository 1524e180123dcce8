"""DET curves and score histograms written as image files.

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas, never through
``pyplot``, so plotting from training or evaluation leaks no global figure state and needs no
display. Files are written atomically (temp file in the same directory, then ``os.replace``)
so a crash never leaves a half-written image where a report expects one; they get the mode
of any new file under the umask (0644 under 022), as the other outputs do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.stats import norm

from e2espk.fileio import atomic_path
from e2espk.scoring.metrics import (
    FloatArray,
    ScoringInputError,
    check_trials,
    compute_eer,
    det_curve,
    min_dcf_result,
)

#: Tick positions (as probabilities) for the probit axes; those inside the limits are shown.
DET_TICKS = (
    0.0001,
    0.0002,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.4,
    0.6,
    0.8,
    0.9,
    0.95,
    0.99,
)
# probabilities are clipped into [_EPS, 1 - _EPS] before the probit, which maps 0 and 1 to
# -inf/+inf; a curve's end points then run off the axes instead of vanishing
_EPS = 1e-9

TrialSet = tuple[npt.ArrayLike, npt.ArrayLike]  # (scores (N,), labels (N,))


@dataclass(frozen=True)
class DetCurve:
    """A precomputed DET curve for :func:`plot_det`.

    Attributes:
        p_miss: miss rates (K,), as fractions.
        p_fa: false-alarm rates (K,), as fractions.
        eer: equal error rate, a fraction, shown in the legend.
        min_dcf_point: (p_miss, p_fa) of the minDCF operating point to mark, or None.
        min_dcf: the minDCF value for the legend, or None.
        p_target: the prior of that minDCF, for the legend, or None.
    """

    p_miss: FloatArray
    p_fa: FloatArray
    eer: float
    min_dcf_point: tuple[float, float] | None = None
    min_dcf: float | None = None
    p_target: float | None = None

    @classmethod
    def from_scores(
        cls, scores: npt.ArrayLike, labels: npt.ArrayLike, p_target: float = 0.01
    ) -> DetCurve:
        """Compute the curve, EER and minDCF point at ``p_target`` from a trial list."""
        s, y = check_trials(scores, labels)
        p_miss, p_fa = det_curve(s, y)
        dcf = min_dcf_result(s, y, p_target)
        point = (dcf.p_miss, dcf.p_fa)
        return cls(p_miss, p_fa, compute_eer(s, y), point, dcf.min_dcf, p_target)


def _probit(p: npt.ArrayLike) -> FloatArray:
    return np.asarray(norm.ppf(np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)))


def _auto_limits(curves: list[DetCurve]) -> tuple[float, float]:
    """Default DET range, 0.1 % to 50 %, widened to show good systems and minDCF markers."""
    # a marker at p = 0 or 1 (a trivial accept-all/reject-all point) cannot be shown anyway
    marked = [p for c in curves if c.min_dcf_point for p in c.min_dcf_point if 0 < p < 0.95]
    low = min([0.001, *(p / 1.2 for p in marked)])  # a little room around the markers
    if min(c.eer for c in curves) < 0.005:
        low = min(low, 0.0001)
    lo = max([t for t in DET_TICKS if t <= low], default=DET_TICKS[0])
    top = 1.1 * max(marked, default=0.0)
    hi = 0.5 if top <= 0.5 else next(t for t in DET_TICKS if t >= min(top, 0.99))
    return lo, hi


def _pick_ticks(lo: float, hi: float) -> list[float]:
    """DET ticks inside [lo, hi], dropping those that would crowd a wide range."""
    inside = [t for t in DET_TICKS if lo <= t <= hi]
    gap = 0.05 * float(np.diff(_probit([lo, hi]))[0])
    # decades and the widely spaced upper ticks first, then the rest where there is room
    kept = [t for t in inside if t >= 0.2 or np.isclose(np.log10(t), np.round(np.log10(t)))]
    for t in inside:
        if t not in kept and np.all(np.abs(_probit(kept) - _probit(t)) >= gap):
            kept.append(t)
    return sorted(kept)


def _save_atomic(fig: Figure, path: str | os.PathLike[str], dpi: int) -> Path:
    """Render ``fig`` to ``path`` atomically, with the mode any new file gets (the umask's)."""
    out = Path(path)
    fmt = out.suffix.lstrip(".").lower() or "png"
    with atomic_path(out) as tmp, tmp.open("wb") as handle:
        fig.savefig(handle, format=fmt, dpi=dpi)
    return out


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas: Agg, independent of pyplot
    return fig


def _det_label(name: str, curve: DetCurve) -> str:
    parts = [f"EER {100 * curve.eer:.2f}%"]
    if curve.min_dcf is not None:
        prior = f"@{curve.p_target:g}" if curve.p_target is not None else ""
        parts.append(f"minDCF{prior} {curve.min_dcf:.3f}")
    return f"{name} ({', '.join(parts)})"


def _format_det_axes(ax: Axes, lo: float, hi: float) -> None:
    """EER diagonal, probit ticks labelled in %, limits, labels, grid and legend."""
    span = _probit([lo, hi])
    ax.plot(span, span, "--", color="0.5", lw=0.8, label="p_miss = p_fa (EER)")
    ticks = _pick_ticks(lo, hi)
    tick_labels = [f"{100 * t:g}" for t in ticks]
    ax.set_xticks(_probit(ticks), tick_labels)
    ax.set_yticks(_probit(ticks), tick_labels)
    ax.set_xlim(*span)
    ax.set_ylim(*span)
    ax.set_xlabel("False-alarm rate (%)")
    ax.set_ylabel("Miss rate (%)")
    ax.grid(True, color="0.85", lw=0.6)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize="small")


def plot_det(
    curves: Mapping[str, TrialSet | DetCurve],
    path: str | os.PathLike[str],
    p_target: float = 0.01,
    limits: tuple[float, float] | None = None,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Write a DET plot (miss vs false-alarm rate on normal-deviate axes).

    The probit axes turn Gaussian-like score distributions into near-straight lines, so
    systems can be compared over the whole low-error range, unlike on a ROC plot. Each curve
    gets its EER and minDCF in the legend and a marker at its minDCF operating point; the
    dashed diagonal is p_miss == p_fa, where each curve crosses at its EER.

    Args:
        curves: label -> ``(scores, labels)`` trial set, or a precomputed :class:`DetCurve`.
        path: output image; the format follows the suffix (PNG when there is none).
        p_target: prior of the minDCF marked on the curves computed from trial sets.
        limits: axis range as probabilities, on both axes; by default 0.1 % to 50 %, widened
            to 0.01 % for an EER under 0.5 % and upwards to show every minDCF marker.
        title: optional figure title.
        dpi: resolution; the image is 6 x 6 inches.

    Returns:
        The path written.

    Raises:
        ScoringInputError: for no curves, bad limits, or an invalid trial set.
    """
    if not curves:
        raise ScoringInputError("plot_det needs at least one curve, got none")
    prepared = {
        name: c if isinstance(c, DetCurve) else DetCurve.from_scores(*c, p_target=p_target)
        for name, c in curves.items()
    }
    lo, hi = limits if limits is not None else _auto_limits(list(prepared.values()))
    if not 0.0 < lo < hi < 1.0:
        raise ScoringInputError(f"DET limits must satisfy 0 < low < high < 1, got {limits}")
    fig = _new_figure(6.0, 6.0)
    ax = fig.add_subplot(1, 1, 1)
    for name, curve in prepared.items():
        label = _det_label(name, curve)
        (line,) = ax.plot(_probit(curve.p_fa), _probit(curve.p_miss), lw=1.5, label=label)
        if curve.min_dcf_point is not None:
            m, f = curve.min_dcf_point
            ax.plot(_probit(f), _probit(m), "o", color=line.get_color(), ms=7, mec="black")
    if any(c.min_dcf_point is not None for c in prepared.values()):
        # one legend entry for all markers; their colour says which curve they belong to
        ax.plot([], [], "o", color="0.8", mec="black", ms=7, label="minDCF operating point")
    _format_det_axes(ax, lo, hi)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save_atomic(fig, path, dpi)


def plot_score_histograms(
    score_sets: Mapping[str, TrialSet],
    path: str | os.PathLike[str],
    bins: int = 60,
    dpi: int = 100,
) -> Path:
    """Write target vs non-target score histograms, one subplot per score type.

    Densities rather than counts, because non-targets usually outnumber targets by orders
    of magnitude; the overlap of the two shapes is what the error rates measure, and their
    placement shows whether a score is calibrated (LLRs: targets > 0 > non-targets).

    Args:
        score_sets: label -> ``(scores, labels)`` trial set.
        path: output image; the format follows the suffix (PNG when there is none).
        bins: bins per subplot, shared by both classes.
        dpi: resolution; each subplot is 4 x 3 inches.

    Returns:
        The path written.

    Raises:
        ScoringInputError: for no score sets, ``bins < 1``, or an invalid trial set.
    """
    if not score_sets:
        raise ScoringInputError("plot_score_histograms needs at least one score set, got none")
    if bins < 1:
        raise ScoringInputError(f"bins must be >= 1, got {bins}")
    checked = {name: check_trials(*trials) for name, trials in score_sets.items()}
    n = len(checked)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = _new_figure(4.0 * cols, 3.0 * rows)
    for i, (name, (s, y)) in enumerate(checked.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        edges = np.histogram_bin_edges(s, bins=bins).tolist()
        ax.hist(s[~y], bins=edges, density=True, alpha=0.55, color="tab:red", label="non-target")
        ax.hist(s[y], bins=edges, density=True, alpha=0.55, color="tab:blue", label="target")
        ax.set_title(f"{name} (EER {100 * compute_eer(s, y):.2f}%)", fontsize="medium")
        ax.set_xlabel("score")
        ax.set_ylabel("density")
        ax.legend(fontsize="small")
    fig.tight_layout()
    return _save_atomic(fig, path, dpi)
