"""The training objective: a weighted sum of the margin loss and the pairwise verifier loss.

Either term can be switched off with a zero weight; it is then not computed at all, so a
pure-classification run never builds pairs and a pure-verifier run needs no classification head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from e2espk.errors import ConfigError
from e2espk.losses.margin import MarginHead
from e2espk.losses.pairwise import PairLossOptions, pair_loss

if TYPE_CHECKING:
    from e2espk.models.verification import PairVerifier


class JointLoss(nn.Module):
    """``total = margin_weight * margin_loss + pair_weight * pair_loss``.

    Holds the training-only modules (the margin head and the verifier) so one optimizer
    parameter group can cover them.

    Args:
        margin_head: classification head, required when ``margin_weight > 0``.
        verifier: pair verifier, required when ``pair_weight > 0``.
        margin_weight, pair_weight: non-negative weights, not both zero.
        pair_options: pair mining, label smoothing and detaching of the pair loss (default:
            all same pairs and as many random different pairs, gradients into the model).
    """

    def __init__(
        self,
        margin_head: MarginHead | None,
        verifier: PairVerifier | None,
        margin_weight: float = 1.0,
        pair_weight: float = 0.0,
        pair_options: PairLossOptions | None = None,
    ) -> None:
        super().__init__()
        if margin_weight < 0 or pair_weight < 0 or margin_weight + pair_weight == 0:
            raise ConfigError(
                "loss weights must be >= 0 and not both 0; got "
                f"margin_weight={margin_weight}, pair_weight={pair_weight}"
            )
        if margin_weight > 0 and margin_head is None:
            raise ConfigError("margin_weight > 0 needs a margin head (or set margin_weight=0)")
        if pair_weight > 0 and verifier is None:
            raise ConfigError("pair_weight > 0 needs a pair verifier (or set pair_weight=0)")
        self.margin_head = margin_head
        self.verifier = verifier
        self.margin_weight = margin_weight
        self.pair_weight = pair_weight
        self.pair_options = pair_options or PairLossOptions()

    def forward(
        self, emb: Tensor, labels: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """``(B, E)`` embeddings, ``(B,)`` speaker ids -> (total loss, stats for logging).

        Stats: ``loss`` and, per active term, ``margin_loss`` + ``accuracy`` (from the margin
        logits) and the ``pair_loss`` stats.
        """
        total = emb.new_zeros(())
        stats: dict[str, float] = {}
        if self.margin_weight > 0:
            assert self.margin_head is not None
            margin_loss, logits = self.margin_head(emb, labels)
            total = total + self.margin_weight * margin_loss
            stats["margin_loss"] = float(margin_loss.detach())
            stats["accuracy"] = float((logits.detach().argmax(dim=1) == labels).float().mean())
        if self.pair_weight > 0:
            assert self.verifier is not None
            verifier_loss, pair_stats = pair_loss(
                self.verifier, emb, labels, generator, options=self.pair_options
            )
            total = total + self.pair_weight * verifier_loss
            stats.update(pair_stats)
        stats["loss"] = float(total.detach())
        return total, stats
