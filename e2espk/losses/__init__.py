"""Training losses: margin classification heads and the pairwise verifier loss."""

from e2espk.losses.joint import JointLoss
from e2espk.losses.margin import MARGIN_HEADS, MarginHead
from e2espk.losses.pairwise import mine_pairs, pair_loss

__all__ = ["MARGIN_HEADS", "JointLoss", "MarginHead", "mine_pairs", "pair_loss"]
