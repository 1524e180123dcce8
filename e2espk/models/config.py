"""The speaker model's configuration: every field a checkpoint needs to rebuild the model.

A checkpoint stores ``ModelConfig.to_dict()``; eval and embed call ``ModelConfig.from_dict`` and
``build_speaker_model`` without any other input, so every architectural choice lives here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from e2espk.errors import ConfigError
from e2espk.modes import canonical_mode

PTM_NORMS = ("layer", "instance", "none")
FUSION_DIRECTIONS = ("ptm_to_hc", "both")
GATE_GRANULARITIES = ("frame", "channel")

C = TypeVar("C")


normalize_mode = canonical_mode  # the name this module has always exported


def config_from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Build the dataclass ``cls`` from ``data``, rejecting keys it does not define.

    Silently dropping an unknown key would let a typo in a config file go unnoticed.
    """
    valid = [field.name for field in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} key(s): {', '.join(unknown)}; valid keys: {', '.join(valid)}"
        )
    return cls(**dict(data))


def _check_positive_int(name: str, value: object, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        expected = "a positive integer or None" if optional else "a positive integer"
        raise ConfigError(f"{name} must be {expected}, got {value!r}")


def _check_rate(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{name} must be a positive frame rate in Hz, got {value!r}")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of: {', '.join(choices)}; got {value!r}")


@dataclass
class ModelConfig:
    """Architecture of the speaker embedding model (the fields are the documentation)."""

    # "ptm" (1): PTM hidden states only; "handcrafted" (2): handcrafted features only;
    # "fusion" (3): both streams, combined by ``fusion`` before the backbone.
    mode: str = "ptm"
    # PTM stream: batch["ptm"] is (B, T_p, L, D) at ptm_rate_hz, or (B, L, D) when pooled.
    ptm_layers: int | None = None  # L: hidden states per frame (13 for WavLM Base+)
    ptm_dim: int | None = None  # D: dims per hidden state (768 for WavLM Base+)
    ptm_pooled: bool = False  # PTM given as utterance-level means (B, L, D), no time axis
    ptm_norm: str = "layer"  # "layer" (LayerNorm over D) | "instance" (over time) | "none"
    ptm_rate_hz: float = 50.0  # PTM frame rate (20 ms hop)
    # Training only (no effect in eval mode): probability of leaving a layer out of an
    # example's weighted sum (the weights are renormalised over the kept layers), and time
    # masks over the mixed PTM frames: count per example and widest span in PTM frames.
    ptm_layer_dropout: float = 0.0
    ptm_time_masks: int = 0
    ptm_time_mask_frames: int = 5
    # Handcrafted stream: batch["handcrafted"] is (B, T_h, F) at handcrafted_rate_hz.
    handcrafted_dim: int | None = None  # F: concatenated streams, e.g. 81 = mfbe 80 + pitch 1
    handcrafted_rate_hz: float = 100.0  # handcrafted frame rate (10 ms hop)
    handcrafted_layers: int = 2  # Conv1d+BN+ReLU blocks in the handcrafted encoder
    handcrafted_kernel: int = 5  # kernel size (frames) of those blocks
    # Fusion mode: both streams must cover the same audio; a duration mismatch above this
    # fraction of the longer stream (+ 2 frames) is an error (None: resample whatever comes).
    max_duration_mismatch: float | None = 0.25
    fusion: str = "concat"  # FUSIONS name: concat | cross_attention | gating
    fusion_direction: str = "ptm_to_hc"  # cross_attention: "ptm_to_hc" | "both"
    gate_granularity: str = "frame"  # gating: "frame" (one scalar per frame) | "channel"
    attention_heads: int = 4  # cross_attention heads; must divide hidden_size
    hidden_size: int = 256  # channels C the encoders (and fusion) emit
    backbone: str = "ecapa_tdnn"  # BACKBONES name (each has a *_tiny variant)
    # Backbone width; None uses the backbone's own default (512 for ecapa_tdnn/tdnn/pooled_mlp,
    # base width 32 for resnet, a few channels for the *_tiny variants).
    backbone_channels: int | None = None
    pooling: str = "attentive_stats"  # POOLINGS name: attentive_stats | stats | mean
    # Columns of batch["handcrafted"] whose mean and std over time join the pooled vector
    # directly (e2espk/models/input_stats.py; e.g. the pitch stream's); () for none.
    input_stats_columns: tuple[int, ...] = ()
    latent_size: int = 192  # embedding dimension
    dropout: float = 0.0  # dropout after the encoders, in attention and before the embedding

    def __post_init__(self) -> None:
        self.mode = normalize_mode(self.mode)
        self.input_stats_columns = tuple(int(c) for c in self.input_stats_columns)

    @property
    def uses_ptm(self) -> bool:
        """Whether the model reads batch["ptm"]."""
        return self.mode in ("ptm", "fusion")

    @property
    def uses_handcrafted(self) -> bool:
        """Whether the model reads batch["handcrafted"]."""
        return self.mode in ("handcrafted", "fusion")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for checkpoints and YAML. Without input statistics the key is left
        out, so models that have none keep the dict (and embedding-cache key) they always had."""
        data = dataclasses.asdict(self)
        if not self.input_stats_columns:
            del data["input_stats_columns"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Inverse of ``to_dict``; unknown keys raise a ConfigError listing the valid ones."""
        return config_from_dict(cls, data)

    def validate(self) -> ModelConfig:
        """Raise ConfigError on a bad value or combination; return self for chaining."""
        # Imported here: the part modules import this one for type hints.
        from e2espk.models.backbones import BACKBONES
        from e2espk.models.fusion import FUSIONS
        from e2espk.models.pooling import POOLINGS

        self.mode = normalize_mode(self.mode)
        self.backbone = BACKBONES.canonical(self.backbone)
        self.pooling = POOLINGS.canonical(self.pooling)
        self.fusion = FUSIONS.canonical(self.fusion)
        for name in ("hidden_size", "latent_size", "attention_heads"):
            _check_positive_int(name, getattr(self, name))
        for name in ("handcrafted_layers", "handcrafted_kernel"):
            _check_positive_int(name, getattr(self, name))
        _check_positive_int("backbone_channels", self.backbone_channels, optional=True)
        _check_choice("ptm_norm", self.ptm_norm, PTM_NORMS)
        _check_choice("fusion_direction", self.fusion_direction, FUSION_DIRECTIONS)
        _check_choice("gate_granularity", self.gate_granularity, GATE_GRANULARITIES)
        for name in ("ptm_time_masks", "ptm_time_mask_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("dropout", "ptm_layer_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        # Rates only matter for streams with a time axis (a pooled PTM may carry None).
        if self.uses_ptm and not self.ptm_pooled:
            _check_rate("ptm_rate_hz", self.ptm_rate_hz)
        if self.uses_handcrafted:
            _check_rate("handcrafted_rate_hz", self.handcrafted_rate_hz)
        self._validate_streams()
        return self

    def _validate_streams(self) -> None:
        """Checks that depend on which streams the mode uses."""
        if self.uses_ptm:
            for name in ("ptm_layers", "ptm_dim"):
                if getattr(self, name) is None:
                    raise ConfigError(f"mode {self.mode!r} reads PTM features but {name} is unset")
                _check_positive_int(name, getattr(self, name))
            if self.ptm_pooled and self.ptm_norm == "instance":
                raise ConfigError(
                    "ptm_norm='instance' normalises over time, but pooled PTM has no time axis; "
                    "use ptm_norm='layer' or 'none'"
                )
        if self.uses_handcrafted:
            if self.handcrafted_dim is None:
                raise ConfigError(
                    f"mode {self.mode!r} reads handcrafted features but handcrafted_dim is unset"
                )
            _check_positive_int("handcrafted_dim", self.handcrafted_dim)
        bad = [c for c in self.input_stats_columns if not 0 <= c < (self.handcrafted_dim or 0)]
        if bad:
            raise ConfigError(
                f"input_stats_columns {bad} are not columns of the {self.handcrafted_dim or 0} "
                "handcrafted dims the model reads"
            )
        if self.mode != "fusion":
            return
        if self.fusion == "cross_attention":
            if self.ptm_pooled:
                raise ConfigError(
                    "fusion 'cross_attention' needs PTM frames to attend from, but ptm_pooled=True "
                    "gives one vector per utterance; use fusion 'concat' or 'gating'"
                )
            if self.hidden_size % self.attention_heads:
                raise ConfigError(
                    f"attention_heads ({self.attention_heads}) must divide hidden_size "
                    f"({self.hidden_size}) for fusion 'cross_attention'"
                )
        if self.max_duration_mismatch is not None and not 0 < self.max_duration_mismatch <= 1:
            raise ConfigError(
                "max_duration_mismatch must be in (0, 1] (a fraction of the longer stream's "
                f"duration) or None, got {self.max_duration_mismatch!r}"
            )
