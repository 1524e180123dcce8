"""AS-norm of a trained system's fusion inputs, and the fused score of AS-normed inputs.

AS-norm of a *fused* score that weighs a side score (the pitch level) normalises away what the
side score says: an utterance whose pitch is close to many cohort speakers' gets a high top-N
mean and so a lower score, whatever the embedding says. So a system exported with
``--fusion-asnorm`` instead carries a second fusion, fitted on the validation trials, of the
AS-normed embedding scores (cosine, learned, its fusion back-ends) and the raw side scores;
``eval.py`` reports it as ``fused_asnorm``. Training's export and eval compute the inputs here,
the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import torch

from e2espk.inference.system import EmbeddingSystem
from e2espk.scoring import asnorm
from e2espk.scoring.scores import cosine_scores, learned_scores

Statistics = dict[str, tuple[np.ndarray, np.ndarray]]  # score type -> per-utterance (mean, std)


@dataclasses.dataclass
class Cohort:
    """AS-norm cohort utterances: embeddings (C, E), speaker index (C,), side values (C,)."""

    embeddings: np.ndarray
    speakers: np.ndarray
    side: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def embedding_input_scores(
    system: EmbeddingSystem,
    embeddings: np.ndarray,
    idx_a: np.ndarray,
    idx_b: np.ndarray,
    device: torch.device | str = "cpu",
) -> dict[str, np.ndarray]:
    """The raw trial scores of the system's embedding-based fusion inputs: cosine, learned
    (with a verifier) and each fusion back-end."""
    scores = {"cosine": cosine_scores(embeddings, idx_a, idx_b)}
    if system.verifier is not None:
        scores["learned"] = learned_scores(system.verifier, embeddings, idx_a, idx_b, device)
    for name, backend in system.fusion_backends.items():
        scores[name] = backend.score_pairs(backend.transform(embeddings), idx_a, idx_b)
    return scores


def input_statistics(
    system: EmbeddingSystem,
    embeddings: np.ndarray,
    cohort: Cohort,
    top_n: int,
    device: torch.device | str = "cpu",
) -> Statistics:
    """Top-N cohort statistics of every utterance for each embedding-based input: cosine and
    learned against the cohort speakers' mean embeddings, a back-end against its own cohort
    models (means of the transformed cohort)."""
    models = asnorm.speaker_means(cohort.embeddings, cohort.speakers)
    verifier = system.verifier

    def scores(rows: np.ndarray, cohort_rows: np.ndarray) -> dict[str, np.ndarray]:
        out = {"cosine": asnorm.cosine_matrix(rows, cohort_rows)}
        if verifier is not None:
            a = torch.from_numpy(np.ascontiguousarray(rows)).to(device)
            b = torch.from_numpy(np.ascontiguousarray(cohort_rows)).to(device)
            out["learned"] = verifier.score_matrix(a, b).float().cpu().numpy()
        return out

    statistics = asnorm.top_n_statistics_of_each(
        embeddings, models, top_n, scores, max_elements=1 << 22
    )
    return statistics | backend_statistics(system, embeddings, cohort, top_n)


def backend_statistics(
    system: EmbeddingSystem, embeddings: np.ndarray, cohort: Cohort, top_n: int
) -> Statistics:
    """``input_statistics`` of the fusion back-ends alone (eval has cosine's and learned's)."""
    return {
        name: asnorm.top_n_statistics(
            backend.transform(embeddings),
            backend.cohort_models(cohort.embeddings, cohort.speakers),
            top_n,
            backend.score_matrix,
            max_elements=1 << 22,
        )
        for name, backend in system.fusion_backends.items()
    }


def normalized_inputs(
    raw: Mapping[str, np.ndarray],
    statistics: Statistics,
    idx_a: np.ndarray,
    idx_b: np.ndarray,
    side: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """AS-normed embedding-based inputs, with the side scores (``side``: trial scores) raw:
    the inputs of the AS-norm fusion."""
    normed = {name: asnorm.as_norm(raw[name], idx_a, idx_b, *statistics[name]) for name in raw}
    return normed | {name: np.asarray(values, dtype=np.float32) for name, values in side.items()}
