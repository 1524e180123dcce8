"""train(config): build everything from a TrainConfig, run the epochs, keep checkpoints.

The experiment directory holds ``config.yaml``, ``model_summary.txt``, ``history.json`` (one
entry per epoch), ``results.json``, ``last.pt``/``best.pt`` (and ``epoch_NNN.pt`` with
--save-every) and TensorBoard events in ``tb/``. A run killed at any point resumes with
--resume from the end of its last finished epoch, and ends with the same weights as a run that
was never interrupted (fixed seed, CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2espk.config import config_to_dict, save_config
from e2espk.data.corpus import Corpus
from e2espk.data.features import InputLayout, check_compatible, resolve_layout
from e2espk.data.loader import CropDataset, SpeakerBatchSampler, training_loader
from e2espk.errors import ConfigError, InputDataError, preview
from e2espk.fileio import write_json_atomic, write_text_atomic
from e2espk.losses.joint import JointLoss
from e2espk.losses.margin import MARGIN_HEADS
from e2espk.models.speaker_model import SpeakerEmbeddingModel, build_speaker_model
from e2espk.models.verification import PairVerifier, build_pair_verifier
from e2espk.scoring.trials import build_trials, read_trials
from e2espk.training.board import TrainingBoard
from e2espk.training.checkpoint import (
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from e2espk.training.config import TrainConfig
from e2espk.training.loop import Optimization, ValidationSet, train_one_epoch, validate
from e2espk.training.optim import OPTIMIZERS, LRSchedule, ScheduleSpec

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    """What a training run returns to Python callers (and hp search trials)."""

    model: SpeakerEmbeddingModel
    verifier: PairVerifier | None
    history: list[dict[str, Any]]
    run_dir: Path
    best_metric: float | None
    best_epoch: int | None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return device


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype: bf16 on CUDA when supported ('auto'), never on CPU."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise ConfigError(f"--amp {amp} needs a CUDA device; use --amp off (or auto) on {device}")
    if amp == "fp16":
        return torch.float16
    if amp == "auto" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def validation_set(config: TrainConfig, layout: InputLayout) -> ValidationSet | None:
    """The valid corpus with its fixed trial list (given, or built with the run's seed)."""
    if not config.valid_hdf_file:
        return None
    corpus = Corpus(config.valid_hdf_file)
    check_compatible(layout, corpus)
    if config.valid_trials:
        trials = read_trials(config.valid_trials)
        if trials.labels is None:
            raise InputDataError(
                config.valid_trials, "validation trials need labels (target/nontarget)"
            )
        missing = trials.utterances() - set(corpus.utterances.tolist())
        if missing:
            raise InputDataError(
                config.valid_trials, f"{preview(missing)} utterance(s) are not in {corpus.path}"
            )
    else:
        utterances = corpus.utterances.tolist()
        speakers = corpus.speakers[corpus.speaker_of].tolist()
        trials = build_trials(
            utterances, speakers, config.valid_nontarget_ratio, config.valid_max_target, config.seed
        )
    needed = sorted(trials.utterances(), key=corpus.utterance_row)
    position = {utt: k for k, utt in enumerate(needed)}
    return ValidationSet(
        corpus=corpus,
        rows=np.array([corpus.utterance_row(u) for u in needed]),
        idx_a=np.array([position[u] for u in trials.enroll]),
        idx_b=np.array([position[u] for u in trials.test]),
        labels=np.asarray(trials.labels, dtype=bool),
    )


def prepare_run_dir(config: TrainConfig) -> Path:
    run_dir = Path(config.checkpoint_path)
    if (run_dir / "last.pt").exists() and not config.resume:
        raise ConfigError(
            f"{run_dir} already holds a run (last.pt); pass --resume to continue it or choose another --checkpoint-path"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def parameter_groups(
    model: torch.nn.Module, loss: torch.nn.Module, layer_weight_lr_scale: float
) -> list[dict[str, Any]]:
    """The PTM layer-weight logits get their own learning rate and no weight decay.

    Adam moves each parameter by about the learning rate per step; the few layer logits must
    move by O(1) to choose layers, which at the base rate takes far longer than the rest of the
    model needs (benchmarks/README.md: 5.8 % -> 1.3 % EER on the demo at 30x).
    """
    layer_logits = [
        param for name, param in model.named_parameters() if name.endswith("layer_logits")
    ]
    chosen = {id(param) for param in layer_logits}
    others = [
        param for param in [*model.parameters(), *loss.parameters()] if id(param) not in chosen
    ]
    groups: list[dict[str, Any]] = [{"params": others}]
    if layer_logits:
        groups.append(
            {"params": layer_logits, "lr_scale": layer_weight_lr_scale, "weight_decay": 0.0}
        )
    return groups


def model_summary(model: torch.nn.Module, loss: torch.nn.Module) -> str:
    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    return f"{model}\n\nembedding model parameters: {count(model):,}\ntraining-only parameters (head, verifier): {count(loss):,}\n"


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` CPU threads, then restore the caller's setting."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train(config: TrainConfig) -> TrainResult:
    """Train a speaker embedding model (and its verification network) as ``config`` says."""
    config.validate()
    with torch_threads(config.threads):
        return _train(config)


def _train(config: TrainConfig) -> TrainResult:
    device = resolve_device(config.device)
    amp_dtype = resolve_amp(config.amp, device)
    seed_everything(config.seed)
    train_corpus = Corpus(config.train_hdf_file)
    layout = resolve_layout(train_corpus, config.mode, config.feature_mode)
    model_config = config.model_config(layout)
    valid = validation_set(config, layout)
    sampler = SpeakerBatchSampler(
        train_corpus.speaker_offsets, config.batch_size, config.utts_per_speaker, config.seed
    )
    loader = training_loader(
        CropDataset(train_corpus, layout, config.crop_seconds(layout), config.cmvn),
        sampler,
        config.workers,
        device.type == "cuda",
    )
    run_dir = prepare_run_dir(config)

    model = build_speaker_model(model_config).to(device)
    verifier = (
        build_pair_verifier(config.verifier_config(), model_config.latent_size)
        if config.pair_weight > 0
        else None
    )
    head = None
    if config.margin_weight > 0:
        head = MARGIN_HEADS.build(
            config.softmax,
            embedding_dim=model_config.latent_size,
            n_classes=len(train_corpus.speakers),
            margin=config.margin,
            scale=config.scale,
            label_smoothing=config.smoothing,
        )
    loss = JointLoss(head, verifier, config.margin_weight, config.pair_weight).to(device)
    optimizer = OPTIMIZERS.build(
        config.optimizer,
        params=parameter_groups(model, loss, config.layer_weight_lr_scale),
        lr=config.lr,
        weight_decay=config.l2,
        momentum=config.momentum,
    )
    steps_per_epoch = min(len(sampler), config.max_steps_per_epoch or len(sampler))
    spec = ScheduleSpec(
        config.lr,
        config.epochs * steps_per_epoch,
        config.warmup,
        config.min_lr_ratio,
        config.step_every,
        config.step_gamma,
        config.plateau_patience,
    )
    opt = Optimization(
        model,
        loss,
        optimizer,
        LRSchedule(config.scheduler, spec, optimizer),
        torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        device,
        amp_dtype,
        config.max_gnorm,
    )

    history: list[dict[str, Any]] = []
    best: float | None = None
    best_epoch: int | None = None
    start_epoch = 0
    if config.resume and (run_dir / "last.pt").exists():
        state = load_checkpoint(run_dir / "last.pt", device)
        if state["model_config"] != model_config.to_dict():
            raise ConfigError(
                f"{run_dir / 'last.pt'} was trained with another model config; cannot --resume with these flags"
            )
        model.load_state_dict(state["model"])
        loss.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"])
        opt.schedule.load_state_dict(state["schedule"])
        opt.scaler.load_state_dict(state["scaler"])
        opt.step, start_epoch = state["step"], state["epoch"] + 1
        history, best, best_epoch = state["history"], state["best_metric"], state["best_epoch"]
        restore_rng_state(state["rng"])
        LOG.info("resumed %s at epoch %d (step %d)", run_dir, start_epoch, opt.step)
    save_config(config, run_dir / "config.yaml")
    write_text_atomic(run_dir / "model_summary.txt", model_summary(model, loss))
    board = TrainingBoard(config.logdir or run_dir / "tb")

    def checkpoint(epoch: int) -> dict[str, Any]:
        return {
            "model_config": model_config.to_dict(), "layout": layout.to_dict(), "verifier_config": config.verifier_config().to_dict() if verifier else None,
            "train_config": config_to_dict(config), "speakers": train_corpus.speakers.tolist(),
            "model": model.state_dict(), "verifier": verifier.state_dict() if verifier else None, "loss": loss.state_dict(),
            "optimizer": optimizer.state_dict(), "schedule": opt.schedule.state_dict(), "scaler": opt.scaler.state_dict(),
            "rng": rng_state(), "epoch": epoch, "step": opt.step, "best_metric": best, "best_epoch": best_epoch, "history": history,
        }  # fmt: skip

    bad_epochs = 0
    try:
        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            sampler.set_epoch(epoch)
            generator = torch.Generator().manual_seed(
                config.seed * 100003 + epoch
            )  # CPU: pair mining samples on the CPU
            stats = train_one_epoch(
                opt, loader, board, generator, config.max_steps_per_epoch, config.progress, epoch
            )
            entry: dict[str, Any] = {
                "epoch": epoch,
                "step": opt.step,
                **{f"train/{k}": v for k, v in stats.items()},
            }
            if valid is not None:
                metrics, embeddings, scores = validate(
                    model,
                    verifier,
                    valid,
                    layout,
                    device,
                    config.valid_window_seconds,
                    config.valid_batch_size,
                    config.cmvn,
                    config.progress,
                )
                entry.update({f"valid/{k}": v for k, v in metrics.items()})
                board.log_validation(opt.step, metrics, embeddings, scores, valid.labels)
            board.log_epoch(opt.step, stats)
            board.log_model(opt.step, model)
            entry["seconds"] = time.perf_counter() - started
            history.append(entry)
            current = entry.get(f"valid/{config.select_metric}")
            improved = current is not None and (best is None or current < best)
            if improved:
                best, best_epoch, bad_epochs = current, epoch, 0
            else:
                bad_epochs += 1
            if current is not None:
                opt.schedule.observe(current)
            payload = checkpoint(epoch)
            save_checkpoint(run_dir / "last.pt", payload)
            if improved:
                save_checkpoint(run_dir / "best.pt", payload)
            if config.save_every and (epoch + 1) % config.save_every == 0:
                save_checkpoint(run_dir / f"epoch_{epoch:03d}.pt", payload)
            write_json_atomic(run_dir / "history.json", history)
            board.flush()
            LOG.info(
                "epoch %d: %s",
                epoch,
                ", ".join(
                    f"{k}={v:.4g}"
                    for k, v in entry.items()
                    if isinstance(v, float)
                    and k.count("/") <= 2
                    and ("eer" in k or k == "train/loss")
                ),
            )
            if config.patience and valid is not None and bad_epochs >= config.patience:
                LOG.info(
                    "early stopping: %s did not improve for %d epochs",
                    config.select_metric,
                    config.patience,
                )
                break
    finally:
        board.close()
    results = {
        "best_metric": best,
        "best_epoch": best_epoch,
        "select_metric": config.select_metric,
        "epochs_run": len(history),
        "final": history[-1] if history else None,
        "run_dir": str(run_dir),
    }
    write_json_atomic(run_dir / "results.json", results)
    return TrainResult(model, verifier, history, run_dir, best, best_epoch)
