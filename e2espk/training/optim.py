"""Optimizers (registry) and learning-rate schedules.

Step-based schedules are pure functions ``lr_at(step)``; ``plateau`` reacts to the validation
metric. ``LRSchedule`` applies either to an optimizer and saves its state in checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from e2espk.registry import Registry

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")


@OPTIMIZERS.register("adam")
def adam(
    params: Iterable, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    """Adam with L2 added to the gradient (classic ``--l2``); ``momentum`` sets beta1."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=(momentum, 0.999))


@OPTIMIZERS.register("adamw")
def adamw(
    params: Iterable, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    """AdamW: decoupled weight decay."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(momentum, 0.999))


@OPTIMIZERS.register("sgd")
def sgd(params: Iterable, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum)


@OPTIMIZERS.register("sgd_nesterov", "nesterov")
def sgd_nesterov(
    params: Iterable, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=momentum > 0
    )


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
    """Parameters of a learning-rate schedule, in optimizer steps."""

    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    min_lr_ratio: float = 0.01
    step_every: int = 1000  # 'step' schedule: steps between decays
    step_gamma: float = 0.5
    plateau_patience: int = 2  # 'plateau': validations without improvement before decaying
    plateau_factor: float = 0.5


SCHEDULES: Registry[Callable[[ScheduleSpec, int], float]] = Registry("scheduler")


def warmup_factor(spec: ScheduleSpec, step: int) -> float:
    return min(1.0, (step + 1) / spec.warmup_steps) if spec.warmup_steps > 0 else 1.0


@SCHEDULES.register("cosine", "warmup_cosine")
def cosine_lr(spec: ScheduleSpec, step: int) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio * base_lr`` at ``total_steps``."""
    if step < spec.warmup_steps:
        return spec.base_lr * warmup_factor(spec, step)
    span = max(spec.total_steps - spec.warmup_steps, 1)
    progress = min((step - spec.warmup_steps) / span, 1.0)
    floor = spec.base_lr * spec.min_lr_ratio
    return floor + (spec.base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@SCHEDULES.register("step")
def step_lr(spec: ScheduleSpec, step: int) -> float:
    decays = max(step - spec.warmup_steps, 0) // max(spec.step_every, 1)
    return spec.base_lr * warmup_factor(spec, step) * spec.step_gamma**decays


@SCHEDULES.register("constant")
def constant_lr(spec: ScheduleSpec, step: int) -> float:
    return spec.base_lr * warmup_factor(spec, step)


@SCHEDULES.register("plateau")
def plateau_lr(spec: ScheduleSpec, step: int) -> float:
    """Warmup only; decays come from ``LRSchedule.observe`` when validation stalls."""
    return spec.base_lr * warmup_factor(spec, step)


class LRSchedule:
    """Sets the optimizer's learning rate each step; tracks plateaus of the validation metric."""

    def __init__(self, name: str, spec: ScheduleSpec, optimizer: torch.optim.Optimizer) -> None:
        self.name = SCHEDULES.canonical(name)
        self.spec = spec
        self.optimizer = optimizer
        self.scale = 1.0  # plateau decays multiply this
        self.best: float | None = None
        self.bad_validations = 0

    def lr_at(self, step: int) -> float:
        return SCHEDULES.get(self.name)(self.spec, step) * self.scale

    def apply(self, step: int) -> float:
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def observe(self, metric: float) -> None:
        """Report a validation metric (lower is better); decays on plateau for 'plateau'."""
        if self.name != "plateau":
            return
        if self.best is None or metric < self.best - 1e-6:
            self.best, self.bad_validations = metric, 0
            return
        self.bad_validations += 1
        if self.bad_validations >= self.spec.plateau_patience:
            self.scale *= self.spec.plateau_factor
            self.bad_validations = 0

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "best": self.best, "bad_validations": self.bad_validations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = state["scale"]
        self.best = state["best"]
        self.bad_validations = state["bad_validations"]
