"""Scoring back-ends: PLDA against a known two-covariance model, LDA, mean subtraction, saving."""

from __future__ import annotations

import json

import numpy as np
import pytest

from e2espk.errors import ConfigError
from e2espk.scoring.backends import (
    BACKENDS,
    DEFAULT_BACKENDS,
    LDABackend,
    MeanNormalization,
    PLDABackend,
    backend_from_dict,
    length_norm,
)
from e2espk.scoring.metrics import ScoringInputError, compute_eer
from e2espk.scoring.plda import TwoCovariancePLDA, gaussian_llr, llr_coefficients

DIM = 8


class TwoCovModel:
    """A known two-covariance model: x = y_s + e, y_s ~ N(mu, B), e ~ N(0, W). W is strongly
    anisotropic and correlated, so cosine on raw x is far from optimal."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        a = rng.standard_normal((DIM, DIM))
        self.between = a @ a.T / DIM + 0.5 * np.eye(DIM)
        c = rng.standard_normal((DIM, DIM))
        self.within = 0.3 * (c @ c.T / DIM + np.diag(np.geomspace(0.05, 2.0, DIM)))
        self.mu = rng.standard_normal(DIM)
        self.rng = rng

    def sample(self, speakers: int, per_speaker: int) -> tuple[np.ndarray, np.ndarray]:
        y = self.rng.multivariate_normal(self.mu, self.between, speakers)
        e = self.rng.multivariate_normal(np.zeros(DIM), self.within, speakers * per_speaker)
        return np.repeat(y, per_speaker, axis=0) + e, np.repeat(np.arange(speakers), per_speaker)

    def llr(self, x: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray) -> np.ndarray:
        """The true model's LLR of each trial, by the diagonalised closed form."""
        model = TwoCovariancePLDA()
        model.mu, model.between, model.within = self.mu, self.between, self.within
        basis, psi = model.diagonalize()
        q, p, c = llr_coefficients(psi)
        u = (x - self.mu) @ basis
        quad = (u**2) @ q
        return quad[idx_a] + quad[idx_b] + np.einsum("ij,ij->i", u[idx_a] * p, u[idx_b]) + c


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    model = TwoCovModel()
    train_x, train_spk = model.sample(600, 8)
    test_x, test_spk = model.sample(60, 4)
    idx_a, idx_b = np.triu_indices(len(test_x), 1)
    return {
        "train_x": train_x,
        "train_spk": train_spk,
        "test_x": test_x,
        "idx_a": idx_a,
        "idx_b": idx_b,
        "labels": test_spk[idx_a] == test_spk[idx_b],
        "true_llr": model.llr(test_x, idx_a, idx_b),
        "true_between": model.between,
        "true_within": model.within,
        "true_mu": model.mu,
    }


def scores_of(backend: object, data: dict[str, np.ndarray]) -> np.ndarray:
    table = backend.transform(data["test_x"])  # type: ignore[attr-defined]
    return backend.score_pairs(table, data["idx_a"], data["idx_b"])  # type: ignore[attr-defined]


def cosine(data: dict[str, np.ndarray]) -> np.ndarray:
    unit = length_norm(data["test_x"])
    return np.einsum("ij,ij->i", unit[data["idx_a"]], unit[data["idx_b"]])


def test_true_model_closed_form_equals_gaussian_densities(data: dict[str, np.ndarray]) -> None:
    x, mu, b, w = data["test_x"], data["true_mu"], data["true_between"], data["true_within"]
    for k in range(0, 5000, 997):
        i, j = data["idx_a"][k], data["idx_b"][k]
        assert data["true_llr"][k] == pytest.approx(gaussian_llr(x[i], x[j], mu, b, w), abs=1e-9)


def test_plda_recovers_the_true_model_and_beats_cosine(data: dict[str, np.ndarray]) -> None:
    # no length norm: whitening is affine, so the fitted LLR should be the true model's LLR
    plda = PLDABackend(length_norm=False).fit(data["train_x"], data["train_spk"])
    llr, true = scores_of(plda, data), data["true_llr"]
    assert np.corrcoef(llr, true)[0, 1] > 0.995
    assert np.abs(llr - true).mean() < 0.1 * true.std()
    labels = data["labels"]
    eer_plda, eer_true, eer_cos = (compute_eer(s, labels) for s in (llr, true, cosine(data)))
    assert eer_plda < eer_cos - 0.03 and abs(eer_plda - eer_true) < 0.01
    # the fitted covariances, mapped back from the whitened space, are the true ones up to
    # sampling error (B is estimated from 600 speaker variables, W from 4200 residuals)
    _, between, within = plda.covariances()
    back = np.linalg.inv(plda.whitening)  # type: ignore[arg-type]
    for fitted, true_cov, tolerance in (
        (between, data["true_between"], 0.2),
        (within, data["true_within"], 0.08),
    ):
        raw = back.T @ fitted @ back
        assert np.linalg.norm(raw - true_cov) < tolerance * np.linalg.norm(true_cov)
    # with the default length normalisations it is no longer the exact model, but still wins
    eer_ln = compute_eer(
        scores_of(PLDABackend().fit(data["train_x"], data["train_spk"]), data), labels
    )
    assert eer_ln < eer_cos - 0.03


def test_plda_scores_are_symmetric_and_equal_the_brute_force_llr(
    data: dict[str, np.ndarray],
) -> None:
    plda = PLDABackend().fit(data["train_x"][:800], data["train_spk"][:800])
    table = plda.transform(data["test_x"])
    idx_a, idx_b = data["idx_a"][:500], data["idx_b"][:500]
    forward = plda.score_pairs(table, idx_a, idx_b)
    np.testing.assert_allclose(forward, plda.score_pairs(table, idx_b, idx_a), rtol=1e-12)
    mu, between, within = plda.covariances()
    z = plda.preprocess(data["test_x"])
    for k in (0, 7, 123, 499):
        brute = gaussian_llr(z[idx_a[k]], z[idx_b[k]], mu, between, within)
        assert forward[k] == pytest.approx(brute, rel=1e-8, abs=1e-8)
    matrix = plda.score_matrix(table[:5], table[5:9])
    rows, cols = np.meshgrid(np.arange(5), np.arange(5, 9), indexing="ij")
    np.testing.assert_allclose(
        matrix, plda.score_pairs(table, rows.ravel(), cols.ravel()).reshape(5, 4), rtol=1e-10
    )


def test_mean_and_lda_backends(data: dict[str, np.ndarray]) -> None:
    x, spk = data["train_x"], data["train_spk"]
    mean = MeanNormalization().fit(x, spk)
    centred = length_norm(data["test_x"]) - length_norm(x).mean(axis=0)
    unit = length_norm(centred)
    np.testing.assert_allclose(
        scores_of(mean, data),
        np.einsum("ij,ij->i", unit[data["idx_a"]], unit[data["idx_b"]]),
        atol=1e-12,
    )
    lda = LDABackend().fit(x, spk)
    table = lda.transform(data["test_x"])
    assert table.shape == (len(data["test_x"]), DIM)  # min(150, 599, 8)
    np.testing.assert_allclose(np.linalg.norm(table, axis=1), 1.0)
    assert LDABackend(dim=3).fit(x, spk).transform(data["test_x"]).shape[1] == 3
    assert LDABackend().fit(x[:40], spk[:40]).transform(data["test_x"]).shape[1] == 4  # 5 spk
    labels = data["labels"]
    assert compute_eer(scores_of(lda, data), labels) < compute_eer(cosine(data), labels) - 0.03


@pytest.mark.parametrize("name", DEFAULT_BACKENDS)
def test_backends_round_trip_through_json(name: str, data: dict[str, np.ndarray]) -> None:
    backend = BACKENDS.build(name).fit(data["train_x"][:400], data["train_spk"][:400])
    loaded = backend_from_dict(json.loads(json.dumps(backend.to_dict())))
    assert type(loaded) is type(backend) and loaded.score_name == backend.score_name
    np.testing.assert_allclose(scores_of(loaded, data), scores_of(backend, data), rtol=1e-10)
    cohort = loaded.cohort_models(data["train_x"][:40], data["train_spk"][:40])
    table = loaded.transform(data["test_x"][:6])
    assert cohort.shape[0] == 5 and loaded.score_matrix(table, cohort).shape == (6, 5)


def test_backend_errors() -> None:
    x = np.random.default_rng(0).standard_normal((6, 4))
    with pytest.raises(ScoringInputError, match="at least 2 speakers"):
        PLDABackend().fit(x, np.zeros(6))
    with pytest.raises(ScoringInputError, match="at least 2 speakers"):
        LDABackend().fit(x, np.arange(6))  # every speaker has one utterance
    with pytest.raises(ScoringInputError, match="NaN"):
        MeanNormalization().fit(np.full((4, 2), np.nan), [0, 0, 1, 1])
    with pytest.raises(ConfigError, match="choose one of: lda, mean, plda"):
        backend_from_dict({"kind": "cds", "version": 1})
    with pytest.raises(ScoringInputError, match="not a saved 'lda'"):
        LDABackend.from_dict({"kind": "lda", "version": 99})
    with pytest.raises(RuntimeError, match="before fit"):
        PLDABackend().transform(x)
