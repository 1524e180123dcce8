"""Two-covariance PLDA (Brümmer & de Villiers 2010; Ioffe 2006; Sizov et al. 2014).

The model: an embedding ``x`` (D,) of speaker ``s`` is ``x = y_s + e`` with a speaker
variable ``y_s ~ N(mu, B)`` shared by all of that speaker's embeddings and independent
within-speaker noise ``e ~ N(0, W)``. Two embeddings of the same speaker are then jointly
Gaussian with covariance ``[[B + W, B], [B, B + W]]``, of different speakers
``[[B + W, 0], [0, B + W]]``, and the verification score is the log-likelihood ratio.

Fitting is EM from the closed-form (between/within scatter) start. Scoring diagonalises both
covariances at once: with ``V`` such that ``V' W V = I`` and ``V' B V = diag(psi)``, the
coordinates ``u = V' (x - mu)`` are independent, and the LLR of a pair is

    llr(u1, u2) = sum_k  q_k (u1_k^2 + u2_k^2) + p_k u1_k u2_k + c_k,
    q = -psi^2 / (2 (1 + psi) (1 + 2 psi)),  p = psi / (1 + 2 psi),
    c = log(1 + psi) - log(1 + 2 psi) / 2,

so a trial costs one D-dimensional dot product once each embedding's ``sum_k q_k u_k^2`` is
known. Pure numpy.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

LOG = logging.getLogger(__name__)

EIGEN_FLOOR = 1e-6  # covariance eigenvalues kept >= this fraction of the mean eigenvalue


def _floor(cov: np.ndarray, scale: float) -> np.ndarray:
    """Symmetric, with eigenvalues at least ``EIGEN_FLOOR * scale`` (positive definite)."""
    cov = 0.5 * (cov + cov.T)
    values, vectors = np.linalg.eigh(cov)
    values = np.maximum(values, EIGEN_FLOOR * scale)
    return (vectors * values) @ vectors.T


class TwoCovariancePLDA:
    """Two-covariance PLDA fitted by EM on labelled vectors.

    Args:
        n_iter: EM iterations after the closed-form start (each costs a few D x D
            decompositions and products with the (S, D) speaker statistics).
    """

    def __init__(self, n_iter: int = 20) -> None:
        self.n_iter = n_iter
        self.mu: np.ndarray | None = None  # (D,)
        self.between: np.ndarray | None = None  # (D, D) B
        self.within: np.ndarray | None = None  # (D, D) W

    def fit(self, x: npt.ArrayLike, speakers: npt.ArrayLike) -> TwoCovariancePLDA:
        """Maximum-likelihood ``mu``, ``B``, ``W`` from vectors (N, D) and their speakers."""
        x = np.asarray(x, dtype=np.float64)
        _, inverse = np.unique(np.asarray(speakers), return_inverse=True)
        counts = np.bincount(inverse).astype(np.float64)  # (S,)
        sums = np.zeros((len(counts), x.shape[1]))  # (S, D)
        np.add.at(sums, inverse, x)
        second = x.T @ x  # (D, D)
        scale = float(np.trace(np.cov(x, rowvar=False, bias=True))) / x.shape[1]
        # closed form: speaker means' scatter and the pooled within-speaker scatter
        means = sums / counts[:, None]
        mu = means.mean(axis=0)
        within = _floor((second - (means * counts[:, None]).T @ means) / x.shape[0], scale)
        between = _floor(np.cov(means, rowvar=False, bias=True).reshape(x.shape[1], -1), scale)
        for _ in range(self.n_iter):
            mu, between, within = self._em_step(mu, between, within, counts, sums, second, scale)
        self.mu, self.between, self.within = mu, between, within
        return self

    @staticmethod
    def _em_step(
        mu: np.ndarray,
        between: np.ndarray,
        within: np.ndarray,
        counts: np.ndarray,
        sums: np.ndarray,
        second: np.ndarray,
        scale: float,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One EM iteration. E: the posterior of speaker ``s``'s variable is ``N(y_s, L_s)``,
        ``L_s = (B^-1 + n_s W^-1)^-1``, ``y_s = L_s (B^-1 mu + W^-1 f_s)``. With ``T`` such that
        ``T^-1 W T^-T = I`` and ``T^-1 B T^-T = diag(lam)``, every ``L_s`` is
        ``T diag(1 / (1 / lam + n_s)) T'``: one eigendecomposition per iteration, however
        many speakers and counts. M: ``mu``, ``B``, ``W`` from the expected statistics."""
        chol_inv = np.linalg.inv(np.linalg.cholesky(within))  # W = C C'
        lam, rotation = np.linalg.eigh(chol_inv @ between @ chol_inv.T)
        lam = np.maximum(lam, 1e-12)
        to_diag = rotation.T @ chol_inv  # G = T^-1: G W G' = I, G B G' = diag(lam)
        back = np.linalg.inv(to_diag)  # T
        shrink = 1.0 / (1.0 / lam[None, :] + counts[:, None])  # (S, D) diagonal posterior covs
        posterior_means = (((to_diag @ mu) / lam)[None, :] + sums @ to_diag.T) * shrink @ back.T
        cov_between = (back * shrink.sum(axis=0)) @ back.T  # sum_s L_s
        cov_within = (back * (counts @ shrink)) @ back.T  # sum_s n_s L_s
        n_speakers, n_total = len(counts), counts.sum()
        mu = posterior_means.mean(axis=0)
        between = (cov_between + posterior_means.T @ posterior_means) / n_speakers - np.outer(
            mu, mu
        )
        cross = sums.T @ posterior_means  # sum_s f_s y_s'
        within = (
            second
            - cross
            - cross.T
            + (posterior_means * counts[:, None]).T @ posterior_means
            + cov_within
        ) / n_total
        return mu, _floor(between, scale), _floor(within, scale)

    def diagonalize(self) -> tuple[np.ndarray, np.ndarray]:
        """``(V, psi)`` with ``V' W V = I`` and ``V' B V = diag(psi)``, psi descending."""
        if self.between is None or self.within is None:
            raise RuntimeError("TwoCovariancePLDA.diagonalize called before fit()")
        chol = np.linalg.cholesky(self.within)  # W = L L'
        chol_inv = np.linalg.inv(chol)
        values, vectors = np.linalg.eigh(chol_inv @ self.between @ chol_inv.T)
        order = np.argsort(values)[::-1]
        return chol_inv.T @ vectors[:, order], np.maximum(values[order], 0.0)


def llr_coefficients(psi: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """``(q, p, c)`` of the diagonalised LLR (module docstring), per dimension and summed c."""
    psi = np.asarray(psi, dtype=np.float64)
    q = -(psi**2) / (2.0 * (1.0 + psi) * (1.0 + 2.0 * psi))
    p = psi / (1.0 + 2.0 * psi)
    c = float(np.sum(np.log1p(psi) - 0.5 * np.log1p(2.0 * psi)))
    return q, p, c


def gaussian_llr(
    x1: np.ndarray, x2: np.ndarray, mu: np.ndarray, between: np.ndarray, within: np.ndarray
) -> float:
    """The same-vs-different LLR of one pair by the joint Gaussian densities, without any
    diagonalisation: the reference that tests check the fast scoring against."""
    dim = len(mu)
    total = between + within
    same = np.block([[total, between], [between, total]])
    diff = np.block([[total, np.zeros((dim, dim))], [np.zeros((dim, dim)), total]])
    pair = np.concatenate([x1 - mu, x2 - mu])

    def log_density(cov: np.ndarray) -> float:
        _, logdet = np.linalg.slogdet(cov)
        return float(
            -0.5 * (logdet + pair @ np.linalg.solve(cov, pair) + 2 * dim * np.log(2 * np.pi))
        )

    return log_density(same) - log_density(diff)
