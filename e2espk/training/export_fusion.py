"""final.pt's score fusions, refitted at export with what needs the training embeddings.

``--fusion-backends`` fits back-ends (e.g. PLDA) on a seeded sample of training utterances and
adds their scores to the fusion; ``--fusion-asnorm`` fits a second fusion of AS-normed scores
(cohort: the same sample; ``e2espk.inference.cohort``). Both are fitted on the validation
trials and stored with what their inputs are made from, so eval computes them alone.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2espk.data.corpus import Corpus
from e2espk.errors import InputDataError
from e2espk.inference.cohort import (
    Cohort,
    embedding_input_scores,
    input_statistics,
    normalized_inputs,
)
from e2espk.inference.contract import EmbeddingContract, ExtractionOptions
from e2espk.inference.system import load_embedding_system
from e2espk.scoring.backends import BACKENDS, Backend
from e2espk.scoring.metrics import ScoringInputError, summarize
from e2espk.scoring.score_fusion import LogisticFusion
from e2espk.training.config import TrainConfig
from e2espk.training.loop import ValidationSet, validate

LOG = logging.getLogger(__name__)


def fusion_entries(
    config: TrainConfig,
    fusion: LogisticFusion | None,
    backends: dict[str, Backend] | None = None,
    fusion_asnorm: LogisticFusion | None = None,
) -> dict[str, Any]:
    """A checkpoint's score fusions with what their inputs are made from (the run's side
    scores and back-ends), written together so they always match: a checkpoint refitted at
    export may come from epochs saved with other options (--resume)."""
    return {
        "score_fusion": fusion.to_dict() if fusion is not None else None,
        "side_scores": [side.to_dict() for side in config.side_score_set().values()],
        "fusion_backends": [backend.to_dict() for backend in (backends or {}).values()],
        "score_fusion_asnorm": fusion_asnorm.to_dict() if fusion_asnorm is not None else None,
    }


def training_sample(config: TrainConfig, corpus: Corpus) -> np.ndarray:
    """A seeded sample of at most --fusion-backend-max-utterances training rows."""
    rows = np.arange(len(corpus))
    if len(rows) > config.fusion_backend_max_utterances:
        rng = np.random.default_rng(config.seed)
        rows = np.sort(rng.choice(rows, config.fusion_backend_max_utterances, replace=False))
    return rows


def fit_backends(
    names: list[str], embeddings: np.ndarray, speakers: np.ndarray, path: Path | str
) -> dict[str, Backend]:
    """The named back-ends fitted on labelled embeddings, by score type."""
    fitted: dict[str, Backend] = {}
    for name in dict.fromkeys(BACKENDS.canonical(n) for n in names):
        try:
            backend = BACKENDS.build(name).fit(embeddings, speakers)
        except ScoringInputError as error:
            raise InputDataError(path, f"cannot fit the {name!r} back-end: {error}") from None
        fitted[backend.score_name] = backend
    return fitted


@dataclasses.dataclass
class ExportInputs:
    """What the refit needs from the run: its options, the training corpus, the validation
    set and the embedding contract, and the device."""

    config: TrainConfig
    corpus: Corpus
    valid: ValidationSet
    contract: EmbeddingContract
    device: torch.device


def refit_exported_fusion(run: ExportInputs, path: Path) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit the back-ends and fusions of checkpoint ``path`` (``--fusion-backends``,
    ``--fusion-asnorm``); returns its validation metrics (``fused_asnorm/...`` included) and
    the checkpoint entries to store."""
    config, corpus, valid = run.config, run.corpus, run.valid
    system = load_embedding_system(path, run.device)
    options = ExtractionOptions(config.valid_batch_size, run.device, config.progress)
    rows = training_sample(config, corpus)
    train_embeddings = system.extract(corpus, rows, options)
    speakers = corpus.speaker_of[rows]
    backends = fit_backends(config.fusion_backends, train_embeddings, speakers, corpus.path)
    metrics, valid_embeddings, _, fusion = validate(
        system.model, system.verifier, valid, run.contract, options, backends
    )
    system.fusion_backends = backends
    fusion_asnorm = None
    if config.fusion_asnorm:
        side_scores = config.side_score_set()
        cohort = Cohort(train_embeddings, speakers)  # side scores enter the fusion raw
        statistics = input_statistics(
            system, valid_embeddings, cohort, config.fusion_asnorm_top_n, run.device
        )
        raw = embedding_input_scores(system, valid_embeddings, valid.idx_a, valid.idx_b, run.device)
        inputs = normalized_inputs(
            raw, statistics, valid.idx_a, valid.idx_b, {n: valid.side[n] for n in side_scores}
        )
        fusion_asnorm = LogisticFusion(tuple(inputs)).fit(inputs, valid.labels)
        fused = fusion_asnorm.apply(inputs)
        for key, value in summarize(fused, valid.labels, p_targets=(0.01, 0.05)).items():
            metrics[f"fused_asnorm/{key}"] = value
    LOG.info(
        "%s: score fusion refitted with %s on %d training utterances: %s",
        path.name,
        " and ".join(
            [*(["back-ends " + ", ".join(backends)] if backends else []),
             *(["an AS-norm fusion"] if fusion_asnorm else [])]
        ),
        len(rows),
        fusion_asnorm or fusion,
    )  # fmt: skip
    return metrics, fusion_entries(config, fusion, backends, fusion_asnorm)
