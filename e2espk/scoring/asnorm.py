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
    empty = (np.empty(0), np.empty(0))  # no utterances: no chunk was scored
    return top_n_statistics_of_each(
        embeddings, cohort, top_n, lambda rows, models: {"": scorer(rows, models)}, max_elements
    ).get("", empty)


def top_n_statistics_of_each(
    embeddings: np.ndarray,
    cohort: np.ndarray,
    top_n: int,
    scorer: Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]],
    max_elements: int = 1 << 24,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``top_n_statistics`` of several score types that one scorer computes together (e.g. the
    fused score from the cosine and learned matrices it has already computed), per name."""
    top_n = min(top_n, len(cohort))
    rows_per_chunk = max(1, max_elements // max(len(cohort), 1))
    stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for start in range(0, len(embeddings), rows_per_chunk):
        chunk = slice(start, start + rows_per_chunk)
        for name, scores in scorer(embeddings[chunk], cohort).items():
            means, stds = stats.setdefault(
                name, (np.empty(len(embeddings)), np.empty(len(embeddings)))
            )
            top = np.partition(scores, scores.shape[1] - top_n, axis=1)[:, -top_n:]
            means[chunk] = top.mean(axis=1)
            stds[chunk] = top.std(axis=1)
    return {name: (means, np.maximum(stds, 1e-6)) for name, (means, stds) in stats.items()}


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
