"""Adaptive s-norm (AS-norm): normalise each trial score by the top-N cohort scores of its sides.

    s' = ((s - mu_e) / sd_e + (s - mu_t) / sd_t) / 2

where mu/sd are the mean and std of the N highest scores of that utterance against a cohort
(Matejka et al., 2017). Cohort scores are computed in row chunks so memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

CohortScorer = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (r, E), (C, E) -> (r, C)


def cosine_matrix(rows: np.ndarray, cohort: np.ndarray) -> np.ndarray:
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    return unit(rows) @ unit(cohort).T


def top_n_statistics(
    embeddings: np.ndarray,
    cohort: np.ndarray,
    top_n: int,
    scorer: CohortScorer = cosine_matrix,
    max_elements: int = 1 << 24,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-utterance mean and std of its ``top_n`` best cohort scores."""
    top_n = min(top_n, len(cohort))
    rows_per_chunk = max(1, max_elements // max(len(cohort), 1))
    means = np.empty(len(embeddings))
    stds = np.empty(len(embeddings))
    for start in range(0, len(embeddings), rows_per_chunk):
        scores = scorer(embeddings[start : start + rows_per_chunk], cohort)
        top = np.partition(scores, scores.shape[1] - top_n, axis=1)[:, -top_n:]
        means[start : start + rows_per_chunk] = top.mean(axis=1)
        stds[start : start + rows_per_chunk] = top.std(axis=1)
    return means, np.maximum(stds, 1e-6)


def as_norm(
    raw: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray, means: np.ndarray, stds: np.ndarray
) -> np.ndarray:
    """Normalise trial scores ``raw`` (trial k pairs utterances idx_a[k], idx_b[k])."""
    enroll = (raw - means[idx_a]) / stds[idx_a]
    test = (raw - means[idx_b]) / stds[idx_b]
    return (0.5 * (enroll + test)).astype(np.float32)


def speaker_means(embeddings: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Mean of the length-normalised embeddings of each speaker (a cohort of speaker models)."""
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    labels, inverse = np.unique(speakers, return_inverse=True)
    sums = np.zeros((len(labels), embeddings.shape[1]))
    np.add.at(sums, inverse, unit)
    return (sums / np.bincount(inverse)[:, None]).astype(np.float32)
