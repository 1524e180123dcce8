"""DistributedDataParallel around what a training step runs: the speaker model, and the
training-only modules (margin head and verifier, held by the ``JointLoss``)."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from e2espk.distributed.process_group import DistContext
from e2espk.distributed.sharding import gather_batch
from e2espk.distributed.sync_batchnorm import convert_sync_batchnorm


@dataclasses.dataclass
class Replicas:
    """The DDP wrappers a training step calls. The wrapped modules stay what the rest of the
    run uses (state dicts, validation, checkpoints): DDP shares their parameters."""

    model: nn.Module  # DDP(speaker model)
    loss: nn.Module  # DDP(JointLoss): margin head and verifier
    context: DistContext

    def gather(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The global batch from this rank's slice (``sharding.gather_batch``)."""
        return gather_batch(embeddings, labels, self.context)


def replicate(
    model: nn.Module, loss: nn.Module, context: DistContext, device: torch.device, sync_bn: bool
) -> Replicas | None:
    """Wrap ``model`` and ``loss`` in DDP (None in a single process).

    DDP broadcasts rank 0's parameters and buffers at construction and averages gradients over
    the ranks in the backward pass, so clipping and the optimizer step that follow see the
    averaged gradient, as a single process would. With ``sync_bn`` the BatchNorm layers are
    converted first, in place (``convert_sync_batchnorm``).
    """
    if not context.active:
        return None
    if sync_bn:
        model = convert_sync_batchnorm(model, device)
        loss = convert_sync_batchnorm(loss, device)
    device_ids = [device.index] if device.type == "cuda" else None
    return Replicas(
        DistributedDataParallel(model, device_ids=device_ids),
        DistributedDataParallel(loss, device_ids=device_ids),
        context,
    )
