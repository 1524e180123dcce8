"""Pair mining within a batch and the verifier's binary cross-entropy loss.

Every same-speaker pair in the batch is used, with an equal number of random different-speaker
pairs (there are far more of those), so the verifier sees balanced classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from e2espk.models.verification import PairVerifier


def mine_pairs(
    labels: Tensor, generator: torch.Generator | None = None, balance: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """All same-speaker pairs ``i < j`` of a batch plus as many random different-speaker pairs.

    Args:
        labels: ``(B,)`` speaker ids.
        generator: a CPU generator for reproducible sampling of the different pairs.
        balance: keep only as many different pairs as there are same pairs (all of them when
            there are fewer); False keeps every different pair.

    Returns:
        ``(idx_a, idx_b, same)``: ``(P,)`` row indices into the batch and a ``(P,)`` bool
        target; same pairs come first, each in ``i < j`` order.
    """
    n = labels.numel()
    i, j = torch.triu_indices(n, n, offset=1, device=labels.device)
    same = labels[i] == labels[j]
    same_a, same_b = i[same], j[same]
    diff_a, diff_b = i[~same], j[~same]
    if balance and diff_a.numel() > same_a.numel():
        keep = torch.randperm(diff_a.numel(), generator=generator)[: same_a.numel()]
        keep = keep.to(labels.device)
        diff_a, diff_b = diff_a[keep], diff_b[keep]
    target = torch.cat(
        [
            torch.ones_like(same_a, dtype=torch.bool),
            torch.zeros_like(diff_a, dtype=torch.bool),
        ]
    )
    return torch.cat([same_a, diff_a]), torch.cat([same_b, diff_b]), target


def pair_loss(
    verifier: PairVerifier,
    emb: Tensor,
    labels: Tensor,
    generator: torch.Generator | None = None,
    balance: bool = True,
) -> tuple[Tensor, dict[str, float]]:
    """Binary cross-entropy of the verifier on the pairs mined from ``(emb, labels)``.

    The loss is averaged over pairs and over the verifier's heads. A batch without any pair
    (e.g. every speaker once, balanced) gives a zero loss that still depends on the graph.

    Returns:
        ``(loss, stats)`` with stats ``pair_loss``, ``pairs`` (count), ``same_pairs`` and
        ``pair_accuracy`` (of the averaged logits, threshold 0).
    """
    idx_a, idx_b, same = mine_pairs(labels, generator=generator, balance=balance)
    if idx_a.numel() == 0:
        loss = emb.sum() * 0.0
        return loss, {"pair_loss": 0.0, "pairs": 0.0, "same_pairs": 0.0, "pair_accuracy": 0.0}
    logits = verifier(emb[idx_a], emb[idx_b])  # (P, heads)
    target = same.to(logits.dtype).unsqueeze(1).expand_as(logits)
    loss = F.binary_cross_entropy_with_logits(logits, target)
    with torch.no_grad():
        accuracy = ((logits.mean(dim=1) > 0) == same).float().mean()
    stats = {
        "pair_loss": float(loss.detach()),
        "pairs": float(same.numel()),
        "same_pairs": float(same.sum()),
        "pair_accuracy": float(accuracy),
    }
    return loss, stats
