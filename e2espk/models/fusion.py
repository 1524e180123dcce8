"""Fusion of the PTM and handcrafted streams into one ``(B, C, T)`` sequence.

The streams come at different frame rates (PTM 50 Hz, handcrafted 100 Hz) and their lengths
rarely divide exactly, so every fusion first aligns them with ``align_streams``: handcrafted
frames are average-pooled onto the PTM time axis, and a pooled PTM (T = 1) is broadcast over the
handcrafted frames.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from e2espk.errors import ConfigError
from e2espk.registry import Registry


class FusionOptions(Protocol):
    """The fusion options of a model config (``ModelConfig`` has them). A protocol rather than
    ``ModelConfig`` itself: the config module imports this one to check fusion names."""

    hidden_size: int  # channels C the fusion emits
    attention_heads: int
    fusion_direction: str
    gate_granularity: str
    dropout: float


def align_streams(ptm: Tensor, handcrafted: Tensor) -> tuple[Tensor, Tensor]:
    """Bring ``(B, C1, T1)`` PTM and ``(B, C2, T2)`` handcrafted features to one length.

    The PTM time axis wins (it is the slower one, so handcrafted frames are averaged, not
    invented); a PTM of length 1 (pooled, or a single frame) is broadcast over the handcrafted
    frames instead.
    ``adaptive_avg_pool1d`` covers any ratio, so off-by-one lengths need no special case.
    """
    t_ptm, t_hc = ptm.shape[-1], handcrafted.shape[-1]
    if t_ptm == 1:
        return ptm.expand(-1, -1, t_hc), handcrafted
    if t_hc != t_ptm:
        handcrafted = F.adaptive_avg_pool1d(handcrafted, t_ptm)
    return ptm, handcrafted


class Fusion(nn.Module):
    """Base class: ``forward(ptm (B, C1, T1), handcrafted (B, C2, T2)) -> (B, out_dim, T)``."""

    out_dim: int

    @classmethod
    def from_config(cls, ptm_dim: int, hc_dim: int, config: FusionOptions) -> Fusion:
        """Build from the model config; subclasses pick the options they use."""
        return cls(ptm_dim, hc_dim, config.hidden_size)


FUSIONS: Registry[type[Fusion]] = Registry("fusion")


def _project(in_dim: int, out_dim: int) -> nn.Module:
    """1x1 conv to ``out_dim`` channels, or nothing when the width already matches."""
    return nn.Identity() if in_dim == out_dim else nn.Conv1d(in_dim, out_dim, 1)


@FUSIONS.register("concat")
class ConcatFusion(Fusion):
    """Concatenate channels, then a 1x1 convolution: the simplest early fusion."""

    def __init__(self, ptm_dim: int, hc_dim: int, out_dim: int) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.proj = nn.Conv1d(ptm_dim + hc_dim, out_dim, 1)

    def forward(self, ptm: Tensor, handcrafted: Tensor) -> Tensor:
        ptm, handcrafted = align_streams(ptm, handcrafted)
        return self.proj(torch.cat([ptm, handcrafted], dim=1))


@FUSIONS.register("cross_attention")
class CrossAttentionFusion(Fusion):
    """PTM frames attend to handcrafted frames (and, with ``direction="both"``, vice versa).

    Lets each PTM frame pick the handcrafted frames that complement it rather than assuming a
    fixed frame-to-frame correspondence. Residual connection and LayerNorm as in a Transformer.

    Args:
        ptm_dim, hc_dim: input channels of the two streams.
        out_dim: output channels; also the attention width (must be divisible by ``heads``).
        heads: attention heads.
        direction: "ptm_to_hc" (PTM queries only) or "both" (both ways, concatenated and
            projected back to ``out_dim``).
        dropout: attention dropout.
    """

    def __init__(
        self,
        ptm_dim: int,
        hc_dim: int,
        out_dim: int,
        heads: int = 4,
        direction: str = "ptm_to_hc",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if direction not in ("ptm_to_hc", "both"):
            raise ConfigError(f"fusion_direction must be 'ptm_to_hc' or 'both', got {direction!r}")
        if out_dim % heads:
            raise ConfigError(f"attention heads ({heads}) must divide the width ({out_dim})")
        self.out_dim = out_dim
        self.direction = direction
        self.ptm_in = _project(ptm_dim, out_dim)
        self.hc_in = _project(hc_dim, out_dim)
        self.ptm_attn = nn.MultiheadAttention(out_dim, heads, dropout=dropout, batch_first=True)
        self.ptm_norm = nn.LayerNorm(out_dim)
        if direction == "both":
            self.hc_attn = nn.MultiheadAttention(out_dim, heads, dropout=dropout, batch_first=True)
            self.hc_norm = nn.LayerNorm(out_dim)
            self.out_proj = nn.Conv1d(2 * out_dim, out_dim, 1)

    @classmethod
    def from_config(cls, ptm_dim: int, hc_dim: int, config: FusionOptions) -> Fusion:
        return cls(
            ptm_dim,
            hc_dim,
            config.hidden_size,
            heads=config.attention_heads,
            direction=config.fusion_direction,
            dropout=config.dropout,
        )

    def forward(self, ptm: Tensor, handcrafted: Tensor) -> Tensor:
        ptm, handcrafted = align_streams(ptm, handcrafted)
        p = self.ptm_in(ptm).transpose(1, 2)  # (B, T, C)
        h = self.hc_in(handcrafted).transpose(1, 2)  # (B, T, C)
        p_att = self.ptm_norm(p + self.ptm_attn(p, h, h, need_weights=False)[0])
        if self.direction == "ptm_to_hc":
            return p_att.transpose(1, 2)
        h_att = self.hc_norm(h + self.hc_attn(h, p, p, need_weights=False)[0])
        return self.out_proj(torch.cat([p_att, h_att], dim=2).transpose(1, 2))


@FUSIONS.register("gating")
class GatingFusion(Fusion):
    """Learned convex mix ``g * p + (1 - g) * h`` with ``g = sigmoid(W [p; h])``.

    The gate shows how much the model relies on each stream; ``last_gate`` keeps the values of
    the latest forward pass (detached) so training can log their statistics.

    Args:
        ptm_dim, hc_dim: input channels of the two streams (projected to ``out_dim`` first).
        out_dim: output channels.
        granularity: "frame" (one scalar gate per frame) or "channel" (one gate per channel and
            frame).
    """

    def __init__(self, ptm_dim: int, hc_dim: int, out_dim: int, granularity: str = "frame") -> None:
        super().__init__()
        if granularity not in ("frame", "channel"):
            raise ConfigError(f"gate_granularity must be 'frame' or 'channel', got {granularity!r}")
        self.out_dim = out_dim
        self.granularity = granularity
        self.ptm_in = _project(ptm_dim, out_dim)
        self.hc_in = _project(hc_dim, out_dim)
        self.gate = nn.Conv1d(2 * out_dim, 1 if granularity == "frame" else out_dim, 1)
        self.last_gate: Tensor | None = None  # (B, 1 or C, T), share given to the PTM stream

    @classmethod
    def from_config(cls, ptm_dim: int, hc_dim: int, config: FusionOptions) -> Fusion:
        return cls(ptm_dim, hc_dim, config.hidden_size, granularity=config.gate_granularity)

    def forward(self, ptm: Tensor, handcrafted: Tensor) -> Tensor:
        ptm, handcrafted = align_streams(ptm, handcrafted)
        p, h = self.ptm_in(ptm), self.hc_in(handcrafted)
        gate = torch.sigmoid(self.gate(torch.cat([p, h], dim=1)))
        self.last_gate = gate.detach()
        return gate * p + (1.0 - gate) * h

    def gate_statistics(self) -> dict[str, float] | None:
        """Mean/std/min/max of the last gate values (the PTM stream's share), or None."""
        if self.last_gate is None:
            return None
        gate = self.last_gate.float()
        return {
            "mean": gate.mean().item(),
            "std": gate.std(unbiased=False).item(),
            "min": gate.min().item(),
            "max": gate.max().item(),
        }
