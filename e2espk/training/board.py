"""TensorBoard logging of a training run (losses, lr, metrics, layer weights, gates, histograms)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter


class TrainingBoard:
    """Thin wrapper over SummaryWriter with the tags e2espk writes."""

    def __init__(self, logdir: str | Path | None, purge_step: int | None = None) -> None:
        """``purge_step``: a resumed run's first step; events from there on that the
        interrupted run wrote are hidden, so no step appears twice. ``logdir`` None: write
        nothing (the ranks other than 0 of a distributed run)."""
        self.writer: SummaryWriter | _NoWriter = (
            SummaryWriter(log_dir=str(logdir), purge_step=purge_step)
            if logdir is not None
            else _NoWriter()
        )

    def log_step(self, step: int, stats: dict[str, float], lr: float, grad_norm: float) -> None:
        for key, value in stats.items():
            self.writer.add_scalar(f"train/{key}", value, step)
        self.writer.add_scalar("train/lr", lr, step)
        self.writer.add_scalar("train/grad_norm", grad_norm, step)

    def log_epoch(self, step: int, stats: dict[str, float]) -> None:
        """Epoch means of the training statistics."""
        for key, value in stats.items():
            self.writer.add_scalar(f"train_epoch/{key}", value, step)

    def log_model(self, step: int, model: torch.nn.Module) -> None:
        """PTM layer weights (one scalar per layer + a histogram) and fusion gate statistics."""
        weights = getattr(model, "ptm_layer_weights", lambda: None)()
        if weights is not None:
            values = weights.detach().float().cpu()
            for layer, value in enumerate(values.tolist()):
                self.writer.add_scalar(f"ptm_layer_weight/{layer:02d}", value, step)
            self.writer.add_histogram("ptm_layer_weights", values, step)
        gates = getattr(model, "gate_statistics", lambda: None)()
        for key, value in (gates or {}).items():
            self.writer.add_scalar(f"gate/{key}", value, step)

    def log_validation(
        self,
        step: int,
        metrics: dict[str, float],
        embeddings: np.ndarray,
        scores: dict[str, np.ndarray],
        labels: np.ndarray,
    ) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(f"valid/{key}", value, step)
        self.writer.add_histogram("valid/embeddings", embeddings, step)
        for name, values in scores.items():
            self.writer.add_histogram(f"valid/scores_{name}/target", values[labels], step)
            self.writer.add_histogram(f"valid/scores_{name}/nontarget", values[~labels], step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _NoWriter:
    """SummaryWriter's methods that TrainingBoard and the trainer call, doing nothing."""

    def add_scalar(self, *args: object, **kwargs: object) -> None:
        pass

    def add_histogram(self, *args: object, **kwargs: object) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
