"""Which training speakers the model confuses: nearest class prototypes of the margin head.

Hard prototype mining (Thienpondt et al., "The IDLab VoxSRC-20 submission", 2020): the rows of
an AAM-softmax head are speaker prototypes, so cosine similarity between rows says which
speakers the embedding cannot yet tell apart. Batches built from groups of such speakers
(``SpeakerBatchSampler.set_neighbours``) put the hard negatives side by side.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def prototype_neighbours(weight: torch.Tensor, pool: int) -> np.ndarray:
    """``(classes, min(pool, classes - 1))`` indices of each class's most similar other classes
    by cosine of the head's ``(classes, dim)`` weight rows, most similar first."""
    prototypes = F.normalize(weight.detach().float().cpu(), dim=1)
    similarity = prototypes @ prototypes.T
    similarity.fill_diagonal_(-float("inf"))
    k = max(0, min(pool, len(prototypes) - 1))
    return similarity.topk(k, dim=1).indices.numpy()
