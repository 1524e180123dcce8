"""TrainConfig: every option of train.py (the field help texts are the documentation)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from e2espk.config import option
from e2espk.data.augment import AugmentConfig
from e2espk.data.features import FEATURE_MODES, InputLayout
from e2espk.data.speaker_perturb import SpeakerPerturbation
from e2espk.data.transforms import ABSOLUTE_STREAMS, CMVN, Normalization
from e2espk.errors import ConfigError
from e2espk.losses.margin import MARGIN_HEADS
from e2espk.losses.mining import PAIR_MINERS
from e2espk.losses.pairwise import PairLossOptions
from e2espk.models.backbones import BACKBONES
from e2espk.models.config import ModelConfig
from e2espk.models.fusion import FUSIONS
from e2espk.models.pooling import POOLINGS
from e2espk.models.verification import DEFAULT_PAIR_FEATURES, PAIR_FEATURES, VerifierConfig
from e2espk.modes import MODE_ALIASES
from e2espk.scoring.backends import BACKENDS
from e2espk.scoring.scores import SCORE_TYPES
from e2espk.scoring.side_scores import SIDE_SCORES, SideScore, build_side_scores
from e2espk.training.margin_schedule import MarginSchedule
from e2espk.training.optim import OPTIMIZERS, SCHEDULES

_AUG = AugmentConfig()  # the augmentation defaults, shown by the flags below
METRICS = ("eer", "min_dcf@0.01", "min_dcf@0.05")
AMP_MODES = ("auto", "off", "bf16", "fp16")
FINAL_CHECKPOINTS = ("averaged", "last", "best")


@dataclasses.dataclass
class TrainConfig:
    """Options of train.py. Defaults < --config file.yaml < flags."""

    # data
    train_hdf_file: str = option("", help="training corpus (from data_prep.py)")
    valid_hdf_file: str | None = option(
        None, help="validation corpus (held-out speakers); no validation without it"
    )
    valid_trials: str | None = option(
        None,
        help="trial list over the valid corpus (Kaldi/VoxCeleb format); default: built from it, seeded",
    )
    valid_nontarget_ratio: float = option(
        3.0, help="built valid trials: non-target pairs per target pair"
    )
    valid_max_target: int = option(20000, help="built valid trials: at most this many target pairs")
    valid_window_seconds: float = option(
        4.0, help="validation embeddings average windows of this length"
    )
    mode: str = option(
        "fusion",
        choices=sorted(MODE_ALIASES),
        help="ptm (1), handcrafted (2) or fusion (3) of both",
    )
    feature_mode: str = option(
        "mfbe_pitch", choices=FEATURE_MODES.choices(), help="handcrafted streams the model reads"
    )
    n_frames: int = option(
        200, help="crop length in frames of the fastest stream used (200 = 2 s at 100 Hz)"
    )
    cmvn: str = option(
        "mean", choices=CMVN.names(), help="per-crop normalisation of handcrafted features"
    )
    cmvn_skip_streams: tuple[str, ...] = option(
        ABSOLUTE_STREAMS,
        allow_empty=True,
        metavar="STREAM",
        help="handcrafted streams --cmvn leaves as they are: the level of log F0 is the speaker's "
        "pitch, not a channel offset (give the flag with no stream to normalise all, as before)",
    )
    input_stats_streams: tuple[str, ...] = option(
        (),
        allow_empty=True,
        metavar="STREAM",
        help="handcrafted streams whose utterance mean and std over time join the pooled vector "
        "directly (e.g. pitch: its level and range; e2espk/models/input_stats.py); a stream the "
        "model does not read is an error",
    )
    batch_size: int = option(64, help="training batch: speakers x --utts-per-speaker crops")
    utts_per_speaker: int = option(2, help="utterances per speaker in a batch (K of P x K)")
    valid_batch_size: int = option(64, help="windows per batch when embedding the valid corpus")
    workers: int = option(0, help="DataLoader worker processes")
    # augmentation of training crops (validation and eval never are); e2espk/data/augment.py
    spec_time_masks: int = option(
        _AUG.spec_time_masks, help="SpecAugment time masks per crop over log-mel/MFCC (0: off)"
    )
    spec_time_mask_frames: int = option(
        _AUG.spec_time_mask_frames, help="widest time mask, in handcrafted frames"
    )
    spec_freq_masks: int = option(
        _AUG.spec_freq_masks, help="frequency masks per crop over log-mel/MFCC bins (0: off)"
    )
    spec_freq_mask_bins: int = option(
        _AUG.spec_freq_mask_bins, help="widest frequency mask, in bins (never over pitch)"
    )
    spec_gain_db: float = option(
        _AUG.spec_gain_db,
        help="random log-mel gain in [-x, x] dB (needs --cmvn none: CMN removes it)",
    )
    spec_tilt_db: float = option(
        _AUG.spec_tilt_db,
        help="random log-mel tilt, lowest to highest band in [-x, x] dB (needs --cmvn none)",
    )
    spec_mix_prob: float = option(
        _AUG.spec_mix_prob,
        help="probability of adding another speaker's log-mel crop as noise (0: off)",
    )
    spec_mix_snr_db: tuple[float, float] = option(
        _AUG.spec_mix_snr_db, metavar="DB", help="SNR range (LOW HIGH) of that mix"
    )
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
    ptm_time_masks: int = option(
        0, help="time masks per crop over PTM frames, independent of the others (0: off)"
    )
    ptm_time_mask_frames: int = option(5, help="widest PTM time mask, in PTM frames")
    ptm_layer_dropout: float = option(
        0.0, help="probability of dropping a PTM layer from an example's weighted sum (0: off)"
    )
    # model
    fusion: str = option(
        "concat", choices=FUSIONS.choices(), help="how fusion mode combines the streams"
    )
    fusion_direction: str = option(
        "ptm_to_hc",
        choices=["ptm_to_hc", "both"],
        help="cross_attention: PTM attends to handcrafted, or both ways",
    )
    gate_granularity: str = option(
        "frame", choices=["frame", "channel"], help="gating: one gate per frame or per channel"
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
        "layer",
        choices=["layer", "instance", "none"],
        help="normalisation of the weighted PTM layers",
    )
    latent_size: int = option(192, help="speaker embedding size")
    dropout_prob: float = option(
        0.0, help="dropout in the embedding model and the verification network"
    )
    # verification network (learned distance)
    hidden_size: int = option(256, help="verification network hidden size")
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
    # losses
    softmax: str = option("aam_softmax", choices=MARGIN_HEADS.choices(), help="margin head")
    margin: float = option(0.2, help="margin of AM/AAM-softmax")
    scale: float = option(30.0, help="scale of AM/AAM-softmax")
    smoothing: float = option(0.0, help="label smoothing of the margin loss")
    margin_weight: float = option(1.0, help="weight of the margin loss (0: off)")
    pair_weight: float = option(1.0, help="weight of the verification-pair loss (0: off)")
    # generalisation to unseen speakers: margin warm-up, a second stage, checkpoint averaging
    # and the exported checkpoint, pair mining and verifier regularisation
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
    init_from: str | None = option(
        None,
        help="start from this checkpoint's model, verifier and margin-head weights (not its optimizer or schedule), e.g. a large-margin second stage; the architecture flags must match it",
    )
    average_last: int = option(
        3,
        help="average the weights of the last N epochs into averaged.pt (BatchNorm statistics averaged too) and validate it once (0 or 1: off)",
    )
    final_checkpoint: str = option(
        "averaged",
        choices=list(FINAL_CHECKPOINTS),
        help="which checkpoint final.pt is: averaged.pt, last.pt, or best.pt (picked by --select-metric on the valid speakers)",
    )
    hard_speaker_groups: int = option(
        1,
        help="batches of groups of this many similar speakers (an anchor and its nearest by the "
        "margin head's class weights, re-ranked every epoch: hard prototype mining); 1: random speakers",
    )
    hard_speaker_pool: int = option(
        16, help="hard speaker groups draw from each anchor's this many most similar speakers"
    )
    hard_speaker_from_epoch: int = option(
        1, help="first epoch with hard speaker groups (the head means nothing before it learns)"
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
    verifier_dropout: float | None = option(
        None, help="dropout in the verification network (default: --dropout-prob)"
    )
    verifier_l2: float | None = option(
        None, help="weight decay of the verification network (default: --l2)"
    )
    # optimisation
    optimizer: str = option("adam", choices=OPTIMIZERS.choices(), help="optimizer")
    lr: float = option(1e-3, help="peak learning rate")
    layer_weight_lr_scale: float = option(
        10.0,
        help="learning-rate multiplier of the PTM layer weights (they must move far in few steps)",
    )
    momentum: float = option(0.9, help="SGD momentum / Adam beta1")
    l2: float = option(1e-5, help="weight decay")
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
    epochs: int = option(10, help="training epochs (one epoch covers the corpus about once)")
    max_steps_per_epoch: int = option(0, help="cap on steps per epoch (0: no cap), for quick runs")
    patience: int = option(
        0, help="early stopping: epochs without improvement of --select-metric (0: off)"
    )
    side_scores: list[str] = option(
        default_factory=list,
        choices=SIDE_SCORES.choices(),
        help="utterance-level scores fused with cosine and learned, weights fitted on the valid "
        "trials and stored in the checkpoint: pitch_level (-|median ln F0 a - b| over voiced "
        "frames of the pitch stream; e2espk.scoring.side_scores)",
    )
    pitch_log_f0_column: int = option(
        0, help="pitch_level side score: the pitch stream's column of natural-log F0"
    )
    pitch_voicing_column: int | None = option(
        1,
        help="pitch_level side score: the pitch stream's voicing column (> 0.5: voiced); "
        "negative: none, the median is over all frames",
    )
    fusion_backends: list[str] = option(
        default_factory=list,
        choices=BACKENDS.choices(),
        help="back-ends (e.g. plda) fitted on training embeddings when final.pt is exported; "
        "their scores join its score fusion, refitted on the valid trials, so eval's fused "
        "score includes them",
    )
    fusion_backend_max_utterances: int = option(
        20000, help="--fusion-backends: at most this many training utterances (seeded sample)"
    )
    select_metric: str = option(
        "fused/eer",
        help="metric that picks the best checkpoint and stops early: SCORE/METRIC with SCORE in cosine|learned|fused and METRIC in eer|min_dcf@0.01|min_dcf@0.05",
    )
    # run
    checkpoint_path: str = option(
        "runs/exp", help="experiment directory: checkpoints, config, history, log"
    )
    logdir: str | None = option(None, help="TensorBoard directory (default: CHECKPOINT_PATH/tb)")
    save_every: int = option(
        0, help="also keep a checkpoint every N epochs (0: only best and last)"
    )
    resume: bool = option(False, help="continue from CHECKPOINT_PATH/last.pt if it exists")
    seed: int = option(0, help="random seed")
    threads: int | None = option(
        None,
        help="torch CPU threads (default: torch's); CPU results depend on it, so a run is reproduced with the same value",
    )
    device: str = option("auto", help="auto, cpu, cuda, cuda:1, ...")
    progress: bool = option(True, help="progress bars")

    def validate(self) -> TrainConfig:
        """Reject bad combinations before any data is read or model built."""
        if not self.train_hdf_file:
            raise ConfigError("--train-hdf-file is required")
        score, _, metric = self.select_metric.partition("/")
        if score not in SCORE_TYPES or metric not in METRICS:
            raise ConfigError(
                f"--select-metric {self.select_metric!r}: use SCORE/METRIC with SCORE in {SCORE_TYPES} and METRIC in {METRICS}"
            )
        needs_verifier = score == "learned" or (score == "fused" and not self.side_scores)
        if needs_verifier and self.pair_weight == 0:
            raise ConfigError(
                f"--select-metric {self.select_metric} needs the verification network, but --pair-weight is 0"
            )
        if self.margin_weight == 0 and self.pair_weight == 0:
            raise ConfigError("--margin-weight and --pair-weight are both 0: nothing to train")
        if self.batch_size % self.utts_per_speaker:
            raise ConfigError(
                f"--batch-size {self.batch_size} must be a multiple of --utts-per-speaker {self.utts_per_speaker}"
            )
        if self.n_frames < 2 or self.epochs < 1 or self.lr <= 0:
            raise ConfigError("--n-frames must be >= 2, --epochs >= 1 and --lr > 0")
        if self.valid_trials and not self.valid_hdf_file:
            raise ConfigError("--valid-trials needs --valid-hdf-file")
        if (self.side_scores or self.fusion_backends) and not self.valid_hdf_file:
            raise ConfigError(
                "--side-scores and --fusion-backends are fused with weights fitted on the "
                "valid trials: give --valid-hdf-file"
            )
        if self.pitch_log_f0_column < 0:
            raise ConfigError(f"--pitch-log-f0-column must be >= 0, got {self.pitch_log_f0_column}")
        self.side_score_set()  # checks the names
        self._validate_generalisation()
        self.augment_config().validate(self.cmvn)
        return self

    def _validate_generalisation(self) -> None:
        if self.hard_speaker_groups < 1 or self.hard_speaker_pool < 1:
            raise ConfigError("--hard-speaker-groups and --hard-speaker-pool must be >= 1")
        if self.hard_speaker_groups > 1 and self.margin_weight == 0:
            raise ConfigError(
                "--hard-speaker-groups ranks speakers by the margin head's class weights, "
                "but --margin-weight is 0 (no head)"
            )
        if min(self.margin_hold_epochs, self.margin_warmup_epochs, self.average_last) < 0:
            raise ConfigError(
                "--margin-hold-epochs, --margin-warmup-epochs and --average-last must be >= 0"
            )
        if self.final_checkpoint == "averaged" and self.average_last < 2:
            raise ConfigError(
                f"--final-checkpoint averaged needs --average-last >= 2 (got {self.average_last}); use --final-checkpoint last or best"
            )
        if self.final_checkpoint == "best" and not self.valid_hdf_file:
            raise ConfigError("--final-checkpoint best needs --valid-hdf-file to pick it")
        if self.pair_detach and self.pair_weight > 0 and self.margin_weight == 0:
            raise ConfigError(
                "--pair-detach with --margin-weight 0: nothing would train the embedding network"
            )
        if not 0.0 <= (self.verifier_dropout or 0.0) < 1.0:
            raise ConfigError(f"--verifier-dropout must be in [0, 1), got {self.verifier_dropout}")
        self.pair_options()  # checks the miner name, ratio and smoothing

    def side_score_set(self) -> dict[str, SideScore]:
        """The side scores fused with the embedding scores, by name, with their options."""
        voicing = self.pitch_voicing_column
        options = {
            "pitch_level": {
                "log_f0_column": self.pitch_log_f0_column,
                "voicing_column": None if voicing is None or voicing < 0 else voicing,
            }
        }
        return build_side_scores(self.side_scores, options)

    def pair_options(self) -> PairLossOptions:
        return PairLossOptions(
            self.pair_mining,
            self.pair_negatives_per_positive,
            self.pair_label_smoothing,
            self.pair_detach,
        )

    def margin_schedule(self, steps_per_epoch: int) -> MarginSchedule:
        return MarginSchedule.from_epochs(
            self.margin,
            self.margin_start,
            self.margin_hold_epochs,
            self.margin_warmup_epochs,
            steps_per_epoch,
        )

    def normalization(self) -> Normalization:
        """The per-crop CMN of the handcrafted frames, for training, validation and eval."""
        return Normalization(self.cmvn, tuple(str(name) for name in self.cmvn_skip_streams))

    def speaker_perturbation(self) -> SpeakerPerturbation:
        return SpeakerPerturbation(
            tuple(float(f) for f in self.speaker_perturb),
            tuple(float(f) for f in self.speaker_perturb_mel_hz),  # type: ignore[arg-type]
            self.speaker_perturb_log_f0_column,
            tuple(float(f) for f in self.speaker_vtlp),
            tuple(float(f) for f in self.speaker_tempo),
            tuple(float(f) for f in self.speaker_pitch),
        )

    def augment_config(self) -> AugmentConfig:
        """Augmentation of the training crops (the fields of the same names)."""
        names = [field.name for field in dataclasses.fields(AugmentConfig)]
        values = {name: getattr(self, name) for name in names}
        values["spec_mix_snr_db"] = tuple(values["spec_mix_snr_db"])
        return AugmentConfig(**values)

    def model_config(
        self, layout: InputLayout, columns: Mapping[str, slice] | None = None
    ) -> ModelConfig:
        """The architecture, with input dims resolved from the corpus; ``columns`` (where each
        handcrafted stream sits in the model's input) resolves --input-stats-streams."""
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
            input_stats_columns=self.input_stats_columns(layout, columns or {}),
        ).validate()

    def input_stats_columns(
        self, layout: InputLayout, columns: Mapping[str, slice]
    ) -> tuple[int, ...]:
        """The model-input columns of --input-stats-streams."""
        missing = [s for s in self.input_stats_streams if s not in columns]
        if missing:
            read = ", ".join(layout.handcrafted_streams) if layout.uses_handcrafted else "none"
            raise ConfigError(
                f"--input-stats-streams {' '.join(missing)}: the model reads no such handcrafted "
                f"stream (mode {layout.mode}, feature mode {layout.feature_mode}: {read})"
            )
        return tuple(
            c for s in self.input_stats_streams for c in range(columns[s].start, columns[s].stop)
        )

    def verifier_config(self) -> VerifierConfig:
        return VerifierConfig(
            hidden_size=self.hidden_size,
            n_hidden=self.n_hidden,
            dropout=self.dropout_prob if self.verifier_dropout is None else self.verifier_dropout,
            rproj_size=self.rproj_size,
            ndiscriminators=self.ndiscriminators,
            normalize=self.verifier_normalize,
            seed=self.seed,
            features=tuple(self.verifier_features),
        )

    def crop_seconds(self, layout: InputLayout) -> float:
        """--n-frames counted at the fastest frame rate the model reads."""
        rates = [
            rate
            for rate in (
                layout.ptm_rate_hz if layout.uses_ptm else None,
                layout.handcrafted_rate_hz if layout.uses_handcrafted else None,
            )
            if rate
        ]
        return self.n_frames / max(rates) if rates else 1.0
