"""The speaker embedding model: encoders -> (fusion) -> backbone -> pooling -> embedding.

The classification head is deliberately not part of it: eval and embed rebuild this model from
the checkpoint's ``ModelConfig`` alone and never need the training speakers.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from e2espk.errors import ConfigError, InputDataError
from e2espk.models.backbones import BACKBONES, Backbone
from e2espk.models.config import ModelConfig
from e2espk.models.encoders import HandcraftedEncoder, PtmEncoder
from e2espk.models.fusion import FUSIONS, Fusion, GatingFusion
from e2espk.models.input_stats import InputStatistics
from e2espk.models.pooling import POOLINGS, Pooling

logger = logging.getLogger(__name__)

PTM_KEY = "ptm"  # (B, T_p, L, D) frames or (B, L, D) pooled
HANDCRAFTED_KEY = "handcrafted"  # (B, T_h, F)


class SpeakerEmbeddingModel(nn.Module):
    """Maps a batch of features to ``(B, latent_size)`` speaker embeddings.

    Args:
        config: the architecture; validated here, so a bad one fails before any weights exist.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config.validate()
        hidden = config.hidden_size
        self.ptm_encoder: PtmEncoder | None = None
        self.handcrafted_encoder: HandcraftedEncoder | None = None
        self.fusion: Fusion | None = None
        if config.uses_ptm:
            assert config.ptm_layers is not None and config.ptm_dim is not None  # validated
            self.ptm_encoder = PtmEncoder(
                config.ptm_layers,
                config.ptm_dim,
                hidden,
                config.ptm_norm,
                config.dropout,
                config.ptm_layer_dropout,
                config.ptm_time_masks,
                config.ptm_time_mask_frames,
            )
        if config.uses_handcrafted:
            assert config.handcrafted_dim is not None  # validated
            self.handcrafted_encoder = HandcraftedEncoder(
                config.handcrafted_dim,
                hidden,
                config.handcrafted_layers,
                config.handcrafted_kernel,
                config.dropout,
            )
        if config.mode == "fusion":
            self.fusion = FUSIONS.get(config.fusion).from_config(hidden, hidden, config)
        frame_dim = self.fusion.out_dim if self.fusion is not None else hidden
        self.backbone: Backbone = BACKBONES.build(
            config.backbone,
            in_dim=frame_dim,
            channels=config.backbone_channels,
            dropout=config.dropout,
        )
        self.pooling: Pooling = POOLINGS.build(config.pooling, in_dim=self.backbone.out_dim)
        self.input_stats: InputStatistics | None = None
        if config.input_stats_columns:
            self.input_stats = InputStatistics(config.input_stats_columns)
        stats_dim = self.input_stats.out_dim if self.input_stats is not None else 0
        self.embedding = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(self.pooling.out_dim + stats_dim, config.latent_size),
            nn.BatchNorm1d(config.latent_size),
        )

    @property
    def latent_size(self) -> int:
        """Embedding dimension."""
        return self.config.latent_size

    def frames(self, batch: dict[str, Tensor]) -> Tensor:
        """Frame-level backbone output ``(B, C', T')``, before pooling."""
        ptm = hc = None
        if self.ptm_encoder is not None:
            ptm = self.ptm_encoder(self._stream(batch, PTM_KEY))
        if self.handcrafted_encoder is not None:
            hc = self.handcrafted_encoder(self._stream(batch, HANDCRAFTED_KEY))
        if self.fusion is not None:
            assert ptm is not None and hc is not None
            self._check_durations(batch[PTM_KEY], batch[HANDCRAFTED_KEY])
            encoded = self.fusion(ptm, hc)
        else:
            encoded = ptm if ptm is not None else hc
        return self.backbone(encoded)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """``{"ptm": ..., "handcrafted": ...}`` (the keys the mode needs) -> ``(B, latent)``."""
        pooled = self.pooling(self.frames(batch))
        if self.input_stats is not None:
            stats = self.input_stats(self._stream(batch, HANDCRAFTED_KEY)).to(pooled.dtype)
            pooled = torch.cat([pooled, stats], dim=1)
        return self.embedding(pooled)

    def ptm_layer_weights(self) -> Tensor | None:
        """Softmax weights of the PTM layers ``(L,)``, or None without a PTM stream."""
        return None if self.ptm_encoder is None else self.ptm_encoder.layer_weights()

    def gate_statistics(self) -> dict[str, float] | None:
        """Statistics of the last fusion gate (PTM share), or None unless fusion is gating."""
        if isinstance(self.fusion, GatingFusion):
            return self.fusion.gate_statistics()
        return None

    def _stream(self, batch: dict[str, Tensor], key: str) -> Tensor:
        """The batch entry ``key``, checked against the configured pooled/frame layout."""
        if key not in batch:
            raise ConfigError(
                f"mode {self.config.mode!r} needs batch[{key!r}], but the batch only has: "
                f"{', '.join(sorted(batch)) or 'nothing'}"
            )
        tensor = batch[key]
        if key == PTM_KEY:
            expected = 3 if self.config.ptm_pooled else 4
            if tensor.dim() != expected:
                layout = "pooled (B, L, D)" if self.config.ptm_pooled else "frames (B, T, L, D)"
                raise ConfigError(
                    f"batch['ptm'] has {tensor.dim()} dims {tuple(tensor.shape)}, but "
                    f"ptm_pooled={self.config.ptm_pooled} expects {layout}"
                )
        return tensor

    def _check_durations(self, ptm: Tensor, handcrafted: Tensor) -> None:
        """Fail when the two streams clearly do not cover the same audio (e.g. a wrong rate)."""
        tolerance = self.config.max_duration_mismatch
        if tolerance is None or self.config.ptm_pooled:
            return
        ptm_s = ptm.shape[1] / self.config.ptm_rate_hz
        hc_s = handcrafted.shape[1] / self.config.handcrafted_rate_hz
        # Relative tolerance, plus two frames of the slower stream so off-by-one never fails.
        slack = 2.0 / min(self.config.ptm_rate_hz, self.config.handcrafted_rate_hz)
        if abs(ptm_s - hc_s) > tolerance * max(ptm_s, hc_s) + slack:
            raise InputDataError(
                "batch",
                f"ptm covers {ptm_s:.2f} s ({ptm.shape[1]} frames at {self.config.ptm_rate_hz:g}"
                f" Hz) but handcrafted covers {hc_s:.2f} s ({handcrafted.shape[1]} frames at "
                f"{self.config.handcrafted_rate_hz:g} Hz); check the frame rates and crops "
                "(max_duration_mismatch in the model config)",
            )


def build_speaker_model(config: ModelConfig) -> SpeakerEmbeddingModel:
    """Build the embedding model from its config (e.g. ``ModelConfig.from_dict(ckpt[...])``)."""
    model = SpeakerEmbeddingModel(config)
    if config.mode == "ptm" and config.ptm_pooled and config.pooling != "mean":
        logger.warning(
            "pooled PTM has a single frame: %r pooling cannot learn anything over time there "
            "(its std part is constant); pooling 'mean' does the same with fewer parameters",
            config.pooling,
        )
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("speaker model %s/%s: %d parameters", config.mode, config.backbone, n_params)
    return model
