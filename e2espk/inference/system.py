"""A trained system ready to use: the embedding model and verifier rebuilt from a checkpoint.

What eval, embed and training's exports need from a checkpoint: no classification head, no
optimizer. ``load_embedding_system`` builds it (and its ``EmbeddingContract``) once;
``EmbeddingSystem.extract`` embeds and ``EmbeddingSystem.score`` scores pairs of embeddings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2espk.data.corpus import Corpus
from e2espk.data.features import InputLayout
from e2espk.data.transforms import Normalization
from e2espk.errors import InputDataError
from e2espk.inference.checkpoint_file import (
    load_checkpoint,
    training_normalization,
    training_window_seconds,
)
from e2espk.inference.contract import EmbeddingContract, ExtractionOptions
from e2espk.inference.extraction import extract
from e2espk.models.speaker_model import SpeakerEmbeddingModel, build_speaker_model
from e2espk.models.verification import PairVerifier, VerifierConfig, build_pair_verifier
from e2espk.scoring.metrics import ScoringInputError
from e2espk.scoring.score_fusion import LogisticFusion
from e2espk.scoring.scores import score_all


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

    def score(
        self,
        embeddings: np.ndarray,
        idx_a: np.ndarray,
        idx_b: np.ndarray,
        device: str | torch.device = "cpu",
    ) -> dict[str, np.ndarray]:
        """Cosine, and with a verifier learned and fused, scores of the pairs ``(idx_a[k],
        idx_b[k])`` of rows of ``embeddings``, fused by the checkpoint's fitted fusion."""
        return score_all(embeddings, idx_a, idx_b, self.verifier, device, self.score_fusion)


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
    except (KeyError, RuntimeError, ScoringInputError) as error:
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
        score_fusion if verifier is not None else None,
        contract,
    )
