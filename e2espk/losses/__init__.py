"""Training losses: margin classification heads and the pairwise verifier loss."""

from e2espk.losses.joint import JointLoss
from e2espk.losses.margin import MARGIN_HEADS, MarginHead
from e2espk.losses.mining import PAIR_MINERS
from e2espk.losses.pairwise import PairLossOptions, mine_pairs, pair_loss

__all__ = [
    "MARGIN_HEADS",
    "PAIR_MINERS",
    "JointLoss",
    "MarginHead",
    "PairLossOptions",
    "mine_pairs",
    "pair_loss",
]
