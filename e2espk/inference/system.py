"""A trained system ready to use: the embedding model and verifier rebuilt from a checkpoint.

What eval, embed and training's exports need from a checkpoint: no classification head, no
optimizer. ``load_embedding_system`` builds it (and its ``EmbeddingContract``) once;
``EmbeddingSystem.extract`` embeds and ``EmbeddingSystem.score`` scores pairs of embeddings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2espk.data.corpus import Corpus
from e2espk.data.features import InputLayout
from e2espk.data.transforms import Normalization
from e2espk.errors import ConfigError, InputDataError
from e2espk.inference.checkpoint_file import (
    load_checkpoint,
    training_normalization,
    training_window_seconds,
)
from e2espk.inference.contract import EmbeddingContract, ExtractionOptions
from e2espk.inference.extraction import extract
from e2espk.inference.side_values import side_values
from e2espk.models.speaker_model import SpeakerEmbeddingModel, build_speaker_model
from e2espk.models.verification import PairVerifier, VerifierConfig, build_pair_verifier
from e2espk.scoring.backends import Backend, backend_from_dict
from e2espk.scoring.metrics import ScoringInputError
from e2espk.scoring.score_fusion import LogisticFusion
from e2espk.scoring.scores import score_all
from e2espk.scoring.side_scores import SideScore, side_score_from_dict


@dataclasses.dataclass
class EmbeddingSystem:
    """What eval and embed need from a checkpoint: no classification head, no optimizer."""

    model: SpeakerEmbeddingModel
    verifier: PairVerifier | None
    layout: InputLayout
    train_config: dict[str, Any]
    epoch: int
    # fitted on the validation trials by train.py; None in checkpoints from before it was
    # stored, which then fuse by the z-normalised mean (e2espk.scoring.scores.fuse)
    score_fusion: LogisticFusion | None = None
    # from the checkpoint (load_embedding_system); None only in a system assembled by hand,
    # which then embeds as the training options in ``train_config`` say
    contract: EmbeddingContract | None = None
    # the utterance-level scores its fusion weighs (``--side-scores``), by name
    side_scores: dict[str, SideScore] = dataclasses.field(default_factory=dict)
    # back-ends fitted on training embeddings at export whose scores the fusion weighs
    # (``--fusion-backends``), by score type; fusion inputs only, not reported on their own
    fusion_backends: dict[str, Backend] = dataclasses.field(default_factory=dict)
    # fitted on AS-normed validation scores (``--fusion-asnorm``; e2espk.inference.cohort)
    score_fusion_asnorm: LogisticFusion | None = None

    @property
    def cmvn(self) -> str:
        return self.normalization.mode

    @property
    def normalization(self) -> Normalization:
        """The CMN embeddings are made with; checkpoints from before ``cmvn_skip_streams``
        skip nothing."""
        if self.contract is not None:
            return self.contract.normalization
        return training_normalization(self.train_config)

    def embedding_contract(self) -> EmbeddingContract:
        """The checkpoint's contract (or, assembled by hand, the one ``train_config`` implies)."""
        if self.contract is not None:
            return self.contract
        window = training_window_seconds(self.train_config)
        return EmbeddingContract(self.model.config, self.layout, self.normalization, window)

    def extract(
        self,
        corpus: Corpus,
        rows: Sequence[int] | np.ndarray,
        options: ExtractionOptions | None = None,
        window_seconds: float | None = None,
    ) -> np.ndarray:
        """``(len(rows), latent)`` embeddings of ``rows`` of ``corpus`` under this system's
        contract; windows default to the length the model was validated with. With
        ``options.cache_path``, extraction resumes from (and adds to) that embedding cache
        (``e2espk.inference.embedding_cache``)."""
        contract = self.embedding_contract().with_window(window_seconds)
        return extract(self.model, corpus, [int(r) for r in rows], contract, options)

    def embed(
        self,
        corpus: Corpus,
        rows: Sequence[int] | np.ndarray,
        window_seconds: float | None = None,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        progress: bool = False,
        cache_path: str | Path | None = None,
    ) -> np.ndarray:
        """``extract`` in its call form from before ``ExtractionOptions``, kept for scripts."""
        options = ExtractionOptions(batch_size, device, progress, cache_path)
        return self.extract(corpus, rows, options, window_seconds)

    @property
    def side_streams(self) -> tuple[str, ...]:
        """The streams the side scores read (beside those the model reads)."""
        return tuple(dict.fromkeys(side.stream for side in self.side_scores.values()))

    def side_values(
        self, corpus: Corpus, rows: Sequence[int] | np.ndarray
    ) -> dict[str, np.ndarray]:
        """Each side score's value for ``rows`` of ``corpus`` (empty without side scores)."""
        return side_values(corpus, rows, self.side_scores) if self.side_scores else {}

    def score(
        self,
        embeddings: np.ndarray,
        idx_a: np.ndarray,
        idx_b: np.ndarray,
        device: str | torch.device = "cpu",
        side: Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Scores of the pairs ``(idx_a[k], idx_b[k])`` of rows of ``embeddings``: cosine;
        learned with a verifier; each side score, from ``side`` (``side_values`` of the same
        rows); fused by the checkpoint's fitted fusion."""
        missing = [name for name in self.side_scores if name not in (side or {})]
        if missing:
            raise ValueError(f"score() needs the side values {missing} (see side_values())")
        trial_side = {
            name: self.side_scores[name].score_pairs(np.asarray(values), idx_a, idx_b)
            for name, values in (side or {}).items()
            if name in self.side_scores
        }
        inputs = {
            name: backend.score_pairs(backend.transform(embeddings), idx_a, idx_b)
            for name, backend in self.fusion_backends.items()
        }
        scores = score_all(
            embeddings,
            idx_a,
            idx_b,
            self.verifier,
            device,
            self.score_fusion,
            trial_side | inputs,
        )
        return {name: values for name, values in scores.items() if name not in inputs}


def load_embedding_system(path: str | Path, device: str | torch.device = "cpu") -> EmbeddingSystem:
    """Rebuild the embedding model (and verification network) from a checkpoint alone."""
    payload = load_checkpoint(path, "cpu")
    try:
        contract = EmbeddingContract.from_checkpoint(payload)
        model = build_speaker_model(contract.model_config)
        model.load_state_dict(payload["model"])
        verifier = None
        if payload.get("verifier") is not None:
            verifier = build_pair_verifier(
                VerifierConfig.from_dict(payload["verifier_config"]),
                contract.model_config.latent_size,
            )
            verifier.load_state_dict(payload["verifier"])
        fusion = payload.get("score_fusion")
        score_fusion = None if fusion is None else LogisticFusion.from_dict(fusion)
        side_scores = {}
        for saved in payload.get("side_scores") or []:  # absent before --side-scores
            side = side_score_from_dict(saved)
            side_scores[side.name] = side
        fusion_backends = {}
        for saved in payload.get("fusion_backends") or []:  # absent before --fusion-backends
            backend = backend_from_dict(saved)
            fusion_backends[backend.score_name] = backend
        saved_asnorm = payload.get("score_fusion_asnorm")
        score_fusion_asnorm = (
            None if saved_asnorm is None else LogisticFusion.from_dict(saved_asnorm)
        )
        known = {"cosine", "learned", *side_scores, *fusion_backends}
        for fusion in (score_fusion, score_fusion_asnorm):
            unknown = [name for name in (fusion.inputs if fusion else ()) if name not in known]
            if unknown:
                raise ScoringInputError(
                    f"its score fusion weighs {', '.join(unknown)}, which the checkpoint does "
                    "not say how to compute (no such side score or fusion back-end)"
                )
    except (KeyError, TypeError, RuntimeError, ScoringInputError, ConfigError) as error:
        raise InputDataError(
            path, f"checkpoint does not match this e2espk's models ({error})"
        ) from None
    modules = {"model": model, "verifier": verifier}
    for part, module in modules.items():
        for name, tensor in module.state_dict().items() if module is not None else ():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise InputDataError(
                    path, f"{part} weight {name!r} holds NaN/Inf values: the checkpoint is corrupt"
                )
    model.to(device).eval()
    if verifier is not None:
        verifier.to(device).eval()
    return EmbeddingSystem(
        model,
        verifier,
        contract.layout,
        payload["train_config"],
        int(payload["epoch"]),
        score_fusion,
        contract,
        side_scores,
        fusion_backends,
        score_fusion_asnorm,
    )
