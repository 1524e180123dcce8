"""Scoring back-ends fitted on labelled embeddings: mean subtraction, LDA, two-covariance PLDA.

Cosine on raw embeddings ignores that the training speakers define which directions carry
speaker information. A back-end is fitted once on embeddings of a labelled corpus (typically
the training file) and then scores any trials:

- ``mean`` (score type ``cosine_mean``): subtract the mean of the length-normalised training
  embeddings, then cosine. Removes the shared offset that cosine otherwise counts as
  similarity.
- ``lda`` (``cosine_lda``): the same, then LDA (within-class whitened, between-class
  discriminant directions) to ``dim`` dimensions, then cosine.
- ``plda`` (``plda``): whitening and length norm, then a two-covariance PLDA
  (:class:`PLDABackend`); the score is the log-likelihood ratio of same vs different speaker.

Every back-end works in two steps so that large trial lists and AS-norm cohorts are cheap:
``transform`` maps embeddings (N, E) once into its scoring space, and ``score_pairs`` /
``score_matrix`` score rows of that space. ``cohort_models`` turns cohort utterances into
one model per speaker in the same space (for AS-norm). All numpy/scikit-learn, no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from e2espk.registry import Registry
from e2espk.scoring.metrics import ScoringInputError
from e2espk.scoring.plda import TwoCovariancePLDA, llr_coefficients

SCHEMA_VERSION = 1
BACKENDS: Registry[type[Backend]] = Registry("scoring back-end")
DEFAULT_BACKENDS = ("mean", "lda", "plda")  # all of them, in the order they are reported


def length_norm(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float64."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def row_dots(
    a: np.ndarray, b: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray, chunk: int = 1 << 14
) -> np.ndarray:
    """``(a[idx_a] * b[idx_b]).sum(1)`` in chunks of trials, so memory stays bounded."""
    idx_a, idx_b = np.asarray(idx_a), np.asarray(idx_b)
    if idx_a.shape != idx_b.shape or idx_a.ndim != 1:
        raise ValueError(f"index shapes differ: {idx_a.shape} vs {idx_b.shape}")
    out = np.empty(idx_a.shape[0])
    for start in range(0, idx_a.shape[0], chunk):
        stop = start + chunk
        out[start:stop] = np.einsum("ij,ij->i", a[idx_a[start:stop]], b[idx_b[start:stop]])
    return out


def group_means(x: np.ndarray, speakers: npt.ArrayLike) -> np.ndarray:
    """(S, D) mean row of each speaker, in sorted order of the speaker labels."""
    _, inverse = np.unique(np.asarray(speakers), return_inverse=True)
    sums = np.zeros((int(inverse.max()) + 1, x.shape[1]))
    np.add.at(sums, inverse, x)
    return sums / np.bincount(inverse)[:, None]


def check_labelled(
    embeddings: npt.ArrayLike, speakers: npt.ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Fitting data as (float64 (N, E), labels (N,)); a back-end needs two or more speakers,
    one with several utterances, and finite values."""
    x = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(speakers)
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise ScoringInputError(f"embeddings {x.shape} and speakers {labels.shape} do not match")
    if not np.isfinite(x).all():
        raise ScoringInputError("back-end training embeddings contain NaN or Inf")
    _, counts = np.unique(labels, return_counts=True)
    if len(counts) < 2 or counts.max() < 2:
        raise ScoringInputError(
            f"a back-end needs at least 2 speakers and one with 2+ utterances; got {len(counts)} "
            f"speaker(s) with at most {counts.max() if len(counts) else 0} utterance(s)"
        )
    return x, labels


class Backend:
    """Base: fit on labelled embeddings, transform into a scoring space, score rows there."""

    name: ClassVar[str]  # registry name (``--backends``)
    score_name: ClassVar[str]  # the score type it produces
    _arrays: ClassVar[tuple[str, ...]] = ()  # fitted arrays, saved by to_dict
    _options: ClassVar[tuple[str, ...]] = ()  # constructor options, saved by to_dict

    def fit(self, embeddings: npt.ArrayLike, speakers: npt.ArrayLike) -> Backend:
        raise NotImplementedError

    def transform(self, embeddings: npt.ArrayLike) -> np.ndarray:
        """(N, E) embeddings -> (N, D) rows of the scoring space."""
        raise NotImplementedError

    def score_pairs(self, table: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray) -> np.ndarray:
        """Scores of trials given as row indices into a transformed ``table``."""
        raise NotImplementedError

    def score_matrix(self, rows: np.ndarray, cohort: np.ndarray) -> np.ndarray:
        """(r, C) scores of transformed ``rows`` against transformed cohort models."""
        raise NotImplementedError

    def cohort_models(self, embeddings: npt.ArrayLike, speakers: npt.ArrayLike) -> np.ndarray:
        """One transformed model per cohort speaker: the mean of its transformed utterances."""
        return group_means(self.transform(embeddings), speakers)

    @property
    def is_fitted(self) -> bool:
        return all(getattr(self, key, None) is not None for key in self._arrays)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-serialisable): kind, version, options and fitted arrays."""
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__}.to_dict called before fit()")
        return {
            "kind": self.name,
            "version": SCHEMA_VERSION,
            "options": {key: getattr(self, key) for key in self._options},
            "arrays": {key: np.asarray(getattr(self, key)).tolist() for key in self._arrays},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Backend:
        if data.get("kind") != cls.name or data.get("version") != SCHEMA_VERSION:
            raise ScoringInputError(
                f"not a saved {cls.name!r} back-end of version {SCHEMA_VERSION}: "
                f"{data.get('kind')!r}/{data.get('version')!r}"
            )
        backend = cls(**data["options"])
        for key in cls._arrays:
            setattr(backend, key, np.asarray(data["arrays"][key], dtype=np.float64))
        return backend


def backend_from_dict(data: Mapping[str, Any]) -> Backend:
    """Rebuild any back-end saved by ``to_dict`` (its ``kind`` names the class)."""
    return BACKENDS.get(str(data.get("kind"))).from_dict(data)


class CosineBackend(Backend):
    """A back-end whose scoring space holds unit vectors scored by their dot product."""

    def score_pairs(self, table: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray) -> np.ndarray:
        return row_dots(table, table, idx_a, idx_b)

    def score_matrix(self, rows: np.ndarray, cohort: np.ndarray) -> np.ndarray:
        return length_norm(rows) @ length_norm(cohort).T  # cohort means are not unit vectors


@BACKENDS.register("mean")
class MeanNormalization(CosineBackend):
    """Cosine after subtracting the training mean of the length-normalised embeddings."""

    name = "mean"
    score_name = "cosine_mean"
    _arrays = ("mean",)

    def __init__(self) -> None:
        self.mean: np.ndarray | None = None  # (E,)

    def fit(self, embeddings: npt.ArrayLike, speakers: npt.ArrayLike) -> MeanNormalization:
        x, _ = check_labelled(embeddings, speakers)
        self.mean = length_norm(x).mean(axis=0)
        return self

    def transform(self, embeddings: npt.ArrayLike) -> np.ndarray:
        if self.mean is None:
            raise RuntimeError("MeanNormalization.transform called before fit()")
        return length_norm(length_norm(np.asarray(embeddings)) - self.mean)


@BACKENDS.register("lda")
class LDABackend(CosineBackend):
    """Mean subtraction and length norm, LDA to ``dim`` dimensions, length norm, cosine.

    Args:
        dim: LDA output dimension; None: min(150, speakers - 1, embedding dim). LDA has at
            most ``speakers - 1`` discriminant directions, so larger values are capped.
    """

    name = "lda"
    score_name = "cosine_lda"
    _arrays = ("mean", "center", "projection")
    _options = ("dim",)

    def __init__(self, dim: int | None = None) -> None:
        if dim is not None and dim < 1:
            raise ScoringInputError(f"LDA dim must be positive, got {dim}")
        self.dim = dim
        self.mean: np.ndarray | None = None  # (E,) training mean of unit embeddings
        self.center: np.ndarray | None = None  # (E,) LDA's centre of the normalised inputs
        self.projection: np.ndarray | None = None  # (E, dim)

    def fit(self, embeddings: npt.ArrayLike, speakers: npt.ArrayLike) -> LDABackend:
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        x, labels = check_labelled(embeddings, speakers)
        n_speakers = len(np.unique(labels))
        dim = min(self.dim or 150, n_speakers - 1, x.shape[1])
        self.mean = length_norm(x).mean(axis=0)
        z = length_norm(length_norm(x) - self.mean)
        lda = LinearDiscriminantAnalysis(solver="svd", n_components=dim).fit(z, labels)
        self.center = np.asarray(lda.xbar_, dtype=np.float64)
        self.projection = np.asarray(lda.scalings_, dtype=np.float64)[:, :dim]
        return self

    def transform(self, embeddings: npt.ArrayLike) -> np.ndarray:
        if self.mean is None or self.center is None or self.projection is None:
            raise RuntimeError("LDABackend.transform called before fit()")
        z = length_norm(length_norm(np.asarray(embeddings)) - self.mean)
        return length_norm((z - self.center) @ self.projection)


@BACKENDS.register("plda")
class PLDABackend(Backend):
    """Two-covariance PLDA (``e2espk.scoring.plda``) after the preprocessing of Garcia-Romero
    & Espy-Wilson (2011): centre, whiten with the total covariance, length-normalise (to
    norm sqrt(D), so each coordinate has about unit variance). Length normalisation makes the
    heavy-tailed embeddings closer to the Gaussian the model assumes; the raw embeddings are
    length-normalised first as well, as the cosine back-ends do.

    Args:
        n_iter: EM iterations of the PLDA fit.
        length_norm: apply both length normalisations (off: a plain Gaussian PLDA on whitened
            embeddings, whose LLR is then that of the model fitted on the raw embeddings).
    """

    name = "plda"
    score_name = "plda"
    _arrays = ("mean", "whitening", "mu", "basis", "psi")
    _options = ("n_iter", "length_norm")

    def __init__(self, n_iter: int = 20, length_norm: bool = True) -> None:
        self.n_iter = int(n_iter)
        self.length_norm = bool(length_norm)
        self.mean: np.ndarray | None = None  # (E,) centre of the (unit) embeddings
        self.whitening: np.ndarray | None = None  # (E, D) total covariance -> identity
        self.mu: np.ndarray | None = None  # (D,) PLDA mean, preprocessed space
        self.basis: np.ndarray | None = None  # (D, D) V: V' W V = I, V' B V = diag(psi)
        self.psi: np.ndarray | None = None  # (D,) between-speaker variances in that basis

    def fit(self, embeddings: npt.ArrayLike, speakers: npt.ArrayLike) -> PLDABackend:
        x, labels = check_labelled(embeddings, speakers)
        x = length_norm(x) if self.length_norm else x
        self.mean = x.mean(axis=0)
        centred = x - self.mean
        values, vectors = np.linalg.eigh(centred.T @ centred / len(x))
        keep = values > 1e-10 * max(float(values.max()), 1e-30)  # drop null directions
        self.whitening = vectors[:, keep] / np.sqrt(values[keep])
        model = TwoCovariancePLDA(self.n_iter).fit(self.preprocess(x, normalized=True), labels)
        self.mu = model.mu
        self.basis, self.psi = model.diagonalize()
        return self

    def preprocess(self, embeddings: npt.ArrayLike, normalized: bool = False) -> np.ndarray:
        """Embeddings (N, E) in the space the PLDA is fitted in (N, D)."""
        if self.mean is None or self.whitening is None:
            raise RuntimeError("PLDABackend used before fit()")
        x = np.asarray(embeddings, dtype=np.float64)
        if self.length_norm and not normalized:
            x = length_norm(x)
        z = (x - self.mean) @ self.whitening
        return length_norm(z) * np.sqrt(z.shape[1]) if self.length_norm else z

    def covariances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(mu, B, W)`` of the fitted model in the preprocessed space."""
        if self.mu is None or self.basis is None or self.psi is None:
            raise RuntimeError("PLDABackend used before fit()")
        inverse = np.linalg.inv(self.basis)  # W = V'^-1 V^-1, B = V'^-1 diag(psi) V^-1
        return self.mu, (inverse.T * self.psi) @ inverse, inverse.T @ inverse

    def transform(self, embeddings: npt.ArrayLike) -> np.ndarray:
        """Coordinates in which the two covariances are diagonal (module ``plda``)."""
        if self.mu is None or self.basis is None:
            raise RuntimeError("PLDABackend used before fit()")
        return (self.preprocess(embeddings) - self.mu) @ self.basis

    def _terms(self, table: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        q, p, c = llr_coefficients(self.psi)  # type: ignore[arg-type]
        return (table**2) @ q, table * p, c

    def score_pairs(self, table: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray) -> np.ndarray:
        """LLRs of the trials: each side's quadratic term once per embedding, then one dot
        product per trial."""
        quadratic, scaled, c = self._terms(table)
        idx_a, idx_b = np.asarray(idx_a), np.asarray(idx_b)
        return quadratic[idx_a] + quadratic[idx_b] + row_dots(scaled, table, idx_a, idx_b) + c

    def score_matrix(self, rows: np.ndarray, cohort: np.ndarray) -> np.ndarray:
        quadratic, scaled, c = self._terms(rows)
        cohort_quadratic, _, _ = self._terms(cohort)
        return quadratic[:, None] + cohort_quadratic[None, :] + scaled @ cohort.T + c
