"""The verifier's binary cross-entropy loss on pairs mined within a batch.

By default every same-speaker pair in the batch is used, with an equal number of random
different-speaker pairs (there are far more of those), so the verifier sees balanced classes;
``PairLossOptions`` chooses another miner (``e2espk.losses.mining``), the class ratio, label
smoothing, and whether the pair loss trains the embedding network at all.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from e2espk.errors import ConfigError
from e2espk.losses.mining import PAIR_MINERS, mine_pairs

if TYPE_CHECKING:
    from e2espk.models.verification import PairVerifier

__all__ = ["PairLossOptions", "mine_pairs", "pair_loss"]


@dataclasses.dataclass(frozen=True)
class PairLossOptions:
    """How the pair loss picks and weighs its pairs (train.py's ``--pair-*`` flags)."""

    mining: str = "random"  # PAIR_MINERS name: random | hard | semi_hard
    negatives_per_positive: float = 1.0  # different pairs per same pair (0: all of them)
    label_smoothing: float = 0.0  # BCE targets become eps/2 and 1 - eps/2
    # True: the verifier learns on the embeddings, but the pair loss sends no gradient into
    # the embedding network (which then learns from the margin loss alone)
    detach: bool = False

    def __post_init__(self) -> None:
        PAIR_MINERS.canonical(self.mining)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"pair label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.negatives_per_positive < 0:
            raise ConfigError(
                f"negatives per positive must be >= 0 (0: all), got {self.negatives_per_positive}"
            )


def pair_loss(
    verifier: PairVerifier,
    emb: Tensor,
    labels: Tensor,
    generator: torch.Generator | None = None,
    balance: bool = True,
    options: PairLossOptions | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Binary cross-entropy of the verifier on the pairs mined from ``(emb, labels)``.

    The loss is averaged over pairs and over the verifier's heads. A batch without any pair
    (e.g. every speaker once, balanced) gives a zero loss that still depends on the graph.
    ``balance=False`` keeps every different pair (as ``negatives_per_positive=0``).

    Returns:
        ``(loss, stats)`` with stats ``pair_loss``, ``pairs`` (count), ``same_pairs`` and
        ``pair_accuracy`` (of the averaged logits, threshold 0).
    """
    options = options or PairLossOptions()
    ratio = options.negatives_per_positive if balance else 0.0
    idx_a, idx_b, same = PAIR_MINERS.get(options.mining)(labels, emb, ratio, generator)
    if idx_a.numel() == 0:
        loss = emb.sum() * 0.0
        return loss, {"pair_loss": 0.0, "pairs": 0.0, "same_pairs": 0.0, "pair_accuracy": 0.0}
    inputs = emb.detach() if options.detach else emb
    logits = verifier(inputs[idx_a], inputs[idx_b])  # (P, heads)
    target = same.to(logits.dtype).unsqueeze(1).expand_as(logits)
    if options.label_smoothing:
        target = target * (1.0 - options.label_smoothing) + 0.5 * options.label_smoothing
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
