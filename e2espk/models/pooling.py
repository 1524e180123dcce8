"""Temporal pooling: ``(B, C, T) -> (B, out_dim)`` utterance-level vectors.

Every pooling is built as ``POOLINGS.build(name, in_dim=C)`` and exposes ``out_dim``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from e2espk.registry import Registry

_EPS = 1e-5  # variance floor: keeps sqrt differentiable for constant (or T=1) inputs


class Pooling(nn.Module):
    """Base class; subclasses set ``out_dim``."""

    out_dim: int


POOLINGS: Registry[type[Pooling]] = Registry("pooling")


def _weighted_stats(x: Tensor, weights: Tensor) -> Tensor:
    """Mean and std over time of ``x`` (B, C, T) under ``weights`` summing to 1 over T."""
    mean = (x * weights).sum(dim=-1)
    var = ((x - mean.unsqueeze(-1)).pow(2) * weights).sum(dim=-1)  # centred: no cancellation
    return torch.cat([mean, var.clamp(min=_EPS).sqrt()], dim=1)


@POOLINGS.register("mean", "avg")
class MeanPooling(Pooling):
    """Average over time (``out_dim = C``)."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.out_dim = in_dim

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=-1)


@POOLINGS.register("stats", "tstp")
class StatsPooling(Pooling):
    """Mean and standard deviation over time, as in x-vectors (``out_dim = 2C``)."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.out_dim = 2 * in_dim

    def forward(self, x: Tensor) -> Tensor:
        weights = torch.full_like(x[:, :1], 1.0 / x.shape[-1])
        return _weighted_stats(x, weights)


@POOLINGS.register("attentive_stats", "asp")
class AttentiveStatsPooling(Pooling):
    """Channel- and context-dependent attentive statistics pooling (ECAPA-TDNN, sec. 2.4).

    Each channel gets its own attention over frames, and the attention sees the utterance's
    global mean and std next to each frame, so it can weigh frames relative to the utterance.

    Args:
        in_dim: channels C.
        bottleneck: width of the attention's hidden layer (128 in the paper).
        global_context: append the utterance mean/std to each frame's attention input.
    """

    def __init__(self, in_dim: int, bottleneck: int = 128, global_context: bool = True) -> None:
        super().__init__()
        self.out_dim = 2 * in_dim
        self.global_context = global_context
        attn_in = 3 * in_dim if global_context else in_dim
        self.attention = nn.Sequential(
            nn.Conv1d(attn_in, bottleneck, 1),
            nn.ReLU(),
            nn.BatchNorm1d(bottleneck),
            nn.Tanh(),
            nn.Conv1d(bottleneck, in_dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[-1]
        attn_in = x
        if self.global_context:
            uniform = torch.full_like(x[:, :1], 1.0 / t)
            mean, std = _weighted_stats(x, uniform).chunk(2, dim=1)
            context = [mean.unsqueeze(-1).expand(-1, -1, t), std.unsqueeze(-1).expand(-1, -1, t)]
            attn_in = torch.cat([x, *context], dim=1)
        weights = torch.softmax(self.attention(attn_in), dim=-1)  # (B, C, T)
        return _weighted_stats(x, weights)
