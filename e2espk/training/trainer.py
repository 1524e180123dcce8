"""train(config): build everything from a TrainConfig, run the epochs, keep checkpoints.

The experiment directory holds ``config.yaml``, ``train.log``, ``model_summary.txt``, ``history.json`` (one
entry per epoch), ``results.json``, ``last.pt``/``best.pt`` (and ``epoch_NNN.pt`` with
--save-every), the last --average-last epochs' weights in ``recent/`` averaged into
``averaged.pt``, ``final.pt`` (the --final-checkpoint) and TensorBoard events in ``tb/``. A run killed at any point resumes with
--resume from the end of its last finished epoch, and ends with the same weights as a run that
was never interrupted (fixed seed, CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from e2espk import interrupts
from e2espk.config import config_to_dict, save_config
from e2espk.distributed.process_group import (
    DistContext,
    barrier,
    broadcast_object,
    rank_seed,
    session,
)
from e2espk.distributed.sharding import shard_rows
from e2espk.fileio import write_json_atomic, write_text_atomic
from e2espk.inference.checkpoint_file import load_checkpoint, save_checkpoint
from e2espk.inference.contract import ExtractionOptions
from e2espk.inference.extraction import extract
from e2espk.inference.system import load_embedding_system
from e2espk.logfile import log_to_file
from e2espk.models.speaker_model import SpeakerEmbeddingModel
from e2espk.models.verification import PairVerifier
from e2espk.scoring.backends import Backend
from e2espk.scoring.score_fusion import LogisticFusion
from e2espk.training.average import export_checkpoints, keep_recent
from e2espk.training.board import TrainingBoard
from e2espk.training.checkpoint import restore_rng_state, rng_state
from e2espk.training.config import TrainConfig
from e2espk.training.export_fusion import ExportInputs, fusion_entries, refit_exported_fusion
from e2espk.training.hard_speakers import prototype_neighbours
from e2espk.training.init_from import check_resume_config, initialize_from
from e2espk.training.loop import (
    score_validation,
    train_one_epoch,
    validate,
)
from e2espk.training.run_setup import (
    Run,
    build_run,
    model_summary,
)
from e2espk.training.runlog import epoch_line, log_run_header
from e2espk.training.runtime import torch_threads

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
    exported: dict[str, Any] = dataclasses.field(default_factory=dict)  # averaged.pt, final.pt


def train(config: TrainConfig) -> TrainResult:
    """Train a speaker embedding model (and its verification network) as ``config`` says.

    Under ``torchrun`` every rank calls this: the ranks train one model on the global batch
    (``e2espk.distributed``), and rank 0 alone writes the run directory.
    """
    config.validate()
    with torch_threads(config.threads), session(config.device, config.distributed) as ranks:
        return _train(config, ranks)


def resume(run: Run) -> None:
    """Continue from ``last.pt``: weights, optimizer, schedule, scaler, RNGs, history."""
    path = run.run_dir / "last.pt"
    # Loaded on the CPU: RNG states must stay CPU ByteTensors, and load_state_dict moves
    # weights and optimizer state to their parameters' device (Adam's step counters stay on
    # the CPU, as a fresh run has them).
    state = load_checkpoint(path, "cpu")
    saved = type(run.model_config).from_dict(state["model_config"])  # older: fewer keys
    saved_options = TrainConfig.upgrade_keys(state.get("train_config") or {})  # older: old names
    check_resume_config(
        state | {"model_config": saved.to_dict(), "train_config": saved_options}, path, run.model_config.to_dict(),
        run.config.verifier_config().to_dict() if run.verifier else None, config_to_dict(run.config),
    )  # fmt: skip
    run.opt.model.load_state_dict(state["model"])
    run.opt.loss.load_state_dict(state["loss"])
    run.opt.optimizer.load_state_dict(state["optimizer"])
    run.opt.schedule.load_state_dict(state["schedule"])
    if state["scaler"]:  # empty when saved without fp16 (off, bf16, CPU); --amp may differ now
        run.opt.scaler.load_state_dict(state["scaler"])
    run.opt.step, run.start_epoch = state["step"], state["epoch"] + 1
    run.history, run.best, run.best_epoch = (
        state["history"],
        state["best_metric"],
        state["best_epoch"],
    )
    run.score_fusion = state.get("score_fusion")
    restore_rng_state(state["rng"])
    run.parent = state.get("parent")
    LOG.info("resumed %s at epoch %d (step %d)", run.run_dir, run.start_epoch, run.opt.step)


def checkpoint_payload(run: Run, epoch: int) -> dict[str, Any]:
    """The full state: enough to resume, and to rebuild the embedding model alone."""
    opt, config = run.opt, run.config
    return {
        **run.contract.to_checkpoint(),  # model_config, layout, normalization, window_seconds
        "verifier_config": config.verifier_config().to_dict() if run.verifier else None,
        "train_config": config_to_dict(config), "speakers": run.corpus.speakers.tolist(),
        "model": opt.model.state_dict(), "verifier": run.verifier.state_dict() if run.verifier else None,
        "loss": opt.loss.state_dict(), "optimizer": opt.optimizer.state_dict(), "schedule": opt.schedule.state_dict(),
        "scaler": opt.scaler.state_dict(), "rng": rng_state(), "epoch": epoch, "step": opt.step,
        "best_metric": run.best, "best_epoch": run.best_epoch, "history": run.history,
        "parent": run.parent, "score_fusion": run.score_fusion,
        "side_scores": [side.to_dict() for side in config.side_score_set().values()],
    }  # fmt: skip


def validate_model(
    run: Run,
    model: torch.nn.Module,
    verifier: torch.nn.Module | None,
    backends: dict[str, Backend] | None = None,
    sharded: bool = False,
) -> tuple[dict[str, float], np.ndarray, dict[str, np.ndarray], LogisticFusion | None]:
    """``validate`` on the run's valid set with the run's options; ``sharded`` (called on
    every rank): each rank embeds its share of the utterances, all score all of them."""
    valid, config = run.valid, run.config
    assert valid is not None
    options = ExtractionOptions(config.valid_batch_size, run.opt.device, run.progress)
    if not (sharded and run.ranks.active):
        return validate(model, verifier, valid, run.contract, options, backends)
    embeddings = shard_rows(
        lambda rows: extract(model, valid.corpus, rows, run.contract, options),
        valid.rows.tolist(),
        run.ranks,
    )
    return score_validation(embeddings, verifier, valid, options.device, backends)


def set_hard_speakers(run: Run, epoch: int) -> None:
    """From --hard-speaker-from-epoch on, batches group speakers the head finds similar (the
    head's weights at the epoch's start: a resumed run ranks them the same)."""
    config, head = run.config, run.opt.loss.margin_head
    if config.hard_speaker_groups < 2 or head is None or epoch < config.hard_speaker_from_epoch:
        return
    neighbours = prototype_neighbours(head.weight, config.hard_speaker_pool)
    run.sampler.set_neighbours(neighbours, config.hard_speaker_groups)


def run_epoch(run: Run, epoch: int, board: TrainingBoard) -> dict[str, Any]:
    """Train one epoch, validate, log; returns the history entry."""
    config, opt = run.config, run.opt
    started = time.perf_counter()
    run.sampler.set_epoch(epoch)
    set_hard_speakers(run, epoch)
    if run.ranks.active:  # each rank its own dropout and masks, the same after a resume
        torch.manual_seed(rank_seed(config.seed, epoch, run.ranks))
    generator = torch.Generator().manual_seed(
        config.seed * 100003 + epoch
    )  # CPU: pairs are mined there
    stats = train_one_epoch(
        opt, run.loader, board, generator, config.max_steps_per_epoch, run.progress, epoch
    )
    train_seconds = time.perf_counter() - started
    entry: dict[str, Any] = {
        "epoch": epoch,
        "step": opt.step,
        **{f"train/{k}": v for k, v in stats.items()},
        "train_seconds": train_seconds,
        "steps_per_second": stats["steps"] / train_seconds if train_seconds > 0 else 0.0,
    }
    if run.valid is not None:
        metrics, embeddings, scores, fusion = validate_model(
            run, opt.model, run.verifier, sharded=True
        )
        entry.update({f"valid/{k}": v for k, v in metrics.items()})
        run.score_fusion = fusion.to_dict() if fusion is not None else None
        board.log_validation(opt.step, metrics, embeddings, scores, run.valid.labels)
    board.log_epoch(opt.step, stats)
    board.log_model(opt.step, opt.model)
    entry["seconds"] = time.perf_counter() - started
    return entry


def record_epoch(run: Run, epoch: int, entry: dict[str, Any]) -> None:
    """Track the best metric, step a plateau schedule, write checkpoints and history."""
    config = run.config
    run.history.append(entry)
    current = entry.get(f"valid/{config.select_metric}")
    improved = current is not None and (run.best is None or current < run.best)
    if improved:
        run.best, run.best_epoch, run.bad_epochs = current, epoch, 0
    else:
        run.bad_epochs += 1
    if current is not None:
        run.opt.schedule.observe(current)
    if not run.ranks.is_main:
        return  # the other ranks hold the same state; rank 0 writes it
    payload = checkpoint_payload(run, epoch)
    save_checkpoint(run.run_dir / "last.pt", payload)
    keep_recent(run.run_dir, epoch, payload, config.average_last)
    if improved:
        save_checkpoint(run.run_dir / "best.pt", payload)
    if config.save_every and (epoch + 1) % config.save_every == 0:
        save_checkpoint(run.run_dir / f"epoch_{epoch:03d}.pt", payload)
    write_json_atomic(run.run_dir / "history.json", run.history)
    LOG.info("%s", epoch_line(entry, config.epochs))


def _train(config: TrainConfig, ranks: DistContext) -> TrainResult:
    run = build_run(config, ranks)
    main = ranks.is_main
    with log_to_file(run.run_dir / "train.log") if main else contextlib.nullcontext():
        try:
            return _train_run(run)
        except interrupts.Interrupted as stop:
            done = run.history[-1]["epoch"] if run.history else None
            LOG.warning(
                "training %s at step %d; %s", stop, run.opt.step,
                f"last.pt holds epoch {done}: rerun with --resume to continue from there"
                if done is not None else "no epoch had finished",
            )  # fmt: skip
            raise


def _train_run(run: Run) -> TrainResult:
    config = run.config
    resumed = config.resume and (run.run_dir / "last.pt").exists()
    if resumed:
        resume(run)
    elif config.init_from:
        run.parent = initialize_from(
            config.init_from, run.opt.model, run.opt.loss, run.model_config.to_dict(),
            config.verifier_config().to_dict() if run.verifier else None, run.corpus.speakers.tolist(),
        )  # fmt: skip
    main = run.ranks.is_main  # rank 0 writes the run directory; the others only train
    if main:
        save_config(config, run.run_dir / "config.yaml")
        write_text_atomic(
            run.run_dir / "model_summary.txt", model_summary(run.opt.model, run.opt.loss)
        )
    log_run_header(run.config, run.opt.device, run.corpus, run.valid, run.start_epoch)
    if run.ranks.active:
        LOG.info(
            "%d ranks (%s): global batch %d, %d per rank", run.ranks.world_size,
            run.ranks.backend, config.batch_size, config.batch_size // run.ranks.world_size,
        )  # fmt: skip
    # a resumed run rewrites the steps after its checkpoint: TensorBoard drops the old ones
    board = TrainingBoard(
        (config.logdir or run.run_dir / "tb") if main else None,
        purge_step=run.opt.step + 1 if resumed else None,
    )
    try:
        for epoch in range(run.start_epoch, config.epochs):
            # rank 0's entry on every rank: best epoch, plateau and early stopping agree
            entry = broadcast_object(run_epoch(run, epoch, board), run.ranks)
            record_epoch(run, epoch, entry)
            board.flush()
            if config.patience and run.valid is not None and run.bad_epochs >= config.patience:
                LOG.info(
                    "early stopping: %s did not improve for %d epochs",
                    config.select_metric,
                    config.patience,
                )
                break
        exported = export(run, board) if main else {}
        barrier(run.ranks)  # the others wait for rank 0's export (--dist-timeout-seconds)
    finally:
        board.close()
    results = {"best_metric": run.best, "best_epoch": run.best_epoch, "select_metric": config.select_metric,
               "epochs_run": len(run.history), "final": run.history[-1] if run.history else None, "run_dir": str(run.run_dir),
               "init_from": run.parent, "averaged": exported.get("averaged"), "final_checkpoint": exported.get("final")}  # fmt: skip
    if main:
        write_json_atomic(run.run_dir / "results.json", results)
    model = cast(SpeakerEmbeddingModel, run.opt.model)
    return TrainResult(
        model, run.verifier, run.history, run.run_dir, run.best, run.best_epoch, exported
    )


def export(run: Run, board: TrainingBoard) -> dict[str, Any]:
    """averaged.pt (validated once, logged as ``valid_averaged/...``) and final.pt."""

    def validate_checkpoint(path: Path) -> dict[str, float]:
        system = load_embedding_system(path, run.opt.device)
        metrics, _, _, fusion = validate_model(run, system.model, system.verifier)
        # the averaged weights get a score fusion fitted on their own validation scores
        payload = load_checkpoint(path, "cpu") | fusion_entries(run.config, fusion)
        save_checkpoint(path, payload)
        for key, value in metrics.items():
            board.writer.add_scalar(f"valid_averaged/{key}", value, run.opt.step)
        return metrics

    last_epoch = run.history[-1]["epoch"] if run.history else None
    exported = export_checkpoints(
        run.run_dir,
        run.config.average_last,
        run.config.final_checkpoint,
        last_epoch,
        validate_checkpoint if run.valid is not None else None,
    )
    config, final = run.config, run.run_dir / "final.pt"
    if (config.fusion_backends or config.fusion_asnorm) and run.valid and "final" in exported:
        # final.pt becomes a file of its own: the checkpoint it was linked to keeps its fusion
        inputs = ExportInputs(config, run.corpus, run.valid, run.contract, run.opt.device)
        metrics, entries = refit_exported_fusion(inputs, final)
        save_checkpoint(final, load_checkpoint(final, "cpu") | entries)
        for key, value in metrics.items():
            board.writer.add_scalar(f"valid_final/{key}", value, run.opt.step)
        exported["final"].update({f"valid/{key}": value for key, value in metrics.items()})
    return exported
