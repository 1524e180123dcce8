"""TrainConfig: every option of train.py (the field help texts are the documentation).

TrainConfig holds the data, validation and run options itself and the options of what it
builds in parts (``e2espk.training.config_parts``; the augmentation part is
``e2espk.data.augment.AugmentConfig``). Flags, config files and checkpoints see one flat set of
options (``e2espk.config``); code reaches an option through its part (``config.optim.lr``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from e2espk.config import from_flat, option, part, replace_flat, upgrade_keys
from e2espk.data.augment import AugmentConfig
from e2espk.data.features import FEATURE_MODES, InputLayout
from e2espk.data.transforms import ABSOLUTE_STREAMS, CMVN, Normalization
from e2espk.distributed.options import DistributedOptions
from e2espk.errors import ConfigError
from e2espk.models.config import ModelConfig
from e2espk.models.verification import VerifierConfig
from e2espk.modes import MODE_ALIASES
from e2espk.scoring.backends import BACKENDS
from e2espk.scoring.scores import SCORE_TYPES
from e2espk.scoring.side_scores import SIDE_SCORES, SideScore, build_side_scores
from e2espk.training.config_parts import (
    LossOptions,
    ModelOptions,
    OptimOptions,
    SpeakerCopyOptions,
    VerifierOptions,
)

METRICS = ("eer", "min_dcf@0.01", "min_dcf@0.05")
FINAL_CHECKPOINTS = ("averaged", "last", "best")
SCORE_METRIC_HELP = (
    f"SCORE/METRIC with SCORE in {'|'.join(SCORE_TYPES)} and METRIC in {'|'.join(METRICS)}"
)


def check_score_metric(value: str, flag: str) -> tuple[str, str]:
    """(score, metric) of a ``SCORE/METRIC`` option such as ``fused/eer``."""
    score, _, metric = value.partition("/")
    if score not in SCORE_TYPES or metric not in METRICS:
        raise ConfigError(f"{flag} {value!r}: use {SCORE_METRIC_HELP}, e.g. fused/eer")
    return score, metric


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
    # the parts
    augment: AugmentConfig = part(
        AugmentConfig, "augmentation of the training crops (e2espk/data/augment.py)"
    )
    speaker_copies: SpeakerCopyOptions = part(
        SpeakerCopyOptions, "speaker copies: warped copies of the training speakers as new ones"
    )
    model: ModelOptions = part(ModelOptions, "the speaker embedding model's architecture")
    verifier: VerifierOptions = part(
        VerifierOptions, "the verification network (learned distance) and its pairs"
    )
    loss: LossOptions = part(LossOptions, "the margin head and the weights of the losses")
    optim: OptimOptions = part(
        OptimOptions, "optimizer, learning-rate schedule, clipping, mixed precision"
    )
    distributed: DistributedOptions = part(
        DistributedOptions, "several ranks under torchrun (README: Scaling out)"
    )
    # training length, validation and the exported checkpoint
    epochs: int = option(10, help="training epochs (one epoch covers the corpus about once)")
    max_steps_per_epoch: int = option(0, help="cap on steps per epoch (0: no cap), for quick runs")
    patience: int = option(
        0, help="early stopping: epochs without improvement of --select-metric (0: off)"
    )
    side_scores: list[str] = option(
        default_factory=list,
        allow_empty=True,
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
        allow_empty=True,
        choices=BACKENDS.choices(),
        help="back-ends (e.g. plda) fitted on training embeddings when final.pt is exported; "
        "their scores join its score fusion, refitted on the valid trials, so eval's fused "
        "score includes them",
    )
    fusion_backend_max_utterances: int = option(
        20000,
        help="--fusion-backends / --fusion-asnorm: at most this many training utterances (seeded sample)",
    )
    fusion_asnorm: bool = option(
        False,
        help="at export, also fit a fusion of AS-normed scores (cohort: training utterances) "
        "and raw side scores on the valid trials: eval's fused_asnorm (e2espk.inference.cohort)",
    )
    fusion_asnorm_top_n: int = option(300, help="--fusion-asnorm: top-N cohort scores per side")
    select_metric: str = option(
        "fused/eer",
        help=f"metric that picks the best checkpoint and stops early: {SCORE_METRIC_HELP}",
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

    @classmethod
    def from_flat(cls, values: Mapping[str, Any], where: str | None = "") -> TrainConfig:
        """A TrainConfig from flat ``option: value`` pairs (flags' names, config-file keys,
        ``config_to_dict``, a search's trial); options left out keep their defaults."""
        return from_flat(cls, values, where)

    @staticmethod
    def upgrade_keys(values: Mapping[str, Any]) -> dict[str, Any]:
        """Flat options saved before a rename (a checkpoint's ``train_config``) under their
        current names, quietly."""
        return upgrade_keys(TrainConfig, values, None)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` given by flat option names (``lr=...``, ``backbone=...``)."""
        return replace_flat(self, changes)

    def validate(self) -> TrainConfig:
        """Reject bad combinations before any data is read or model built."""
        if not self.train_hdf_file:
            raise ConfigError("--train-hdf-file is required")
        score, _ = check_score_metric(self.select_metric, "--select-metric")
        needs_verifier = score == "learned" or (score == "fused" and not self.side_scores)
        if needs_verifier and self.loss.pair_weight == 0:
            raise ConfigError(
                f"--select-metric {self.select_metric} needs the verification network, but --pair-weight is 0"
            )
        self.loss.validate()
        if self.batch_size % self.utts_per_speaker:
            raise ConfigError(
                f"--batch-size {self.batch_size} must be a multiple of --utts-per-speaker {self.utts_per_speaker}"
            )
        if self.n_frames < 2 or self.epochs < 1 or self.optim.lr <= 0:
            raise ConfigError("--n-frames must be >= 2, --epochs >= 1 and --lr > 0")
        if self.valid_trials and not self.valid_hdf_file:
            raise ConfigError("--valid-trials needs --valid-hdf-file")
        if (
            self.side_scores or self.fusion_backends or self.fusion_asnorm
        ) and not self.valid_hdf_file:
            raise ConfigError(
                "--side-scores, --fusion-backends and --fusion-asnorm are fused with weights "
                "fitted on the valid trials: give --valid-hdf-file"
            )
        if self.fusion_asnorm_top_n < 1:
            raise ConfigError(f"--fusion-asnorm-top-n must be >= 1, got {self.fusion_asnorm_top_n}")
        if self.pitch_log_f0_column < 0:
            raise ConfigError(f"--pitch-log-f0-column must be >= 0, got {self.pitch_log_f0_column}")
        self.side_score_set()  # checks the names
        self._validate_generalisation()
        self.verifier.validate()
        self.augment.validate(self.cmvn)
        self.distributed.validate()
        return self

    def _validate_generalisation(self) -> None:
        if self.hard_speaker_groups < 1 or self.hard_speaker_pool < 1:
            raise ConfigError("--hard-speaker-groups and --hard-speaker-pool must be >= 1")
        if self.hard_speaker_groups > 1 and self.loss.margin_weight == 0:
            raise ConfigError(
                "--hard-speaker-groups ranks speakers by the margin head's class weights, "
                "but --margin-weight is 0 (no head)"
            )
        if self.average_last < 0:
            raise ConfigError(f"--average-last must be >= 0, got {self.average_last}")
        if self.final_checkpoint == "averaged" and self.average_last < 2:
            raise ConfigError(
                f"--final-checkpoint averaged needs --average-last >= 2 (got {self.average_last}); use --final-checkpoint last or best"
            )
        if self.final_checkpoint == "best" and not self.valid_hdf_file:
            raise ConfigError("--final-checkpoint best needs --valid-hdf-file to pick it")
        if self.verifier.pair_detach and self.loss.pair_weight > 0 and self.loss.margin_weight == 0:
            raise ConfigError(
                "--pair-detach with --margin-weight 0: nothing would train the embedding network"
            )

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

    def normalization(self) -> Normalization:
        """The per-crop CMN of the handcrafted frames, for training, validation and eval."""
        return Normalization(self.cmvn, tuple(str(name) for name in self.cmvn_skip_streams))

    def model_config(
        self, layout: InputLayout, columns: Mapping[str, slice] | None = None
    ) -> ModelConfig:
        """The architecture, with input dims resolved from the corpus; ``columns`` (where each
        handcrafted stream sits in the model's input) resolves --input-stats-streams."""
        return self.model.model_config(layout, self.input_stats_columns(layout, columns or {}))

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
        """The verifier's architecture: dropout defaults to the model's, the run's seed draws
        its random projection."""
        return self.verifier.verifier_config(self.model.dropout_prob, self.seed)

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
