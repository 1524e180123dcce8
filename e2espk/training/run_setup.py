"""Building a training run: its data, validation set, model, losses and optimizer, in the
fixed order the RNG streams depend on (``build_run``), and the ``Run`` that holds them."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2espk.config import config_to_dict
from e2espk.data.corpus import Corpus
from e2espk.data.features import InputLayout, check_compatible, resolve_layout
from e2espk.data.loader import CropDataset, SpeakerBatchSampler, training_loader
from e2espk.data.speaker_perturb import virtual_speaker_offsets
from e2espk.device import resolve_device
from e2espk.distributed.consistency import check_same_on_all_ranks, corpus_identity
from e2espk.distributed.process_group import (
    DistContext,
)
from e2espk.distributed.replicas import replicate
from e2espk.distributed.sharding import RankSlice, check_divisible
from e2espk.errors import ConfigError, InputDataError, preview
from e2espk.inference.contract import EmbeddingContract
from e2espk.inference.side_values import side_values
from e2espk.losses.joint import JointLoss
from e2espk.losses.margin import MARGIN_HEADS
from e2espk.losses.pairwise import PairLossOptions
from e2espk.models.config import ModelConfig
from e2espk.models.speaker_model import SpeakerEmbeddingModel, build_speaker_model
from e2espk.models.verification import PairVerifier, VerifierConfig, build_pair_verifier
from e2espk.scoring.trials import build_trials, match_utterances, read_trials
from e2espk.training.config import TrainConfig
from e2espk.training.config_parts import LossOptions, OptimOptions
from e2espk.training.loop import (
    Optimization,
    ValidationSet,
)
from e2espk.training.margin_schedule import MarginSchedule
from e2espk.training.optim import OPTIMIZERS, LRSchedule
from e2espk.training.runtime import resolve_amp, seed_everything

LOG = logging.getLogger(__name__)


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
        mapping = match_utterances(
            trials.utterances(), corpus.utterances.tolist(), config.valid_trials
        )
        missing = trials.utterances() - mapping.keys()
        if missing:
            raise InputDataError(
                config.valid_trials, f"{preview(missing)} utterance(s) are not in {corpus.path}"
            )
        trials = trials.renamed(mapping)
    else:
        utterances = corpus.utterances.tolist()
        speakers = corpus.speakers[corpus.speaker_of].tolist()
        trials = build_trials(
            utterances, speakers, config.valid_nontarget_ratio, config.valid_max_target, config.seed
        )
    needed = sorted(trials.utterances(), key=corpus.utterance_row)
    position = {utt: k for k, utt in enumerate(needed)}
    rows = np.array([corpus.utterance_row(u) for u in needed])
    idx_a = np.array([position[u] for u in trials.enroll])
    idx_b = np.array([position[u] for u in trials.test])
    side_scores = config.side_score_set()
    values = side_values(corpus, rows, side_scores)
    return ValidationSet(
        corpus=corpus,
        rows=rows,
        idx_a=idx_a,
        idx_b=idx_b,
        labels=np.asarray(trials.labels, dtype=bool),
        side={
            name: side.score_pairs(values[name], idx_a, idx_b) for name, side in side_scores.items()
        },
    )


def check_run_dir(config: TrainConfig) -> Path:
    """The run directory, refused if it holds another run; created only once the inputs
    have been read and the model built, so a failing start leaves no empty directory."""
    run_dir = Path(config.checkpoint_path)
    if (run_dir / "last.pt").exists() and not config.resume:
        raise ConfigError(
            f"{run_dir} already holds a run (last.pt); pass --resume to continue it or choose another --checkpoint-path"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--checkpoint-path {run_dir} is a file, not a directory")
    return run_dir


def parameter_groups(
    model: torch.nn.Module,
    loss: torch.nn.Module,
    layer_weight_lr_scale: float,
    verifier_l2: float | None = None,
) -> list[dict[str, Any]]:
    """The PTM layer-weight logits get their own learning rate and no weight decay; with
    ``verifier_l2`` the verifier gets its own weight decay.

    Adam moves each parameter by about the learning rate per step; the few layer logits must
    move by O(1) to choose layers, which at the base rate takes far longer than the rest of the
    model needs (benchmarks/README.md: 5.8 % -> 1.3 % EER on the demo at 30x).
    """
    layer_logits = [
        param for name, param in model.named_parameters() if name.endswith("layer_logits")
    ]
    verifier = getattr(loss, "verifier", None) if verifier_l2 is not None else None
    verifier_params = list(verifier.parameters()) if verifier is not None else []
    chosen = {id(param) for param in [*layer_logits, *verifier_params]}
    others = [
        param for param in [*model.parameters(), *loss.parameters()] if id(param) not in chosen
    ]
    groups: list[dict[str, Any]] = [{"params": others}]
    if layer_logits:
        groups.append(
            {"params": layer_logits, "lr_scale": layer_weight_lr_scale, "weight_decay": 0.0}
        )
    if verifier_params:
        groups.append({"params": verifier_params, "weight_decay": verifier_l2})
    return groups


def model_summary(model: torch.nn.Module, loss: torch.nn.Module) -> str:
    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    return f"{model}\n\nembedding model parameters: {count(model):,}\ntraining-only parameters (head, verifier): {count(loss):,}\n"


@dataclasses.dataclass
class Run:
    """Everything one training run holds, and where it stands (for checkpoints and resume)."""

    config: TrainConfig
    corpus: Corpus
    contract: (
        EmbeddingContract  # model config, layout, CMN, validation window: stored in checkpoints
    )
    valid: ValidationSet | None
    sampler: SpeakerBatchSampler
    loader: Any
    run_dir: Path
    opt: Optimization
    verifier: PairVerifier | None
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best: float | None = None
    best_epoch: int | None = None
    start_epoch: int = 0
    bad_epochs: int = 0
    parent: dict[str, Any] | None = None  # the --init-from checkpoint
    score_fusion: dict[str, Any] | None = None  # fitted at the last validation
    ranks: DistContext = dataclasses.field(default_factory=DistContext)  # torchrun's ranks

    @property
    def layout(self) -> InputLayout:
        return self.contract.layout

    @property
    def model_config(self) -> ModelConfig:
        return self.contract.model_config

    @property
    def progress(self) -> bool:
        """Progress bars: on rank 0 only."""
        return self.config.progress and self.ranks.is_main


def build_optimization(
    optim: OptimOptions,
    model: torch.nn.Module,
    loss: JointLoss,
    total_steps: int,
    device: torch.device,
    margin_schedule: MarginSchedule | None = None,
) -> Optimization:
    """Optimizer (PTM layer weights in their own group), lr schedule over ``total_steps`` and
    AMP scaler, as the optimisation options say."""
    amp_dtype = resolve_amp(optim.amp, device)
    optimizer = OPTIMIZERS.build(
        optim.optimizer,
        params=parameter_groups(model, loss, optim.layer_weight_lr_scale, optim.verifier_l2),
        **optim.optimizer_kwargs(),
    )
    schedule = LRSchedule(optim.scheduler, optim.schedule_spec(total_steps), optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return Optimization(
        model,
        loss,
        optimizer,
        schedule,
        scaler,
        device,
        amp_dtype,
        optim.max_gnorm,
        margin_schedule=margin_schedule,
    )


def build_model_and_loss(
    model_config: ModelConfig,
    verifier_config: VerifierConfig,
    losses: LossOptions,
    pairs: PairLossOptions,
    n_speakers: int,
    device: torch.device,
) -> tuple[SpeakerEmbeddingModel, PairVerifier | None, JointLoss]:
    """The embedding model, and the training-only verifier and margin head (in the JointLoss);
    a loss whose weight is 0 gets no module."""
    model = build_speaker_model(model_config).to(device)
    verifier = (
        build_pair_verifier(verifier_config, model_config.latent_size)
        if losses.pair_weight > 0
        else None
    )
    head = None
    if losses.margin_weight > 0:
        head = MARGIN_HEADS.build(
            losses.softmax,
            embedding_dim=model_config.latent_size,
            n_classes=n_speakers,
            **losses.margin_head_kwargs(),
        )
    joint = JointLoss(head, verifier, losses.margin_weight, losses.pair_weight, pairs)
    return model, verifier, joint.to(device)


def model_and_loss_of(
    config: TrainConfig, model_config: ModelConfig, n_speakers: int, device: torch.device
) -> tuple[SpeakerEmbeddingModel, PairVerifier | None, JointLoss]:
    """``build_model_and_loss`` with the parts of a training config."""
    return build_model_and_loss(
        model_config,
        config.verifier_config(),
        config.loss,
        config.verifier.pair_options(),
        n_speakers,
        device,
    )


def run_identity(
    config: TrainConfig, corpus: Corpus, valid: ValidationSet | None
) -> dict[str, Any]:
    """What every rank of a run must agree on: the options, and the corpora by their
    contents (copies at other paths on other nodes are fine)."""
    ignored = ("progress", "train_hdf_file", "valid_hdf_file")
    identity = {k: v for k, v in config_to_dict(config).items() if k not in ignored}
    identity["train corpus (ids, streams, frames)"] = corpus_identity(corpus)
    if valid is not None:
        identity["valid corpus (ids, streams, frames)"] = corpus_identity(valid.corpus)
    return identity


def build_run(config: TrainConfig, ranks: DistContext | None = None) -> Run:
    """Data, model, losses and optimizer, built in a fixed order (the RNG streams depend on it)."""
    ranks = ranks or DistContext(device=config.device)
    run_dir = check_run_dir(config)
    if ranks.active:
        check_divisible(config.batch_size, config.utts_per_speaker, ranks.world_size)
    device = resolve_device(ranks.device)
    resolve_amp(config.optim.amp, device)  # reject bad --amp before reading any data
    seed_everything(config.seed)
    corpus = Corpus(config.train_hdf_file)
    layout = resolve_layout(corpus, config.mode, config.feature_mode)
    valid = validation_set(config, layout)
    check_same_on_all_ranks(run_identity(config, corpus, valid), ranks)
    perturb = config.speaker_copies.perturbation()
    dataset = CropDataset(
        corpus,
        layout,
        config.crop_seconds(layout),
        config.normalization(),
        config.augment,
        perturb,
    )
    model_config = config.model_config(layout, dataset.columns)
    offsets = virtual_speaker_offsets(corpus.speaker_offsets, perturb.copies)
    sampler = SpeakerBatchSampler(offsets, config.batch_size, config.utts_per_speaker, config.seed)
    batches = RankSlice(sampler, ranks) if ranks.active else None  # this rank's share
    loader = training_loader(dataset, sampler, config.workers, device.type == "cuda", batches)
    n_classes = len(corpus.speakers) * perturb.copies
    model, verifier, loss = model_and_loss_of(config, model_config, n_classes, device)
    steps_per_epoch = min(len(sampler), config.max_steps_per_epoch or len(sampler))
    margin_schedule = config.loss.margin_schedule(steps_per_epoch) if loss.margin_head else None
    total_steps = config.epochs * steps_per_epoch
    opt = build_optimization(config.optim, model, loss, total_steps, device, margin_schedule)
    opt.replicas = replicate(model, loss, ranks, device, config.distributed.sync_bn)
    contract = EmbeddingContract(
        model_config, layout, config.normalization(), config.valid_window_seconds
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    return Run(
        config, corpus, contract, valid, sampler, loader, run_dir, opt, verifier, ranks=ranks
    )
