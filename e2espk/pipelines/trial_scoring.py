"""eval.py's scoring: embed the test utterances once, fit the back-ends, score every trial set.

Embeddings (test, cohort, back-end corpus) go through the embedding cache of ``OUT``. AS-norm
statistics depend on the test utterances only, so they are computed once for all trial sets
(the test trials and the calibration trials).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2espk.data.corpus import Corpus
from e2espk.data.features import check_compatible
from e2espk.errors import InputDataError
from e2espk.fileio import write_json_atomic
from e2espk.inference.cohort import (
    Cohort,
    backend_statistics,
    embedding_input_scores,
    normalized_inputs,
)
from e2espk.inference.contract import ExtractionOptions
from e2espk.inference.system import EmbeddingSystem
from e2espk.pipelines.eval_config import EvalConfig
from e2espk.scoring import asnorm
from e2espk.scoring.backends import BACKENDS, DEFAULT_BACKENDS, Backend, group_means
from e2espk.scoring.metrics import ScoringInputError
from e2espk.scoring.score_fusion import LogisticFusion
from e2espk.scoring.scores import fuse
from e2espk.scoring.side_scores import SideScore
from e2espk.scoring.trials import Trials

LOG = logging.getLogger(__name__)


def sampled_embeddings(
    config: EvalConfig,
    system: EmbeddingSystem,
    path: str,
    max_utterances: int,
    device: torch.device,
    cache_name: str,
    with_side_values: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Embeddings of a seeded sample of at most ``max_utterances`` of the corpus at ``path``
    (through its embedding cache), the speaker index of each, and (``with_side_values``) the
    system's side values of each."""
    corpus = Corpus(path)
    check_compatible(system.layout, corpus)
    rows = np.arange(len(corpus))
    if len(rows) > max_utterances:
        rows = np.sort(
            np.random.default_rng(config.seed).choice(rows, max_utterances, replace=False)
        )
    embeddings = embed_rows(config, system, corpus, rows, device, cache_name)
    side = system.side_values(corpus, rows) if with_side_values else {}
    return embeddings, corpus.speaker_of[rows], side


def cohort_embeddings(
    config: EvalConfig, system: EmbeddingSystem, device: torch.device
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The AS-norm cohort's utterance embeddings, speakers and side values (speaker models
    are built per score type: means of raw or back-end-transformed embeddings)."""
    return sampled_embeddings(
        config,
        system,
        config.cohort_hdf_file or "",
        config.cohort_max_utterances,
        device,
        "cohort",
        with_side_values=True,
    )


def fit_backends(
    config: EvalConfig, system: EmbeddingSystem, device: torch.device
) -> dict[str, Backend]:
    """The requested back-ends (by score type) fitted on ``--backend-hdf-file``; they are also
    written to ``OUT/backends.json``. The same file as the cohort shares its embedding cache."""
    path = config.backend_hdf_file or ""
    same_as_cohort = bool(config.cohort_hdf_file) and (
        Path(path).resolve() == Path(config.cohort_hdf_file or "").resolve()
    )
    embeddings, speakers, _ = sampled_embeddings(
        config,
        system,
        path,
        config.backend_max_utterances,
        device,
        "cohort" if same_as_cohort else "backend",
    )
    options: dict[str, dict[str, Any]] = {"lda": {"dim": config.lda_dim}}
    fitted: dict[str, Backend] = {}
    for name in dict.fromkeys(BACKENDS.canonical(n) for n in config.backends or DEFAULT_BACKENDS):
        try:
            backend = BACKENDS.build(name, **options.get(name, {})).fit(embeddings, speakers)
        except ScoringInputError as error:
            raise InputDataError(path, f"cannot fit the {name!r} back-end: {error}") from None
        fitted[backend.score_name] = backend
    LOG.info(
        "back-ends %s fitted on %d utterances of %d speakers",
        ", ".join(fitted),
        len(embeddings),
        len(np.unique(speakers)),
    )
    write_json_atomic(
        Path(config.out_path) / "backends.json",
        {"fitted_on": path, "utterances": len(embeddings)}
        | {name: backend.to_dict() for name, backend in fitted.items()},
    )
    return fitted


def embed_rows(
    config: EvalConfig,
    system: EmbeddingSystem,
    corpus: Corpus,
    rows: Any,
    device: torch.device,
    cache_name: str,
) -> np.ndarray:
    """Embeddings of ``rows`` with eval's window, batch and progress options, through the
    embedding cache ``OUT/embedding_cache/<cache_name>.h5`` unless caching is off."""
    cache = Path(config.out_path) / "embedding_cache" / f"{cache_name}.h5"
    options = ExtractionOptions(
        config.batch_size, device, config.progress, cache if config.embedding_cache else None
    )
    return system.extract(corpus, rows, options, config.window_seconds)


@dataclasses.dataclass
class ScoringTables:
    """What the trial scores are computed from: test embeddings (N, E), each back-end's
    transform of them, and for AS-norm the cohort in each score type's space."""

    embeddings: np.ndarray
    backends: dict[str, tuple[Backend, np.ndarray]]  # score type -> (back-end, (N, D) table)
    # cohort embeddings, speakers, side values (name -> (C,))
    cohort: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]] | None = None
    side: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # name -> (N,)


CohortScorer = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (r, w), (S, w) -> (r, S)


def fusion_cohort_parts(
    tables: ScoringTables, system: EmbeddingSystem
) -> dict[str, tuple[np.ndarray, np.ndarray, CohortScorer]]:
    """The fusion's inputs beside cosine and learned, as (test rows, cohort models, scorer)
    per score type: each fusion back-end in its own space (its cohort models: means of the
    transformed cohort), each side score on one column (cohort models: speaker means)."""
    assert tables.cohort is not None
    cohort_x, cohort_speakers, cohort_side = tables.cohort
    parts: dict[str, tuple[np.ndarray, np.ndarray, CohortScorer]] = {}
    for name, backend in system.fusion_backends.items():
        models = backend.cohort_models(cohort_x, cohort_speakers)
        parts[name] = (backend.transform(tables.embeddings), models, backend.score_matrix)
    for name, values in tables.side.items():
        side = system.side_scores[name]
        models = group_means(cohort_side[name][:, None], cohort_speakers)

        def scorer(rows: np.ndarray, cohort: np.ndarray, side: SideScore = side) -> np.ndarray:
            return side.score_matrix(rows[:, 0], cohort[:, 0])

        parts[name] = (values[:, None], models, scorer)
    return parts


def cohort_statistics(
    tables: ScoringTables, system: EmbeddingSystem, top_n: int, device: torch.device
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """AS-norm's top-N cohort mean and std of every test utterance, per score type. Cosine and
    learned score against the cohort speakers' mean embeddings; a back-end against its own
    cohort models (means of the transformed cohort: the PLDA scores speaker means). The fused
    score is normalised by fused cohort scores, made from its inputs' cohort scores
    (``fusion_cohort_parts``); of a fusion with side scores, only its embedding part is
    (``fused_asnorm_beside_side_scores``)."""
    assert tables.cohort is not None
    cohort_x, cohort_speakers, _ = tables.cohort
    verifier, fusion = system.verifier, system.score_fusion
    if system.score_fusion_asnorm is not None:
        fusion = None  # fused_asnorm is its own fusion of AS-normed inputs (score_trials)
    parts = fusion_cohort_parts(tables, system) if fusion is not None else {}
    # every input's test rows and cohort models ride along as columns of one table, so each
    # chunk of test rows keeps its own values of every input
    blocks = [(tables.embeddings, asnorm.speaker_means(cohort_x, cohort_speakers))]
    blocks += [(test, models) for test, models, _ in parts.values()]
    edges = np.cumsum([0] + [test.shape[1] for test, _ in blocks])
    test_table = np.column_stack([test for test, _ in blocks])
    models_table = np.column_stack([models for _, models in blocks])

    def model_scores(rows: np.ndarray, cohort_rows: np.ndarray) -> dict[str, np.ndarray]:
        """Cosine, learned and fused cohort scores of a chunk; the verifier runs once."""
        x = np.ascontiguousarray(rows[:, : edges[1]], dtype=np.float32)
        cohort = np.ascontiguousarray(cohort_rows[:, : edges[1]], dtype=np.float32)
        scores = {"cosine": asnorm.cosine_matrix(x, cohort)}
        if verifier is not None:
            a, b = torch.from_numpy(x).to(device), torch.from_numpy(cohort).to(device)
            scores["learned"] = verifier.score_matrix(a, b).float().cpu().numpy()
        if fusion is not None:  # AS-norm of the fused score itself, from fused cohort scores
            inputs = {
                name: scorer(rows[:, lo:hi], cohort_rows[:, lo:hi])
                for (name, (_, _, scorer)), lo, hi in zip(
                    parts.items(), edges[1:-1], edges[2:], strict=True
                )
            }
            scores["fused"] = fusion.apply(without_side_scores(scores | inputs, tables.side))
        return scores

    statistics = asnorm.top_n_statistics_of_each(
        test_table, models_table, top_n, model_scores, max_elements=1 << 22
    )
    for name, (backend, table) in tables.backends.items():
        backend_models = backend.cohort_models(cohort_x, cohort_speakers)
        statistics[name] = asnorm.top_n_statistics(
            table, backend_models, top_n, backend.score_matrix, max_elements=1 << 22
        )
    return statistics


def without_side_scores(
    scores: dict[str, np.ndarray], side: dict[str, Any]
) -> dict[str, np.ndarray]:
    """The scores with every side score set to 0: a fusion of them is its embedding part."""
    return {name: np.zeros_like(s) if name in side else s for name, s in scores.items()}


def fused_asnorm_beside_side_scores(
    fusion: LogisticFusion,
    raw: dict[str, np.ndarray],
    side: dict[str, Any],
    statistics: tuple[np.ndarray, np.ndarray],
    idx: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """AS-norm of a fitted fusion that has side scores (the pitch level) but no AS-norm fusion
    of its own (``best.pt``/``last.pt``): only its embedding part is normalised, back on that
    part's scale (times the mean top-N cohort std), and the side part is added unchanged.

    Why: a side score is no similarity to a cohort. Normalised as part of the fused score, it
    makes every voice whose pitch is common among the cohort look unlike all others; on the
    dev benchmark that took a checkpoint's fused EER from 9.4 % to 13.9 % under AS-norm.
    ``raw``: the trial scores, the fused one and its side scores among them; ``statistics``:
    the top-N cohort statistics of the embedding part (``cohort_statistics``).
    """
    assert fusion.weights is not None
    weight_of = dict(zip(fusion.inputs, fusion.weights.tolist(), strict=True))
    side_part = sum(
        weight_of[name] * raw[name].astype(np.float64) for name in side if name in weight_of
    )
    embedding_part = raw["fused"] - side_part
    means, stds = statistics
    normalized = asnorm.as_norm(embedding_part, idx[0], idx[1], means, stds)
    return (normalized * float(np.mean(stds)) + side_part).astype(np.float32)


def normalized_scores(
    raw: dict[str, np.ndarray],
    statistics: dict[str, tuple[np.ndarray, np.ndarray]],
    idx: tuple[np.ndarray, np.ndarray],
    fused_asnorm: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """AS-norm versions of the raw scores. ``fused_asnorm``: the checkpoint's AS-norm fusion
    (``--fusion-asnorm``) or the part-wise one of a fusion with side scores, when given; else
    the AS-norm of the fused score, or without a
    fitted fusion (older checkpoints) the z-normalised mean of AS-normed cosine and learned."""
    out = {
        f"{name}_asnorm": asnorm.as_norm(raw[name], idx[0], idx[1], *statistics[name])
        for name in raw
        if name in statistics
    }
    if fused_asnorm is not None:
        out["fused_asnorm"] = fused_asnorm
    elif "learned" in statistics and "fused" not in statistics:
        out["fused_asnorm"] = fuse([out["cosine_asnorm"], out["learned_asnorm"]])
    order = [f"{name}_asnorm" for name in raw]  # the raw scores' order
    return {name: out[name] for name in order if name in out}


def score_trials(
    config: EvalConfig,
    system: EmbeddingSystem,
    corpus: Corpus,
    trial_sets: list[Trials],
    device: torch.device,
) -> list[dict[str, np.ndarray]]:
    """Embed the union of the trial sets' utterances once, then score each set."""
    needed = sorted(set().union(*(t.utterances() for t in trial_sets)), key=corpus.utterance_row)
    position = {utt: k for k, utt in enumerate(needed)}
    rows = [corpus.utterance_row(u) for u in needed]
    side = system.side_values(corpus, rows)  # first: a corpus without their stream fails fast
    embeddings = embed_rows(config, system, corpus, rows, device, "test")
    backends = fit_backends(config, system, device) if config.backend_hdf_file else {}
    tables = ScoringTables(
        embeddings,
        {name: (backend, backend.transform(embeddings)) for name, backend in backends.items()},
        cohort_embeddings(config, system, device) if config.cohort_hdf_file else None,
        side,
    )
    statistics = (
        cohort_statistics(tables, system, config.cohort_top_n, device) if tables.cohort else {}
    )
    input_stats = None
    if tables.cohort is not None and system.score_fusion_asnorm is not None:
        cohort = Cohort(tables.cohort[0], tables.cohort[1])
        # cosine's and learned's statistics are computed above: only the back-ends' are new
        shared = {name: statistics[name] for name in ("cosine", "learned") if name in statistics}
        input_stats = shared | backend_statistics(system, embeddings, cohort, config.cohort_top_n)
    results = []
    for trials in trial_sets:
        idx = (
            np.array([position[u] for u in trials.enroll], dtype=np.int64),
            np.array([position[u] for u in trials.test], dtype=np.int64),
        )
        scores = system.score(embeddings, idx[0], idx[1], device, tables.side)
        for name, (backend, table) in tables.backends.items():
            scores[name] = backend.score_pairs(table, *idx).astype(np.float32)
        fused_asnorm = None
        fusion = system.score_fusion
        side_inputs = set(tables.side) & set(fusion.inputs if fusion is not None else ())
        if fusion is not None and side_inputs and "fused" in statistics:
            fused_asnorm = fused_asnorm_beside_side_scores(
                fusion, scores, tables.side, statistics["fused"], idx
            )
        if input_stats is not None and system.score_fusion_asnorm is not None:
            side_trials = {
                name: system.side_scores[name].score_pairs(values, *idx)
                for name, values in tables.side.items()
            }
            raw = embedding_input_scores(system, embeddings, *idx, device)
            inputs = normalized_inputs(raw, input_stats, *idx, side_trials)
            fused_asnorm = system.score_fusion_asnorm.apply(inputs)
        if statistics:
            scores |= normalized_scores(scores, statistics, idx, fused_asnorm)
        results.append(scores)
    return results
