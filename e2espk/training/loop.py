"""One training epoch and one validation pass, as functions that return dicts."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np
import torch

from e2espk import interrupts
from e2espk.data.corpus import Corpus
from e2espk.distributed.replicas import Replicas
from e2espk.inference.contract import EmbeddingContract, ExtractionOptions
from e2espk.inference.extraction import extract
from e2espk.losses.joint import JointLoss
from e2espk.progress import progress_bar
from e2espk.scoring.backends import Backend
from e2espk.scoring.metrics import summarize
from e2espk.scoring.score_fusion import LogisticFusion
from e2espk.scoring.scores import score_all
from e2espk.training.board import TrainingBoard
from e2espk.training.margin_schedule import MarginSchedule
from e2espk.training.optim import LRSchedule

LOG_EVERY = 10  # steps between TensorBoard step logs


@dataclasses.dataclass
class Optimization:
    """What a training step needs besides the data."""

    model: torch.nn.Module
    loss: JointLoss
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler
    device: torch.device
    amp_dtype: torch.dtype | None  # None: full precision
    max_gnorm: float
    step: int = 0
    margin_schedule: MarginSchedule | None = None  # None: the head keeps its margin
    replicas: Replicas | None = None  # several ranks: DDP around model and loss


def apply_margin(opt: Optimization) -> float | None:
    """Set the margin head's margin for this step; returns it (None without a head)."""
    head = opt.loss.margin_head
    if head is None:
        return None
    if opt.margin_schedule is not None:
        head.set_margin(opt.margin_schedule.margin_at(opt.step))
    return head.margin


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Inputs on the device in float32 (PTM travels as float16 to halve the copy)."""
    return {
        key: batch[key].to(device, non_blocking=True).float()
        for key in ("ptm", "handcrafted")
        if key in batch
    }


def train_one_epoch(
    opt: Optimization,
    loader: Iterable[dict[str, torch.Tensor]],
    board: TrainingBoard | None,
    generator: torch.Generator,
    max_steps: int = 0,
    progress: bool = False,
    epoch: int = 0,
) -> dict[str, float]:
    """Run one epoch; returns the mean of each training statistic.

    A stop signal (``interrupts``) ends it between steps; the epoch is then lost and a
    ``--resume`` repeats it from the last checkpoint, exactly.
    """
    with interrupts.deferred():
        return _train_steps(opt, loader, board, generator, max_steps, progress, epoch)


def _train_steps(
    opt: Optimization,
    loader: Iterable[dict[str, torch.Tensor]],
    board: TrainingBoard | None,
    generator: torch.Generator,
    max_steps: int,
    progress: bool,
    epoch: int,
) -> dict[str, float]:
    opt.model.train()
    opt.loss.train()
    model, objective = (
        (opt.replicas.model, opt.replicas.loss) if opt.replicas else (opt.model, opt.loss)
    )
    params = [p for group in opt.optimizer.param_groups for p in group["params"]]
    totals: dict[str, float] = defaultdict(float)
    steps = 0
    bar = progress_bar(loader, enabled=progress, desc=f"epoch {epoch}", unit="batch", leave=False)
    for batch in interrupts.checked(bar):
        lr = opt.schedule.apply(opt.step)
        margin = apply_margin(opt)
        inputs = to_device(batch, opt.device)
        labels = batch["label"].to(opt.device)
        autocast = (
            torch.autocast(opt.device.type, dtype=opt.amp_dtype)
            if opt.amp_dtype
            else contextlib.nullcontext()
        )
        with autocast:
            embeddings = model(inputs)
        embeddings = embeddings.float()
        if opt.replicas is not None:  # several ranks: the loss covers the global batch
            embeddings, labels = opt.replicas.gather(embeddings, labels)
        loss, stats = objective(embeddings, labels, generator)
        if margin is not None:
            stats["margin"] = margin
        if not math.isfinite(stats["loss"]):
            raise FloatingPointError(
                f"training loss became {stats['loss']} at step {opt.step}; lower --lr or enable --max-gnorm"
            )
        opt.optimizer.zero_grad(set_to_none=True)
        opt.scaler.scale(loss).backward()
        opt.scaler.unscale_(opt.optimizer)
        grad_norm = float(
            torch.nn.utils.clip_grad_norm_(
                params, opt.max_gnorm if opt.max_gnorm > 0 else float("inf")
            )
        )
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
        opt.step += 1
        steps += 1
        for key, value in stats.items():
            totals[key] += value
        if board is not None and (opt.step % LOG_EVERY == 0 or steps == 1):
            board.log_step(opt.step, stats, lr, grad_norm)
        bar.set_postfix(loss=f"{stats['loss']:.3f}")
        if max_steps and steps >= max_steps:
            break
    bar.close()
    return {key: value / max(steps, 1) for key, value in totals.items()} | {
        "steps": steps,
        "lr": opt.schedule.lr_at(max(opt.step - 1, 0)),
    }


@dataclasses.dataclass
class ValidationSet:
    """The valid corpus and a fixed trial list over it, as row indices."""

    corpus: Corpus
    rows: np.ndarray  # corpus rows to embed
    idx_a: np.ndarray  # trial sides as indices into ``rows``
    idx_b: np.ndarray
    labels: np.ndarray  # (N,) bool
    # side scores of the trials (name -> (N,)): they depend on the features alone, so they
    # are computed once per run (``e2espk.inference.side_values``)
    side: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def validate(
    model: torch.nn.Module,
    verifier: torch.nn.Module | None,
    valid: ValidationSet,
    contract: EmbeddingContract,
    options: ExtractionOptions,
    backends: Mapping[str, Backend] | None = None,
) -> tuple[dict[str, float], np.ndarray, dict[str, np.ndarray], LogisticFusion | None]:
    """Embed each valid utterance once (under the run's ``contract``), score every trial;
    metrics as ``SCORE/METRIC``. Fitted ``backends`` (by score type) add their scores.

    With a verifier or side scores, the score fusion of every score type is fitted on these
    trials and ``fused`` is its output on the same trials (see ``LogisticFusion`` for why that
    is fair enough); it is returned for the checkpoint.
    """
    embeddings = extract(model, valid.corpus, valid.rows.tolist(), contract, options)
    return score_validation(embeddings, verifier, valid, options.device, backends)


def score_validation(
    embeddings: np.ndarray,
    verifier: torch.nn.Module | None,
    valid: ValidationSet,
    device: str | torch.device,
    backends: Mapping[str, Backend] | None = None,
) -> tuple[dict[str, float], np.ndarray, dict[str, np.ndarray], LogisticFusion | None]:
    """``validate`` from the ``(len(valid.rows), latent)`` embeddings of the valid utterances
    (e.g. embedded by several ranks and gathered)."""
    extra = dict(valid.side) | {
        name: backend.score_pairs(backend.transform(embeddings), valid.idx_a, valid.idx_b)
        for name, backend in (backends or {}).items()
    }
    scores = score_all(
        embeddings,
        valid.idx_a,
        valid.idx_b,
        verifier,  # type: ignore[arg-type]
        device,
        side=extra,
    )
    fusion = None
    inputs = tuple(name for name in scores if name != "fused")  # fused: a fixed z-norm mean
    if len(inputs) > 1:
        fusion = LogisticFusion(inputs).fit(scores, valid.labels)
        scores["fused"] = fusion.apply(scores)
    metrics = {}
    for name, values in scores.items():
        for key, value in summarize(values, valid.labels, p_targets=(0.01, 0.05)).items():
            metrics[f"{name}/{key}"] = value
    return metrics, embeddings, scores, fusion
