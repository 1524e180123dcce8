"""Stream encoders: bring PTM hidden states and handcrafted frames to ``(B, C, T)``.

Both encoders emit the same channel count (``hidden_size``) so that fusion and backbones can
treat the streams alike. Inputs arrive time-major, as stored; everything after is channels-first.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from e2espk.errors import ConfigError


class PtmEncoder(nn.Module):
    """Learned softmax-weighted sum of PTM layers, normalisation and a projection.

    Which layers carry speaker information differs between PTMs, so the mix is learned (SUPERB
    style) and its weights are exposed for logging.

    Args:
        n_layers: L, hidden states per frame.
        dim: D, dims per hidden state.
        out_dim: output channels C.
        norm: "layer" (LayerNorm over D per frame), "instance" (each of the D dims normalised
            over time, per utterance) or "none".
        dropout: dropout on the projected features.
        layer_dropout: in training, each layer is left out of each example's mix with this
            probability (at least one is always kept) and the softmax weights are renormalised
            over the kept ones, so the model cannot come to rely on one layer alone.
        time_masks, time_mask_frames: in training, this many spans of up to this many frames
            per example are replaced by the example's mean frame after the layer mix (the same
            as masking every layer, since the mix is linear, at 1/L of the cost).

    Both augmentations draw from torch's RNG, like dropout, and are inactive in eval mode.
    """

    def __init__(
        self,
        n_layers: int,
        dim: int,
        out_dim: int,
        norm: str = "layer",
        dropout: float = 0.0,
        layer_dropout: float = 0.0,
        time_masks: int = 0,
        time_mask_frames: int = 0,
    ) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.layer_dropout = layer_dropout
        self.time_masks = time_masks
        self.time_mask_frames = time_mask_frames
        self.dim = dim
        self.out_dim = out_dim
        self.norm_kind = norm
        # Zero logits = uniform weights at the start.
        self.layer_logits = nn.Parameter(torch.zeros(n_layers))
        self.norm: nn.Module
        if norm == "layer":
            self.norm = nn.LayerNorm(dim)
        elif norm in ("instance", "none"):
            self.norm = nn.Identity()  # instance norm is applied functionally over time
        else:
            raise ConfigError(f"ptm_norm must be one of: layer, instance, none; got {norm!r}")
        self.proj = nn.Linear(dim, out_dim)
        self.dropout = nn.Dropout(dropout)

    def layer_weights(self) -> Tensor:
        """Softmax probabilities of the L layers, detached, for logging."""
        return torch.softmax(self.layer_logits.detach(), dim=0)

    def mixing_weights(self, batch_size: int) -> Tensor:
        """The softmax layer weights ``(L,)``; in training with layer dropout, per example
        ``(B, L)`` and renormalised over the layers each example keeps."""
        if not (self.training and self.layer_dropout > 0 and self.n_layers > 1):
            return torch.softmax(self.layer_logits, dim=0)
        scores = torch.rand(batch_size, self.n_layers, device=self.layer_logits.device)
        # a layer is kept when its score clears the rate; the top score always is
        keep = (scores >= self.layer_dropout) | (scores == scores.amax(dim=1, keepdim=True))
        logits = self.layer_logits.expand(batch_size, -1).masked_fill(~keep, float("-inf"))
        return torch.softmax(logits, dim=1)

    def mask_frames(self, mixed: Tensor) -> Tensor:
        """Training: SpecAugment-style time masks over ``(B, T, D)`` mixed frames, each span of
        width uniform in ``[0, time_mask_frames]`` filled with the example's mean frame."""
        batch, frames = mixed.shape[:2]
        if not (self.training and self.time_masks and self.time_mask_frames) or frames < 2:
            return mixed
        device = mixed.device
        shape = (batch, self.time_masks, 1)
        widths = torch.randint(0, min(self.time_mask_frames, frames) + 1, shape, device=device)
        starts = (torch.rand(shape, device=device) * (frames - widths + 1)).long()
        t = torch.arange(frames, device=device)
        hit = ((t >= starts) & (t < starts + widths)).any(dim=1)  # (B, T)
        return torch.where(hit[..., None], mixed.mean(dim=1, keepdim=True), mixed)

    def forward(self, ptm: Tensor) -> Tensor:
        """``(B, T, L, D)`` frames -> ``(B, C, T)``; pooled ``(B, L, D)`` -> ``(B, C, 1)``."""
        if ptm.dim() == 3:
            ptm = ptm.unsqueeze(1)  # pooled: a single "frame"
        if ptm.dim() != 4 or ptm.shape[-2:] != (self.n_layers, self.dim):
            raise ConfigError(
                f"batch['ptm'] has shape {tuple(ptm.shape)}, but the model expects "
                f"(B, T, {self.n_layers}, {self.dim}) or pooled (B, {self.n_layers}, {self.dim}) "
                "(ptm_layers, ptm_dim in the model config)"
            )
        weights = self.mixing_weights(ptm.shape[0]).to(ptm.dtype)  # (L,) or (B, L)
        mixed = torch.einsum(f"btld,{'bl' if weights.dim() == 2 else 'l'}->btd", ptm, weights)
        mixed = self.mask_frames(mixed)  # (B, T, D)
        if self.norm_kind == "instance":  # statistics in float32: fp16 variance overflows
            frames = mixed.float()
            mean = frames.mean(dim=1, keepdim=True)
            std = frames.var(dim=1, keepdim=True, unbiased=False).add(1e-5).sqrt()
            mixed = ((frames - mean) / std).to(mixed.dtype)
        mixed = self.norm(mixed)
        return self.dropout(self.proj(mixed)).transpose(1, 2)  # (B, C, T)


class HandcraftedEncoder(nn.Module):
    """A small 1-D CNN over handcrafted frames (log-mel, MFCC, pitch ...).

    Gives the handcrafted stream local context and the same channel count as the PTM stream.

    Args:
        in_dim: F, concatenated handcrafted dims per frame.
        out_dim: output channels C.
        n_layers: Conv1d + BatchNorm + ReLU blocks.
        kernel_size: frames each block sees (time length is preserved).
        dropout: dropout on the output.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        n_layers: int = 2,
        kernel_size: int = 5,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim
        blocks: list[nn.Module] = []
        channels = in_dim
        for _ in range(n_layers):
            blocks += [
                nn.Conv1d(channels, out_dim, kernel_size, padding="same"),
                nn.BatchNorm1d(out_dim),
                nn.ReLU(),
            ]
            channels = out_dim
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)

    def forward(self, frames: Tensor) -> Tensor:
        """``(B, T_h, F)`` -> ``(B, C, T_h)``."""
        if frames.dim() != 3 or frames.shape[-1] != self.in_dim:
            raise ConfigError(
                f"batch['handcrafted'] has shape {tuple(frames.shape)}, but the model expects "
                f"(B, T, {self.in_dim}) (handcrafted_dim in the model config)"
            )
        return self.dropout(self.blocks(frames.transpose(1, 2)))
