"""Classification heads over training speakers: softmax, AM-softmax (CosFace), AAM (ArcFace).

Each head is built as ``MARGIN_HEADS.build(name, embedding_dim=E, n_classes=K, margin=m,
scale=s, label_smoothing=eps)`` and returns ``(loss, logits)`` from ``forward(emb, labels)``.
The heads are used for training only and are never part of the saved embedding model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from e2espk.errors import ConfigError
from e2espk.registry import Registry


class MarginHead(nn.Module):
    """Base: a weight per class and cross-entropy with optional label smoothing.

    Args:
        embedding_dim: E.
        n_classes: training speakers.
        margin: additive margin (cosine or angular, by subclass); ignored by ``softmax``.
        scale: logit scale s of the cosine heads; ignored by ``softmax``.
        label_smoothing: passed to ``F.cross_entropy``.
    """

    def __init__(
        self,
        embedding_dim: int,
        n_classes: int,
        margin: float = 0.2,
        scale: float = 30.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if n_classes < 2:
            raise ConfigError(f"a classification head needs at least 2 speakers, got {n_classes}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.embedding_dim = embedding_dim
        self.n_classes = n_classes
        self.scale = scale
        self.label_smoothing = label_smoothing
        self.weight = nn.Parameter(torch.empty(n_classes, embedding_dim))
        nn.init.xavier_normal_(self.weight)
        self.set_margin(margin)

    def set_margin(self, margin: float) -> None:
        """Change the margin (e.g. a margin warm-up schedule during training)."""
        self.margin = float(margin)

    def logits(self, emb: Tensor, labels: Tensor) -> Tensor:
        """``(B, K)`` logits with the margin applied to each row's target class."""
        raise NotImplementedError

    def forward(self, emb: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, E)`` embeddings and ``(B,)`` class ids -> (mean loss, ``(B, K)`` logits).

        The logits include the margin, so accuracy computed from them is a slight
        underestimate of the margin-free classification accuracy.
        """
        logits = self.logits(emb, labels)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return loss, logits

    def cosine(self, emb: Tensor) -> Tensor:
        """``(B, K)`` cosine similarity between embeddings and class weights."""
        return F.linear(F.normalize(emb, dim=-1), F.normalize(self.weight, dim=-1))


MARGIN_HEADS: Registry[type[MarginHead]] = Registry("margin head")


@MARGIN_HEADS.register("softmax")
class SoftmaxHead(MarginHead):
    """Plain linear classifier (with bias) and cross-entropy; ``margin``/``scale`` are unused."""

    def __init__(
        self,
        embedding_dim: int,
        n_classes: int,
        margin: float = 0.0,
        scale: float = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(embedding_dim, n_classes, margin, scale, label_smoothing)
        self.bias = nn.Parameter(torch.zeros(n_classes))

    def logits(self, emb: Tensor, labels: Tensor) -> Tensor:
        return F.linear(emb, self.weight, self.bias)


@MARGIN_HEADS.register("am_softmax", "cosface", "am")
class AmSoftmaxHead(MarginHead):
    """Additive cosine margin (CosFace / AM-softmax): target logit ``s * (cos θ - m)``."""

    def logits(self, emb: Tensor, labels: Tensor) -> Tensor:
        cosine = self.cosine(emb)
        target = F.one_hot(labels, self.n_classes).to(cosine.dtype)
        return self.scale * (cosine - self.margin * target)


@MARGIN_HEADS.register("aam_softmax", "arcface", "aam")
class AamSoftmaxHead(MarginHead):
    """Additive angular margin (ArcFace): target logit ``s * cos(θ + m)``.

    cos(θ + m) is not monotonic once θ + m > π; beyond that point (cos θ < cos(π - m)) the
    target logit becomes ``cos θ - m sin m`` (the usual ``th``/``mm`` fallback), which keeps it
    decreasing in θ. With ``easy_margin`` the margin applies only where cos θ > 0.

    Args:
        easy_margin: apply the margin only to targets with θ < π/2.
        (others as MarginHead; defaults m = 0.2, s = 30)
    """

    def __init__(
        self,
        embedding_dim: int,
        n_classes: int,
        margin: float = 0.2,
        scale: float = 30.0,
        label_smoothing: float = 0.0,
        easy_margin: bool = False,
    ) -> None:
        super().__init__(embedding_dim, n_classes, margin, scale, label_smoothing)
        self.easy_margin = easy_margin

    def set_margin(self, margin: float) -> None:
        self.margin = float(margin)
        self.cos_m = math.cos(self.margin)
        self.sin_m = math.sin(self.margin)
        self.th = math.cos(math.pi - self.margin)  # cos θ below this means θ + m > π
        self.mm = math.sin(math.pi - self.margin) * self.margin

    def logits(self, emb: Tensor, labels: Tensor) -> Tensor:
        cosine = self.cosine(emb)
        sine = (1.0 - cosine * cosine).clamp(0.0, 1.0).sqrt()
        phi = cosine * self.cos_m - sine * self.sin_m  # cos(θ + m)
        if self.easy_margin:
            phi = torch.where(cosine > 0, phi, cosine)
        else:
            phi = torch.where(cosine > self.th, phi, cosine - self.mm)
        target = F.one_hot(labels, self.n_classes).bool()
        return self.scale * torch.where(target, phi, cosine)
