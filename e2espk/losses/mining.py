"""Which same/different-speaker pairs of a P x K batch the verifier trains on.

A batch of B crops holds B(B-1)/2 pairs, most of them different-speaker pairs that the verifier
separates after a few hundred steps. The miners pick ``negatives_per_positive`` different pairs
per same pair (0: every different pair):

- ``random``: every same pair and uniformly drawn different pairs (``mine_pairs``);
- ``hard``: each crop's hardest positive (its least similar same-speaker crop, by cosine) and
  the most similar different-speaker pairs;
- ``semi_hard``: the same positives, and the most similar different pairs that are still less
  similar than both crops' hardest positives (FaceNet's semi-hard negatives: hard, but not the
  outliers and label noise that the very hardest often are); when there are too few, the
  mildest of the others fill the budget.

Every miner returns ``(idx_a, idx_b, same)``: ``(P,)`` row indices into the batch and a
``(P,)`` bool target, same pairs first, each pair ``i < j``. Cosines are computed without
gradients: mining chooses pairs, it is not part of the loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from e2espk.registry import Registry

Miner = Callable[..., tuple[Tensor, Tensor, Tensor]]  # (labels, emb, ratio, generator)
PAIR_MINERS: Registry[Miner] = Registry("pair mining")


def negative_budget(n_positive: int, n_negative: int, negatives_per_positive: float) -> int:
    """How many different pairs to keep: ``round(ratio * positives)``, all of them for ratio 0."""
    if negatives_per_positive <= 0:
        return n_negative
    return min(n_negative, round(negatives_per_positive * n_positive))


def mine_pairs(
    labels: Tensor,
    generator: torch.Generator | None = None,
    balance: bool = True,
    negatives_per_positive: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """All same-speaker pairs ``i < j`` of a batch plus random different-speaker pairs.

    Args:
        labels: ``(B,)`` speaker ids.
        generator: a CPU generator for reproducible sampling of the different pairs.
        balance: keep only ``negatives_per_positive`` different pairs per same pair (all of
            them when there are fewer); False keeps every different pair.
        negatives_per_positive: different pairs per same pair when balancing (1: balanced
            classes; 0: every different pair).

    Returns:
        ``(idx_a, idx_b, same)``: ``(P,)`` row indices into the batch and a ``(P,)`` bool
        target; same pairs come first, each in ``i < j`` order.
    """
    n = labels.numel()
    i, j = torch.triu_indices(n, n, offset=1, device=labels.device)
    same = labels[i] == labels[j]
    same_a, same_b = i[same], j[same]
    diff_a, diff_b = i[~same], j[~same]
    budget = negative_budget(same_a.numel(), diff_a.numel(), negatives_per_positive)
    if balance and diff_a.numel() > budget:
        keep = torch.randperm(diff_a.numel(), generator=generator)[:budget]
        keep = keep.to(labels.device)
        diff_a, diff_b = diff_a[keep], diff_b[keep]
    return _joined(same_a, same_b, diff_a, diff_b)


@PAIR_MINERS.register("random")
def random_pairs(
    labels: Tensor,
    emb: Tensor,
    negatives_per_positive: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``mine_pairs``: the embeddings are not looked at."""
    return mine_pairs(labels, generator, negatives_per_positive > 0, negatives_per_positive)


@PAIR_MINERS.register("hard")
def hard_pairs(
    labels: Tensor,
    emb: Tensor,
    negatives_per_positive: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Hardest positive of each crop and the highest-cosine different-speaker pairs."""
    cosine = cosine_matrix(emb)
    pos_a, pos_b = hardest_positives(labels, cosine)
    diff_a, diff_b, diff_cos = _different_pairs(labels, cosine)
    budget = negative_budget(pos_a.numel(), diff_a.numel(), negatives_per_positive)
    order = torch.sort(diff_cos, descending=True, stable=True).indices[:budget]
    return _joined(pos_a, pos_b, diff_a[order], diff_b[order])


@PAIR_MINERS.register("semi_hard", "semihard")
def semi_hard_pairs(
    labels: Tensor,
    emb: Tensor,
    negatives_per_positive: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Hardest positives; the most similar different pairs below both crops' hardest positive."""
    cosine = cosine_matrix(emb)
    pos_a, pos_b = hardest_positives(labels, cosine)
    diff_a, diff_b, diff_cos = _different_pairs(labels, cosine)
    hardest = hardest_positive_cosine(labels, cosine)
    reference = torch.minimum(hardest[diff_a], hardest[diff_b])
    semi = diff_cos < reference
    # semi-hard ones first, most similar first (keys in [-1, 1]); then the others, mildest
    # (least similar) first (keys in [-4, -2])
    key = torch.where(semi, diff_cos, -diff_cos - 3.0)
    budget = negative_budget(pos_a.numel(), diff_a.numel(), negatives_per_positive)
    order = torch.sort(key, descending=True, stable=True).indices[:budget]
    return _joined(pos_a, pos_b, diff_a[order], diff_b[order])


@torch.no_grad()
def cosine_matrix(emb: Tensor) -> Tensor:
    """``(B, E)`` -> ``(B, B)`` cosine similarities, without gradients, in float32."""
    unit = F.normalize(emb.detach().float(), dim=-1)
    return unit @ unit.T


def hardest_positive_cosine(labels: Tensor, cosine: Tensor) -> Tensor:
    """``(B,)`` cosine of each crop's least similar same-speaker crop (+inf when it has none)."""
    return _masked_same(labels, cosine).min(dim=1).values


def hardest_positives(labels: Tensor, cosine: Tensor) -> tuple[Tensor, Tensor]:
    """Each crop paired with its least similar same-speaker crop, deduplicated, as ``i < j``
    pairs sorted by ``(i, j)``. With K = 2 crops per speaker these are all the same pairs."""
    n = labels.numel()
    masked = _masked_same(labels, cosine)
    has_positive = torch.isfinite(masked).any(dim=1)
    anchor = torch.arange(n, device=labels.device)[has_positive]
    partner = masked.argmin(dim=1)[has_positive]
    keys = torch.unique(torch.minimum(anchor, partner) * n + torch.maximum(anchor, partner))
    return keys // n, keys % n


def _masked_same(labels: Tensor, cosine: Tensor) -> Tensor:
    """The cosine matrix with every entry that is not a same-speaker pair (incl. the
    diagonal) set to +inf."""
    same = labels[:, None] == labels[None, :]
    same.fill_diagonal_(False)
    return cosine.masked_fill(~same, float("inf"))


def _different_pairs(labels: Tensor, cosine: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    n = labels.numel()
    i, j = torch.triu_indices(n, n, offset=1, device=labels.device)
    different = labels[i] != labels[j]
    i, j = i[different], j[different]
    return i, j, cosine[i, j]


def _joined(
    same_a: Tensor, same_b: Tensor, diff_a: Tensor, diff_b: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    target = torch.cat(
        [torch.ones_like(same_a, dtype=torch.bool), torch.zeros_like(diff_a, dtype=torch.bool)]
    )
    return torch.cat([same_a, diff_a]), torch.cat([same_b, diff_b]), target
