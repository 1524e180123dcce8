"""What decides an embedding, and how it is extracted: two small objects instead of long lists.

``EmbeddingContract`` holds everything the numbers depend on besides the weights: the model's
config, the input layout, the CMN and the window length. Two embeddings are comparable only
under the same contract, so it is built once (from the run's options in training, from the
checkpoint in eval and embed), stored in every checkpoint and keys the embedding cache.
``ExtractionOptions`` holds what changes speed, memory and resumability but never the numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from e2espk.data.features import InputLayout
from e2espk.data.transforms import Normalization
from e2espk.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class EmbeddingContract:
    """The model, its inputs, their CMN and the window length embeddings are made with."""

    model_config: ModelConfig
    layout: InputLayout
    normalization: Normalization = Normalization()
    window_seconds: float = 4.0  # windows averaged per utterance (training validates with it)

    def with_window(self, seconds: float | None) -> EmbeddingContract:
        """This contract with another window length (eval/embed ``--window-seconds``); ``None``
        keeps the checkpoint's."""
        return dataclasses.replace(self, window_seconds=seconds) if seconds else self

    def to_checkpoint(self) -> dict[str, Any]:
        """The checkpoint keys that store the contract (``model_config`` and ``layout`` are the
        ones checkpoints always had)."""
        return {
            "model_config": self.model_config.to_dict(),
            "layout": self.layout.to_dict(),
            "normalization": {
                "mode": self.normalization.mode,
                "skip": list(self.normalization.skip),
            },
            "window_seconds": self.window_seconds,
        }

    @classmethod
    def from_checkpoint(cls, payload: Mapping[str, Any]) -> EmbeddingContract:
        """Inverse of ``to_checkpoint``; older checkpoints go through ``upgrade_checkpoint``
        first (``load_checkpoint`` does), which fills the keys they lack."""
        normalization = payload["normalization"]
        return cls(
            ModelConfig.from_dict(payload["model_config"]),
            InputLayout.from_dict(payload["layout"]),
            Normalization(str(normalization["mode"]), tuple(map(str, normalization["skip"]))),
            float(payload["window_seconds"]),
        )

    def cache_key(self, model_fingerprint: str, corpus: dict[str, Any]) -> dict[str, Any]:
        """What an embedding cache is keyed on: this contract, the weights' fingerprint and the
        corpus file's (``e2espk.inference.embedding_cache``). The same keys and values as
        before the contract existed, so existing caches stay valid."""
        return {
            "model": model_fingerprint,
            "model_config": self.model_config.to_dict(),
            "layout": dataclasses.asdict(self.layout),
            "window_seconds": self.window_seconds,
            "cmvn": self.normalization.cache_key(),
            "corpus": corpus,
        }


@dataclasses.dataclass(frozen=True)
class ExtractionOptions:
    """How to extract: none of these changes an embedding."""

    batch_size: int = 64  # windows per forward pass (caps memory whatever the lengths)
    device: str | torch.device = "cpu"
    progress: bool = False
    # an embedding cache file to resume from and add to; None: no cache
    cache_path: str | Path | None = None
    segment_size: int = 512  # with a cache: utterances embedded between two stores
