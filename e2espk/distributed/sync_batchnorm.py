"""``--sync-bn``: BatchNorm statistics over the global batch, on CUDA and on the CPU.

torch's ``nn.SyncBatchNorm`` runs on GPUs only; :class:`GlooSyncBatchNorm` does the same on the
CPU (gloo) with two differentiable all-reduces per layer, the batch mean and then the centred sum of
squares (the two-pass variance a single-process BatchNorm computes). In eval mode, and with a
single rank, both are plain BatchNorm.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from e2espk.distributed.collectives import all_reduce_sum


class GlooSyncBatchNorm(_BatchNorm):
    """BatchNorm over ``(B, C, ...)`` whose training statistics cover every rank's batch."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        syncing = (
            self.training
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size() > 1
        )
        if not syncing:
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input.float()
        count = x.new_tensor([x.numel() / x.shape[1]])
        total = all_reduce_sum(torch.cat([x.sum(dim=dims), count]))
        n = total[-1]
        mean = total[:-1] / n
        centred = x - mean.view(shape)
        var = all_reduce_sum((centred * centred).sum(dim=dims)) / n  # biased, as BatchNorm uses
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), n.detach())
        return out.to(input.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, n: Tensor) -> None:
        assert self.running_mean is not None and self.running_var is not None
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * n / (n - 1).clamp(min=1)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with its BatchNorm layers syncing over the process group: torch's
    SyncBatchNorm on CUDA, :class:`GlooSyncBatchNorm` elsewhere. Parameters and buffers are
    kept (the same tensors), so an optimizer built before still holds them, and a checkpoint's
    state dict has the same keys."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    if isinstance(module, _BatchNorm) and not isinstance(
        module, (nn.SyncBatchNorm, GlooSyncBatchNorm)
    ):
        converted = GlooSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats,
        )  # fmt: skip
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, _convert_cpu(child))
    return module
