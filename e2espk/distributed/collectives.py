"""Collectives with gradients, over the default process group.

torch's ``torch.distributed.nn.functional`` does this but is deprecated as of torch 2.13 (its
suggested replacement is a private module); these two are the textbook definitions on public
collectives that gloo and NCCL both have.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, local: Tensor) -> Tensor:
        total = local.detach().clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        # every rank used the sum: a part's gradient is the sum of the ranks' gradients
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, local: Tensor) -> Tensor:
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local.detach().contiguous())
        ctx.rows = local.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        # each rank's loss used every part: sum the gradients, keep this rank's rows (an
        # all-reduce of the whole rather than a reduce-scatter, which gloo lacks; the gathered
        # tensors are embeddings and BatchNorm statistics, small)
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def all_reduce_sum(local: Tensor) -> Tensor:
    """Sum of ``local`` over the ranks, on every rank, differentiable."""
    return _AllReduceSum.apply(local)


def all_gather_cat(local: Tensor) -> Tensor:
    """Every rank's ``(n, ...)`` ``local`` (same shape on all), concatenated in rank order,
    differentiable: ``(world_size * n, ...)``."""
    return _AllGather.apply(local)
