"""Which streams a model reads: modes (ptm / handcrafted / fusion) and handcrafted feature modes.

A feature mode names the handcrafted streams concatenated per frame (``mfbe_pitch`` = 80 log-mel
+ 1 pitch = 81 dims). Dims and frame rates are resolved from the corpus file, so other dims
(e.g. 64 log-mel bands or a 2-d Kaldi pitch) work without code changes.
"""

from __future__ import annotations

import dataclasses

from e2espk.data.corpus import PTM_KIND, Corpus
from e2espk.errors import InputDataError
from e2espk.modes import canonical_mode
from e2espk.registry import Registry

FEATURE_MODES: Registry[tuple[str, ...]] = Registry("feature mode")
FEATURE_MODES.register("mfbe_pitch")(("mfbe", "pitch"))
FEATURE_MODES.register("mfcc_pitch")(("mfcc", "pitch"))
FEATURE_MODES.register("mfbe_only", "mfbe")(("mfbe",))
FEATURE_MODES.register("mfcc_only", "mfcc")(("mfcc",))
FEATURE_MODES.register("pitch_only", "pitch")(("pitch",))


@dataclasses.dataclass(frozen=True)
class InputLayout:
    """What the model reads from a corpus and the shapes it gets.

    Attributes:
        mode: 'ptm', 'handcrafted' or 'fusion'.
        handcrafted_streams: streams concatenated into the handcrafted input, in order.
        handcrafted_dim: their summed per-frame dims.
        handcrafted_rate_hz: their common frame rate.
        ptm_layers, ptm_dim: PTM per-frame shape; ptm_pooled when stored without a time axis.
        ptm_rate_hz: PTM frame rate (None when pooled).
    """

    mode: str
    feature_mode: str = ""
    handcrafted_streams: tuple[str, ...] = ()
    handcrafted_dim: int = 0
    handcrafted_rate_hz: float | None = None
    ptm_layers: int = 0
    ptm_dim: int = 0
    ptm_pooled: bool = False
    ptm_rate_hz: float | None = None

    @property
    def uses_ptm(self) -> bool:
        return self.mode in ("ptm", "fusion")

    @property
    def uses_handcrafted(self) -> bool:
        return self.mode in ("handcrafted", "fusion")

    def streams(self) -> tuple[str, ...]:
        return ((PTM_KIND,) if self.uses_ptm else ()) + (
            self.handcrafted_streams if self.uses_handcrafted else ()
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: dict) -> InputLayout:
        values = dict(payload)
        values["handcrafted_streams"] = tuple(values.get("handcrafted_streams", ()))
        return cls(**values)


def resolve_layout(corpus: Corpus, mode: str | int, feature_mode: str) -> InputLayout:
    """Check the corpus has what ``mode``/``feature_mode`` need and describe the inputs."""
    mode = canonical_mode(mode)
    values: dict = {"mode": mode}
    if mode in ("handcrafted", "fusion"):
        names = FEATURE_MODES.get(feature_mode)
        values["feature_mode"] = FEATURE_MODES.canonical(feature_mode)
        missing = [name for name in names if name not in corpus.streams]
        if missing:
            raise InputDataError(
                corpus.path,
                f"feature mode {feature_mode!r} needs stream(s) {missing}; this corpus has: {', '.join(corpus.streams)}",
            )
        rates = {corpus.streams[name].frame_rate_hz for name in names}
        if len(rates) != 1 or None in rates:
            raise InputDataError(
                corpus.path,
                f"streams {list(names)} must share one frame rate, got {sorted(map(str, rates))}",
            )
        values.update(
            handcrafted_streams=tuple(names),
            handcrafted_dim=sum(corpus.streams[name].dims[0] for name in names),
            handcrafted_rate_hz=rates.pop(),
        )
    if mode in ("ptm", "fusion"):
        if PTM_KIND not in corpus.streams:
            raise InputDataError(
                corpus.path,
                f"mode {mode!r} needs a 'ptm' stream; this corpus has: {', '.join(corpus.streams)}",
            )
        spec = corpus.streams[PTM_KIND]
        values.update(
            ptm_layers=spec.dims[0],
            ptm_dim=spec.dims[1],
            ptm_pooled=not spec.time_axis,
            ptm_rate_hz=spec.frame_rate_hz,
        )
    return InputLayout(**values)


def check_compatible(layout: InputLayout, corpus: Corpus) -> None:
    """A model trained on ``layout`` can read ``corpus`` (same streams, dims and rates)."""
    other = resolve_layout(corpus, layout.mode, layout.feature_mode or "mfbe_pitch")
    if other != layout:
        differences = {
            key: (getattr(layout, key), getattr(other, key))
            for key in layout.to_dict()
            if getattr(layout, key) != getattr(other, key)
        }
        shown = ", ".join(
            f"{key}: model {a!r} vs file {b!r}" for key, (a, b) in differences.items()
        )
        raise InputDataError(corpus.path, f"does not match the model's inputs ({shown})")
