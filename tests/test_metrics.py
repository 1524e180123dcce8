"""Scoring metrics: hand-worked cases, brute-force cross-checks and input validation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from e2espk.errors import E2eSpkError
from e2espk.scoring.metrics import (
    ScoringInputError,
    bayes_threshold,
    compute_act_dcf,
    compute_c_primary,
    compute_cllr,
    compute_eer,
    compute_min_cllr,
    compute_min_dcf,
    compute_min_dcfs,
    det_curve,
    eer_result,
    error_rates,
    min_dcf_result,
    summarize,
)

P_TARGETS = (0.5, 0.05, 0.01, 0.001)


# ---------------------------------------------------------------------------------------------
# Independent brute-force reference: plain Python loops, no sorting tricks.


def brute_points(scores, labels):
    """(threshold, p_miss, p_fa) for -inf, every unique score and +inf; accept score >= t."""
    scores = [float(s) for s in scores]
    labels = [bool(x) for x in labels]
    n_tar = sum(labels)
    n_non = len(labels) - n_tar
    points = []
    for t in [-math.inf, *sorted(set(scores)), math.inf]:
        misses = sum(1 for s, y in zip(scores, labels, strict=True) if y and s < t)
        fas = sum(1 for s, y in zip(scores, labels, strict=True) if not y and s >= t)
        points.append((t, misses / n_tar, fas / n_non))
    return points


def brute_min_dcf(scores, labels, p_target, c_miss=1.0, c_fa=1.0):
    best = math.inf
    for _, m, f in brute_points(scores, labels):
        best = min(best, c_miss * p_target * m + c_fa * (1 - p_target) * f)
    return best / min(c_miss * p_target, c_fa * (1 - p_target))


def brute_eer(scores, labels):
    """Scan for the first point on or below the diagonal; intersect its segment with m == f."""
    points = brute_points(scores, labels)
    for (_, m0, f0), (_, m1, f1) in itertools.pairwise(points):
        if m0 < f0 and m1 >= f1:
            # line through (f0, m0), (f1, m1) in (x=p_fa, y=p_miss) meets y = x: solve with the
            # determinant form of the line-line intersection
            d = (f0 - f1) * (0 - 1) - (m0 - m1) * (0 - 1)
            a = f0 * m1 - m0 * f1
            return a * (0 - 1) / d
    raise AssertionError("no crossing found")


def brute_act_dcf(llrs, labels, p_target, c_miss=1.0, c_fa=1.0):
    p_eff = p_target * c_miss / (p_target * c_miss + (1 - p_target) * c_fa)
    threshold = -math.log(p_eff / (1 - p_eff))
    tar = [s for s, y in zip(llrs, labels, strict=True) if y]
    non = [s for s, y in zip(llrs, labels, strict=True) if not y]
    p_miss = sum(1 for s in tar if s < threshold) / len(tar)
    p_fa = sum(1 for s in non if s >= threshold) / len(non)
    dcf = c_miss * p_target * p_miss + c_fa * (1 - p_target) * p_fa
    return dcf / min(c_miss * p_target, c_fa * (1 - p_target))


def brute_cllr(llrs, labels):
    tar = [math.log2(1 + math.exp(-s)) for s, y in zip(llrs, labels, strict=True) if y]
    non = [math.log2(1 + math.exp(s)) for s, y in zip(llrs, labels, strict=True) if not y]
    return 0.5 * (sum(tar) / len(tar) + sum(non) / len(non))


def random_trials(rng, ties):
    n = int(rng.integers(2, 120))
    labels = rng.random(n) < rng.uniform(0.1, 0.9)
    labels[0], labels[1] = True, False  # at least one of each
    rng.shuffle(labels)
    scores = rng.normal(size=n) + rng.uniform(-1.0, 3.0) * labels
    if ties:
        scores = np.round(scores, 1)
    return scores, labels


# ---------------------------------------------------------------------------------------------
# Hand-worked cases.


def test_hand_case_with_ties():
    # targets 0.9, 0.5, 0.3; non-targets 0.5, 0.5, 0.2, 0.1 (n_tar = 3, n_non = 4)
    # accept score >= t:
    #   t=0.1: miss 0/3, fa 4/4 -> (0,   1)
    #   t=0.2: miss 0/3, fa 3/4 -> (0,   3/4)
    #   t=0.3: miss 0/3, fa 2/4 -> (0,   1/2)
    #   t=0.5: miss 1/3, fa 2/4 -> (1/3, 1/2)   the tie {T, N, N} at 0.5 moves at once
    #   t=0.9: miss 2/3, fa 0/4 -> (2/3, 0)
    #   t=inf: miss 3/3, fa 0/4 -> (1,   0)
    scores = [0.9, 0.5, 0.3, 0.5, 0.5, 0.2, 0.1]
    labels = [1, 1, 1, 0, 0, 0, 0]
    thresholds, p_miss, p_fa = error_rates(scores, labels)
    np.testing.assert_allclose(thresholds, [0.1, 0.2, 0.3, 0.5, 0.9, np.inf])
    np.testing.assert_allclose(p_miss, [0, 0, 0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(p_fa, [1, 3 / 4, 1 / 2, 1 / 2, 0, 0])
    # EER: first point with m >= f is (2/3, 0); previous (1/3, 1/2).
    #   alpha = (f0 - m0) / ((f0 - m0) + (m1 - f1)) = (1/6) / (1/6 + 2/3) = 1/5
    #   EER = 1/3 + 1/5 * (2/3 - 1/3) = 2/5  (and p_fa = 1/2 - 1/5 * 1/2 = 2/5, consistent)
    assert compute_eer(scores, labels) == pytest.approx(0.4)
    # minDCF, p_target 0.5: normaliser 0.5, DCF_norm = m + f -> 1, 3/4, 1/2, 5/6, 2/3, 1
    assert compute_min_dcf(scores, labels, p_target=0.5) == pytest.approx(0.5)
    # p_target 0.01: normaliser 0.01, DCF_norm = m + 99 f -> 99, 74.25, 49.5, 49.83, 2/3, 1
    assert compute_min_dcf(scores, labels, p_target=0.01) == pytest.approx(2 / 3)
    result = min_dcf_result(scores, labels, p_target=0.01)
    assert (result.threshold, result.p_miss, result.p_fa) == (0.9, pytest.approx(2 / 3), 0.0)


def test_hand_case_without_ties():
    # targets 0.8, 0.5; non-targets 0.6, 0.1, 0.0 (n_tar = 2, n_non = 3)
    #   t=0.0: (0, 1); t=0.1: (0, 2/3); t=0.5: (0, 1/3); t=0.6: (1/2, 1/3);
    #   t=0.8: (1/2, 0); t=inf: (1, 0)
    # EER: crossing segment (0, 1/3) -> (1/2, 1/3) is horizontal in p_fa, so EER = 1/3
    #   (alpha = (1/3) / (1/3 + 1/6) = 2/3, EER = 2/3 * 1/2 = 1/3).
    scores = [0.8, 0.5, 0.6, 0.1, 0.0]
    labels = [True, True, False, False, False]
    assert compute_eer(scores, labels) == pytest.approx(1 / 3)
    # p_target 0.5: m + f -> 1, 2/3, 1/3, 5/6, 1/2, 1 -> 1/3
    assert compute_min_dcf(scores, labels, p_target=0.5) == pytest.approx(1 / 3)
    # p_target 0.01: m + 99 f -> 99, 66, 33, 33.5, 1/2, 1 -> 1/2
    assert compute_min_dcf(scores, labels, p_target=0.01) == pytest.approx(0.5)
    # c_miss = 10, p_target 0.01: normaliser min(0.1, 0.99) = 0.1,
    #   DCF_norm = (0.1 m + 0.99 f) / 0.1 = m + 9.9 f -> 9.9, 6.6, 3.3, 3.8, 1/2, 1 -> 1/2
    assert compute_min_dcf(scores, labels, 0.01, c_miss=10.0) == pytest.approx(0.5)


def test_perfect_separation():
    scores = [3.0, 2.0, 2.5, -1.0, 0.0, 1.0, 0.5]
    labels = [1, 1, 1, 0, 0, 0, 0]
    assert compute_eer(scores, labels) == 0.0
    for p in P_TARGETS:
        assert compute_min_dcf(scores, labels, p) == 0.0
    # the EER threshold separates the classes
    t = eer_result(scores, labels).threshold
    assert 1.0 < t <= 2.0


def test_perfectly_inverted_scores():
    # all targets below all non-targets: every threshold has p_miss = 1 or p_fa = 1 and the
    # curve passes through (1, 1), which lies on the diagonal, so the EER is 1.0 (not the
    # 0.5 of the ROC convex hull, which would flip the decisions)
    scores = [0.0, 1.0, 2.0, 3.0, 4.0]
    labels = [1, 1, 0, 0, 0]
    assert compute_eer(scores, labels) == 1.0
    # the best any threshold can do is a trivial system: normalised minDCF 1
    for p in P_TARGETS:
        assert compute_min_dcf(scores, labels, p) == pytest.approx(1.0)


def test_all_scores_equal():
    # one group: points (0, 1) and (1, 0); the chord crosses the diagonal at 0.5
    labels = [1, 0, 0, 1, 0, 0, 0]
    scores = [0.3] * len(labels)
    assert compute_eer(scores, labels) == 0.5
    for p in P_TARGETS:
        assert compute_min_dcf(scores, labels, p) == pytest.approx(1.0)


def test_identical_distributions_give_half():
    rng = np.random.default_rng(0)
    labels = rng.random(40_000) < 0.5
    scores = rng.normal(size=labels.size)
    assert compute_eer(scores, labels) == pytest.approx(0.5, abs=0.02)
    assert 0.9 < compute_min_dcf(scores, labels, 0.01) <= 1.0


def test_eer_does_not_depend_on_trial_order():
    rng = np.random.default_rng(1)
    scores, labels = random_trials(rng, ties=True)
    perm = rng.permutation(len(scores))
    assert compute_eer(scores[perm], labels[perm]) == compute_eer(scores, labels)


def test_gaussian_eer_matches_theory():
    # targets N(d, 1), non-targets N(0, 1): EER = Phi(-d / 2)
    rng = np.random.default_rng(2)
    d = 2.0
    scores = np.concatenate([rng.normal(d, 1, 50_000), rng.normal(0, 1, 50_000)])
    labels = np.repeat([True, False], 50_000)
    assert compute_eer(scores, labels) == pytest.approx(0.1587, abs=0.005)


# ---------------------------------------------------------------------------------------------
# Against the brute-force reference.


@pytest.mark.parametrize("ties", [False, True])
def test_error_rates_match_brute_force(ties):
    rng = np.random.default_rng(10 + ties)
    for _ in range(40):
        scores, labels = random_trials(rng, ties)
        thresholds, p_miss, p_fa = error_rates(scores, labels)
        ref = brute_points(scores, labels)[1:]  # drop -inf, same point as the lowest score
        np.testing.assert_allclose(thresholds, [t for t, _, _ in ref])
        np.testing.assert_allclose(p_miss, [m for _, m, _ in ref])
        np.testing.assert_allclose(p_fa, [f for _, _, f in ref])


@pytest.mark.parametrize("ties", [False, True])
def test_eer_and_min_dcf_match_brute_force(ties):
    rng = np.random.default_rng(20 + ties)
    for _ in range(60):
        scores, labels = random_trials(rng, ties)
        np.testing.assert_allclose(compute_eer(scores, labels), brute_eer(scores, labels))
        got = compute_min_dcfs(scores, labels, P_TARGETS)
        for p in P_TARGETS:
            want = brute_min_dcf(scores, labels, p)
            np.testing.assert_allclose(got[p], want, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(compute_min_dcf(scores, labels, p), want, rtol=1e-12)
        np.testing.assert_allclose(
            compute_min_dcf(scores, labels, 0.05, c_miss=3.0, c_fa=0.5),
            brute_min_dcf(scores, labels, 0.05, c_miss=3.0, c_fa=0.5),
        )


def test_thresholds_realise_their_operating_points():
    rng = np.random.default_rng(30)
    for ties in (False, True):
        for _ in range(30):
            scores, labels = random_trials(rng, ties)
            res = min_dcf_result(scores, labels, 0.01)
            accept = scores >= res.threshold
            assert np.isfinite(res.threshold)
            assert np.mean(~accept[labels]) == pytest.approx(res.p_miss)
            assert np.mean(accept[~labels]) == pytest.approx(res.p_fa)
            # the EER threshold gives the point just past the crossing: p_miss >= p_fa
            t = eer_result(scores, labels).threshold
            accept = scores >= t
            assert np.mean(~accept[labels]) >= np.mean(accept[~labels])


def test_c_primary_is_mean_of_two_min_dcfs():
    rng = np.random.default_rng(40)
    scores, labels = random_trials(rng, ties=False)
    want = 0.5 * (brute_min_dcf(scores, labels, 0.01) + brute_min_dcf(scores, labels, 0.005))
    np.testing.assert_allclose(compute_c_primary(scores, labels), want)


def test_det_curve_drops_only_collinear_points():
    rng = np.random.default_rng(50)
    scores, labels = random_trials(rng, ties=False)
    _, p_miss, p_fa = error_rates(scores, labels)
    d_miss, d_fa = det_curve(scores, labels)
    assert len(d_miss) < len(p_miss)
    assert (d_miss[0], d_fa[0], d_miss[-1], d_fa[-1]) == (0.0, 1.0, 1.0, 0.0)
    kept = set(zip(d_miss.tolist(), d_fa.tolist(), strict=True))
    assert kept <= set(zip(p_miss.tolist(), p_fa.tolist(), strict=True))
    # every full-curve point lies on an axis-parallel segment between kept neighbours
    for m, f in zip(p_miss, p_fa, strict=True):
        same_fa = np.any((d_fa == f) & (d_miss <= m)) and np.any((d_fa == f) & (d_miss >= m))
        same_miss = np.any((d_miss == m) & (d_fa >= f)) and np.any((d_miss == m) & (d_fa <= f))
        assert (m, f) in kept or same_fa or same_miss, (m, f)


# ---------------------------------------------------------------------------------------------
# actDCF and Cllr.


def test_act_dcf_hand_case():
    # p_target 0.5 -> threshold 0. Targets 2, -1, 0.5: one miss (p_miss 1/3);
    # non-targets -2, 0.3, 0.0: 0.3 and the tie at 0.0 are accepted (p_fa 2/3).
    # DCF_norm = (0.5 * 1/3 + 0.5 * 2/3) / 0.5 = 1
    llrs = [2.0, -1.0, 0.5, -2.0, 0.3, 0.0]
    labels = [1, 1, 1, 0, 0, 0]
    assert compute_act_dcf(llrs, labels, 0.5) == pytest.approx(1.0)
    # p_target 0.01 -> threshold log(99) = 4.6: all rejected, p_miss 1, DCF_norm = 1
    assert compute_act_dcf(llrs, labels, 0.01) == pytest.approx(1.0)
    # p_target 0.9 -> threshold -log(9) = -2.2: all accepted, p_fa 1,
    # DCF_norm = 0.1 * 1 / min(0.9, 0.1) = 1
    assert compute_act_dcf(llrs, labels, 0.9) == pytest.approx(1.0)
    # shifting by +1: targets 3, 0, 1.5 all accepted (0 ties at threshold), non-targets
    # -1, 1.3, 1.0 -> 2 false alarms: (0.5 * 0 + 0.5 * 2/3) / 0.5 = 2/3
    assert compute_act_dcf(np.add(llrs, 1.0), labels, 0.5) == pytest.approx(2 / 3)


def test_bayes_threshold():
    assert bayes_threshold(0.5) == 0.0
    assert bayes_threshold(0.01) == pytest.approx(math.log(99))
    # costs act through the effective prior: p_target 0.01 with c_miss 99 is p_eff 0.5
    assert bayes_threshold(0.01, c_miss=99.0) == pytest.approx(0.0, abs=1e-12)


def test_act_dcf_matches_brute_force_and_min_dcf_for_calibrated_llrs():
    rng = np.random.default_rng(60)
    for _ in range(30):
        scores, labels = random_trials(rng, ties=True)
        for p in P_TARGETS:
            np.testing.assert_allclose(
                compute_act_dcf(scores, labels, p), brute_act_dcf(scores, labels, p)
            )
    # calibrated Gaussian LLRs: targets N(mu, 2 mu), non-targets N(-mu, 2 mu) are their own
    # LLRs, so Bayes decisions are (nearly) the best threshold: actDCF ~ minDCF
    mu = 4.0
    n = 100_000
    llrs = np.concatenate(
        [rng.normal(mu, math.sqrt(2 * mu), n), rng.normal(-mu, math.sqrt(2 * mu), n)]
    )
    labels = np.repeat([True, False], n)
    for p in (0.5, 0.1, 0.01):
        act = compute_act_dcf(llrs, labels, p)
        assert act == pytest.approx(compute_min_dcf(llrs, labels, p), abs=0.03)
        # miscalibrating by a shift costs a lot
        assert compute_act_dcf(llrs + 3.0, labels, p) > act + 0.1


def test_cllr_hand_cases():
    # all-zero LLRs carry no information: exactly 1 bit
    assert compute_cllr(np.zeros(5), [1, 0, 1, 0, 0]) == 1.0
    # target llr 0 -> log2(2) = 1; non-target llr log 3 -> log2(1 + 3) = 2; mean 1.5
    assert compute_cllr([0.0, math.log(3)], [1, 0]) == pytest.approx(1.5)
    # confident and right: ~0; confident and wrong: large, but finite (no overflow)
    assert compute_cllr([50.0, -50.0], [1, 0]) < 1e-20
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        wrong = compute_cllr([-1000.0, 1000.0], [1, 0])
    assert wrong == pytest.approx(1000 / math.log(2))


def test_cllr_decreases_with_separation_and_matches_brute_force():
    rng = np.random.default_rng(70)
    labels = rng.random(2000) < 0.3
    base = rng.normal(size=labels.size)
    cllrs = [compute_cllr(base + (2 * labels - 1) * d, labels) for d in (0.5, 1.0, 2.0, 4.0)]
    assert all(a > b for a, b in itertools.pairwise(cllrs))
    for _ in range(20):
        scores, labels = random_trials(rng, ties=False)
        np.testing.assert_allclose(compute_cllr(scores, labels), brute_cllr(scores, labels))


def brute_pav_llr(scores, labels):
    """Posterior by pool-adjacent-violators over tied-score groups, converted to LLRs."""
    groups = {}
    for s, y in zip(scores, labels, strict=True):
        groups.setdefault(float(s), []).append(bool(y))
    blocks = [[sum(v), len(v), [k]] for k, v in sorted(groups.items())]  # [tar, n, keys]
    i = 0
    while i < len(blocks) - 1:
        if blocks[i][0] / blocks[i][1] > blocks[i + 1][0] / blocks[i + 1][1]:
            a, b = blocks[i], blocks.pop(i + 1)
            blocks[i] = [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
            i = max(i - 1, 0)
        else:
            i += 1
    posterior = {k: t / n for t, n, keys in blocks for k in keys}
    n_tar = sum(bool(y) for y in labels)
    prior_log_odds = math.log(n_tar / (len(labels) - n_tar))
    out = []
    for s in scores:
        p = posterior[float(s)]
        out.append(math.inf if p == 1 else -math.inf if p == 0 else math.log(p / (1 - p)))
    return [x - prior_log_odds for x in out]


def test_min_cllr():
    assert compute_min_cllr([0.1, 0.5, 0.9], [0, 1, 1]) == 0.0  # separable
    assert compute_min_cllr([0.3] * 4, [1, 0, 0, 1]) == pytest.approx(1.0)  # no information
    rng = np.random.default_rng(80)
    for ties in (False, True):
        for _ in range(15):
            scores, labels = random_trials(rng, ties)
            pav = brute_pav_llr(scores, labels)
            # LLRs of +/-inf on the right side cost 0 bits (PAV never puts them on the wrong one)
            finite = [max(min(x, 800.0), -800.0) for x in pav]
            want = brute_cllr(finite, labels)
            got = compute_min_cllr(scores, labels)
            np.testing.assert_allclose(got, want, atol=1e-9)
            assert got <= 1.0 + 1e-9
            # an affine map is one of the monotone maps PAV optimises over
            assert got <= compute_cllr(0.7 * scores - 0.2, labels) + 1e-9


# ---------------------------------------------------------------------------------------------
# summarize and input validation.


def test_summarize_keys_and_values():
    rng = np.random.default_rng(90)
    scores, labels = random_trials(rng, ties=True)
    out = summarize(scores, labels)
    assert list(out) == ["eer", "min_dcf@0.01", "min_dcf@0.05"]
    assert out["eer"] == compute_eer(scores, labels)
    assert out["min_dcf@0.05"] == compute_min_dcf(scores, labels, 0.05)
    full = summarize(scores, labels, p_targets=(0.001,), c_primary=True, llr=True)
    assert set(full) == {"eer", "min_dcf@0.001", "c_primary", "act_dcf@0.001", "cllr", "min_cllr"}
    assert full["c_primary"] == pytest.approx(compute_c_primary(scores, labels))
    assert full["act_dcf@0.001"] == compute_act_dcf(scores, labels, 0.001)
    assert full["cllr"] == pytest.approx(compute_cllr(scores, labels))
    assert all(isinstance(v, float) for v in full.values())


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, 0.2], [1, 0, 1], "differ in length"),
        ([0.1, 0.2, 0.3], [0, 0, 0], "no target trials"),
        ([0.1, 0.2, 0.3], [True, True, True], "no non-target trials"),
        ([], [], "no target trials"),
        ([0.1, float("nan"), 0.3], [1, 0, 1], "finite.*index 1"),
        ([0.1, float("inf")], [1, 0], "finite"),
        ([[0.1, 0.2]], [[1, 0]], "1-D"),
        ([0.1, 0.2], [1, 2], "0/1"),
        (["a", "b"], [1, 0], "numeric"),
    ],
)
def test_invalid_trials_raise(scores, labels, message):
    for fn in (compute_eer, compute_min_dcf, compute_cllr, summarize, error_rates):
        with pytest.raises(ValueError, match=message):
            fn(scores, labels)
    with pytest.raises(E2eSpkError):
        compute_eer(scores, labels)


@pytest.mark.parametrize("p_target", [0.0, 1.0, -0.1, 1.5])
def test_invalid_prior_raises(p_target):
    with pytest.raises(ScoringInputError, match="p_target"):
        compute_min_dcf([0.1, 0.9], [0, 1], p_target=p_target)
    with pytest.raises(ScoringInputError, match="p_target"):
        compute_act_dcf([0.1, 0.9], [0, 1], p_target=p_target)


def test_invalid_costs_raise():
    with pytest.raises(ScoringInputError, match="costs"):
        compute_min_dcf([0.1, 0.9], [0, 1], c_miss=0.0)
