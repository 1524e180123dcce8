"""The parts of TrainConfig: model, verifier, losses, optimisation, speaker copies.

Each part holds the options of one thing train.py builds and turns them into what that thing's
factory takes (``ModelConfig``, ``VerifierConfig`` and ``PairLossOptions``, the margin head's
kwargs, the optimizer's kwargs and ``ScheduleSpec``, ``SpeakerPerturbation``), so a factory
receives one part and nothing else. The field names are the train.py flags and the flat keys of
config files and checkpoints (``e2espk.config``); they are unique across the parts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from e2espk.config import option
from e2espk.data.features import InputLayout
from e2espk.data.speaker_perturb import SpeakerPerturbation
from e2espk.errors import ConfigError
from e2espk.losses.margin import MARGIN_HEADS
from e2espk.losses.mining import PAIR_MINERS
from e2espk.losses.pairwise import PairLossOptions
from e2espk.models.backbones import BACKBONES
from e2espk.models.config import FUSION_DIRECTIONS, GATE_GRANULARITIES, PTM_NORMS, ModelConfig
from e2espk.models.fusion import FUSIONS
from e2espk.models.pooling import POOLINGS
from e2espk.models.verification import DEFAULT_PAIR_FEATURES, PAIR_FEATURES, VerifierConfig
from e2espk.training.margin_schedule import MarginSchedule
from e2espk.training.optim import OPTIMIZERS, SCHEDULES, ScheduleSpec

AMP_MODES = ("auto", "off", "bf16", "fp16")


@dataclasses.dataclass
class ModelOptions:
    """The speaker embedding model's architecture (``ModelConfig`` without the input dims)."""

    fusion: str = option(
        "concat", choices=FUSIONS.choices(), help="how fusion mode combines the streams"
    )
    fusion_direction: str = option(
        "ptm_to_hc",
        choices=list(FUSION_DIRECTIONS),
        help="cross_attention: PTM attends to handcrafted, or both ways",
    )
    gate_granularity: str = option(
        "frame",
        choices=list(GATE_GRANULARITIES),
        help="gating: one gate per frame or per channel",
    )
    attention_heads: int = option(4, help="cross_attention heads")
    backbone: str = option(
        "ecapa_tdnn",
        choices=BACKBONES.choices(),
        help="frame-level network after the encoders/fusion",
    )
    backbone_channels: int | None = option(
        None, help="backbone width (default: the backbone's own)"
    )
    pooling: str = option("attentive_stats", choices=POOLINGS.choices(), help="temporal pooling")
    encoder_size: int = option(
        256, help="channels of the PTM/handcrafted encoders and the fusion output"
    )
    ptm_norm: str = option(
        "layer", choices=list(PTM_NORMS), help="normalisation of the weighted PTM layers"
    )
    latent_size: int = option(192, help="speaker embedding size")
    dropout_prob: float = option(
        0.0, help="dropout in the embedding model and the verification network"
    )
    # augmentation of the PTM frames inside the model (training mode only)
    ptm_time_masks: int = option(
        0, help="time masks per crop over PTM frames, independent of the others (0: off)"
    )
    ptm_time_mask_frames: int = option(5, help="widest PTM time mask, in PTM frames")
    ptm_layer_dropout: float = option(
        0.0, help="probability of dropping a PTM layer from an example's weighted sum (0: off)"
    )

    def model_config(
        self, layout: InputLayout, input_stats_columns: tuple[int, ...] = ()
    ) -> ModelConfig:
        """The architecture with the input dims of ``layout`` (checked where the model is
        built: ``ModelConfig.validate``)."""
        return ModelConfig(
            mode=layout.mode,
            ptm_layers=layout.ptm_layers or None,
            ptm_dim=layout.ptm_dim or None,
            ptm_pooled=layout.ptm_pooled,
            ptm_norm=self.ptm_norm,
            ptm_rate_hz=layout.ptm_rate_hz or 50.0,
            handcrafted_dim=layout.handcrafted_dim or None,
            handcrafted_rate_hz=layout.handcrafted_rate_hz or 100.0,
            fusion=self.fusion,
            fusion_direction=self.fusion_direction,
            gate_granularity=self.gate_granularity,
            attention_heads=self.attention_heads,
            hidden_size=self.encoder_size,
            backbone=self.backbone,
            backbone_channels=self.backbone_channels,
            pooling=self.pooling,
            latent_size=self.latent_size,
            dropout=self.dropout_prob,
            ptm_layer_dropout=self.ptm_layer_dropout,
            ptm_time_masks=self.ptm_time_masks,
            ptm_time_mask_frames=self.ptm_time_mask_frames,
            input_stats_columns=input_stats_columns,
        )


@dataclasses.dataclass
class VerifierOptions:
    """The verification network (learned distance) and the pairs it learns from."""

    verifier_hidden_size: int = option(
        256,
        help="verification network hidden size (--encoder-size is the encoders' width)",
        renamed_from=("hidden_size",),
    )
    n_hidden: int = option(2, help="verification network hidden layers")
    ndiscriminators: int = option(1, help="independent verification heads, averaged at scoring")
    rproj_size: int = option(
        0, help="fixed random projection of embeddings before the verifier (0: off)"
    )
    verifier_features: tuple[str, ...] = option(
        DEFAULT_PAIR_FEATURES,
        choices=PAIR_FEATURES.choices(),
        help="pair features the verifier reads: product and absdiff relate the two embeddings, "
        "sum also locates the pair in embedding space",
    )
    verifier_normalize: bool = option(
        False, help="L2-normalise embeddings before the verifier (it then cannot use their norm)"
    )
    verifier_dropout: float | None = option(
        None, help="dropout in the verification network (default: --dropout-prob)"
    )
    pair_mining: str = option(
        "random",
        choices=PAIR_MINERS.choices(),
        help="pairs of the pair loss: random (all same, random different), hard (hardest positive per crop, highest-cosine different pairs) or semi_hard (the most similar different pairs below the positives)",
    )
    pair_negatives_per_positive: float = option(
        1.0, help="different-speaker pairs per same-speaker pair in the pair loss (0: all)"
    )
    pair_label_smoothing: float = option(0.0, help="label smoothing of the pair loss's BCE targets")
    pair_detach: bool = option(
        False,
        help="the verifier learns on detached embeddings: the pair loss sends no gradient into the embedding network",
    )

    def validate(self) -> None:
        if not 0.0 <= (self.verifier_dropout or 0.0) < 1.0:
            raise ConfigError(f"--verifier-dropout must be in [0, 1), got {self.verifier_dropout}")
        self.pair_options()  # checks the miner name, ratio and smoothing

    def verifier_config(self, default_dropout: float, seed: int) -> VerifierConfig:
        """The architecture; ``default_dropout`` applies without --verifier-dropout, ``seed``
        draws the random projection."""
        dropout = default_dropout if self.verifier_dropout is None else self.verifier_dropout
        return VerifierConfig(
            hidden_size=self.verifier_hidden_size,
            n_hidden=self.n_hidden,
            dropout=dropout,
            rproj_size=self.rproj_size,
            ndiscriminators=self.ndiscriminators,
            normalize=self.verifier_normalize,
            seed=seed,
            features=tuple(self.verifier_features),
        )

    def pair_options(self) -> PairLossOptions:
        return PairLossOptions(
            self.pair_mining,
            self.pair_negatives_per_positive,
            self.pair_label_smoothing,
            self.pair_detach,
        )


@dataclasses.dataclass
class LossOptions:
    """The margin head, the weights of the two losses and the margin's warm-up."""

    softmax: str = option("aam_softmax", choices=MARGIN_HEADS.choices(), help="margin head")
    margin: float = option(0.2, help="margin of AM/AAM-softmax")
    scale: float = option(30.0, help="scale of AM/AAM-softmax")
    smoothing: float = option(0.0, help="label smoothing of the margin loss")
    margin_weight: float = option(1.0, help="weight of the margin loss (0: off)")
    pair_weight: float = option(1.0, help="weight of the verification-pair loss (0: off)")
    margin_start: float = option(
        0.0, help="margin during --margin-hold-epochs, where the --margin-warmup-epochs ramp starts"
    )
    margin_hold_epochs: float = option(
        0.0, help="epochs (fractions allowed) at --margin-start before the margin ramp"
    )
    margin_warmup_epochs: float = option(
        0.0,
        help="epochs of the linear ramp from --margin-start to --margin; with no hold either, --margin applies from the first step",
    )

    def validate(self) -> None:
        if self.margin_weight == 0 and self.pair_weight == 0:
            raise ConfigError("--margin-weight and --pair-weight are both 0: nothing to train")
        if min(self.margin_hold_epochs, self.margin_warmup_epochs) < 0:
            raise ConfigError("--margin-hold-epochs and --margin-warmup-epochs must be >= 0")

    def margin_head_kwargs(self) -> dict[str, Any]:
        """What ``MARGIN_HEADS.build(softmax, ...)`` takes besides the sizes."""
        return {"margin": self.margin, "scale": self.scale, "label_smoothing": self.smoothing}

    def margin_schedule(self, steps_per_epoch: int) -> MarginSchedule:
        return MarginSchedule.from_epochs(
            self.margin,
            self.margin_start,
            self.margin_hold_epochs,
            self.margin_warmup_epochs,
            steps_per_epoch,
        )


@dataclasses.dataclass
class OptimOptions:
    """The optimizer, its learning-rate schedule, gradient clipping and mixed precision."""

    optimizer: str = option("adam", choices=OPTIMIZERS.choices(), help="optimizer")
    lr: float = option(1e-3, help="peak learning rate")
    layer_weight_lr_scale: float = option(
        10.0,
        help="learning-rate multiplier of the PTM layer weights (they must move far in few steps)",
    )
    momentum: float = option(0.9, help="SGD momentum / Adam beta1")
    l2: float = option(1e-5, help="weight decay")
    verifier_l2: float | None = option(
        None, help="weight decay of the verification network (default: --l2)"
    )
    warmup: int = option(100, help="linear warmup steps")
    scheduler: str = option(
        "cosine", choices=SCHEDULES.choices(), help="learning-rate schedule after warmup"
    )
    min_lr_ratio: float = option(0.01, help="cosine: final lr as a fraction of --lr")
    step_every: int = option(1000, help="step schedule: steps between decays")
    step_gamma: float = option(0.5, help="step schedule: decay factor")
    plateau_patience: int = option(
        2, help="plateau schedule: validations without improvement before decaying"
    )
    max_gnorm: float = option(10.0, help="gradient-norm clipping (0: off)")
    amp: str = option(
        "auto",
        choices=list(AMP_MODES),
        help="mixed precision: auto (bf16 on CUDA if supported, off on CPU), off, bf16, fp16",
    )

    def optimizer_kwargs(self) -> dict[str, Any]:
        """What every ``OPTIMIZERS`` factory takes besides the parameters."""
        return {"lr": self.lr, "weight_decay": self.l2, "momentum": self.momentum}

    def schedule_spec(self, total_steps: int) -> ScheduleSpec:
        return ScheduleSpec(
            self.lr,
            total_steps,
            self.warmup,
            self.min_lr_ratio,
            self.step_every,
            self.step_gamma,
            self.plateau_patience,
        )


@dataclasses.dataclass
class SpeakerCopyOptions:
    """Speaker augmentation: warped copies of every training speaker as new speakers."""

    speaker_perturb: tuple[float, ...] = option(
        (),
        allow_empty=True,
        metavar="FACTOR",
        help="speaker augmentation: each speed factor (e.g. 0.9 1.1) adds a copy of every speaker "
        "as new speakers, log-mel warped in frequency and time (e2espk/data/speaker_perturb.py)",
    )
    speaker_vtlp: tuple[float, ...] = option(
        (),
        allow_empty=True,
        metavar="FACTOR",
        help="speaker copies with only the log-mel envelope moved by each factor (vocal tract "
        "length; no time stretch, pitch kept)",
    )
    speaker_tempo: tuple[float, ...] = option(
        (),
        allow_empty=True,
        metavar="FACTOR",
        help="speaker copies with only time sped up by each factor (speaking rate)",
    )
    speaker_pitch: tuple[float, ...] = option(
        (),
        allow_empty=True,
        metavar="FACTOR",
        help="speaker copies with only ln F0 moved by log(factor) (needs "
        "--speaker-perturb-log-f0-column)",
    )
    speaker_perturb_mel_hz: tuple[float, float] = option(
        (20.0, 8000.0),
        metavar="HZ",
        help="lowest and highest filterbank edge of the stored log-mel",
    )
    speaker_perturb_log_f0_column: int | None = option(
        None,
        metavar="COLUMN",
        help="column of the pitch stream that holds natural-log F0: speaker copies shift it by "
        "log(factor), as a real speed change would (default: pitch values are kept)",
    )

    def perturbation(self) -> SpeakerPerturbation:
        return SpeakerPerturbation(
            tuple(float(f) for f in self.speaker_perturb),
            tuple(float(f) for f in self.speaker_perturb_mel_hz),  # type: ignore[arg-type]
            self.speaker_perturb_log_f0_column,
            tuple(float(f) for f in self.speaker_vtlp),
            tuple(float(f) for f in self.speaker_tempo),
            tuple(float(f) for f in self.speaker_pitch),
        )
