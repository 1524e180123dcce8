"""A trained system ready to use: the embedding model and verifier rebuilt from a checkpoint.

What eval, embed and training's exports need from a checkpoint: no classification head, no
optimizer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from e2espk.data.features import InputLayout
from e2espk.data.transforms import Normalization
from e2espk.errors import InputDataError
from e2espk.inference.checkpoint_file import load_checkpoint

if TYPE_CHECKING:
    from e2espk.models.speaker_model import SpeakerEmbeddingModel
    from e2espk.scoring.score_fusion import LogisticFusion


@dataclasses.dataclass
class EmbeddingSystem:
    """What eval and embed need from a checkpoint: no classification head, no optimizer."""

    model: SpeakerEmbeddingModel
    verifier: torch.nn.Module | None
    layout: InputLayout
    train_config: dict[str, Any]
    epoch: int
    # fitted on the validation trials by train.py; None in checkpoints from before it was
    # stored, which then fuse by the z-normalised mean (e2espk.scoring.scores.fuse)
    score_fusion: LogisticFusion | None = None

    @property
    def cmvn(self) -> str:
        return str(self.train_config.get("cmvn", "mean"))

    @property
    def normalization(self) -> Normalization:
        """The training run's CMN; checkpoints from before ``cmvn_skip_streams`` skip nothing."""
        skip = self.train_config.get("cmvn_skip_streams") or ()
        return Normalization(self.cmvn, tuple(str(name) for name in skip))

    def embed(
        self,
        corpus: Any,
        rows: Any,
        window_seconds: float | None = None,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        progress: bool = False,
        cache_path: str | Path | None = None,
    ) -> Any:
        """Embeddings of ``rows`` of ``corpus`` with this model's input layout and CMN; windows
        default to the length the model was validated with. With ``cache_path``, extraction
        resumes from (and adds to) that embedding cache (``e2espk.inference.embedding_cache``)."""
        from e2espk.inference.embedding_cache import (
            EmbeddingCache,
            corpus_fingerprint,
            model_fingerprint,
        )
        from e2espk.inference.extraction import extract_embeddings

        window = window_seconds or float(self.train_config.get("valid_window_seconds", 4.0))
        rows = [int(r) for r in rows]
        args = (
            self.model,
            corpus,
            self.layout,
            rows,
            window,
            batch_size,
            device,
            self.normalization,
        )
        if cache_path is None:
            return extract_embeddings(*args, progress=progress)
        key = {
            "model": model_fingerprint(self.model),
            "model_config": self.model.config.to_dict(),
            "layout": dataclasses.asdict(self.layout),
            "window_seconds": window,
            "cmvn": self.normalization.cache_key(),
            "corpus": corpus_fingerprint(corpus),
        }
        with EmbeddingCache(cache_path, key, len(corpus)) as cache:
            return extract_embeddings(*args, progress=progress, cache=cache)


def load_embedding_system(path: str | Path, device: str | torch.device = "cpu") -> EmbeddingSystem:
    """Rebuild the embedding model (and verification network) from a checkpoint alone."""
    from e2espk.models.config import ModelConfig
    from e2espk.models.speaker_model import build_speaker_model
    from e2espk.models.verification import VerifierConfig, build_pair_verifier
    from e2espk.scoring.metrics import ScoringInputError
    from e2espk.scoring.score_fusion import LogisticFusion

    payload = load_checkpoint(path, "cpu")
    try:
        model_config = ModelConfig.from_dict(payload["model_config"])
        model = build_speaker_model(model_config)
        model.load_state_dict(payload["model"])
        verifier = None
        if payload.get("verifier") is not None:
            verifier = build_pair_verifier(
                VerifierConfig.from_dict(payload["verifier_config"]), model_config.latent_size
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
        InputLayout.from_dict(payload["layout"]),
        payload["train_config"],
        int(payload["epoch"]),
        score_fusion if verifier is not None else None,
    )
