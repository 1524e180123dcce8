"""What the corpus allows: search-space rules that would otherwise fail a trial by construction.

A trial whose batch needs more speakers than the training corpus has, or whose feature mode
needs a stream the corpus lacks, fails before its first step; drawn from the default space it
wastes a trial and misleads the optimizer. Each rule reads a few TrainConfig fields and the
corpus facts, and says what is wrong (or None). The space is fitted to them in three ways:

- every field of a rule fixed (by flags or defaults): a violation is a ConfigError before any
  trial runs;
- one field of a rule searched as a choice: the choices are fitted (``--batch-size`` choices
  are clipped to the sizes the corpus allows, other choices that cannot work are dropped);
- several fields searched: a nevergrad cheap constraint, so the optimizer asks only points
  that satisfy it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from e2espk.data.corpus import PTM_KIND, Corpus
from e2espk.data.features import FEATURE_MODES
from e2espk.errors import ConfigError, E2eSpkError
from e2espk.modes import canonical_mode


@dataclasses.dataclass(frozen=True)
class CorpusLimits:
    """The facts about the training and validation corpora that the rules need."""

    train_path: str
    speakers: int  # training speakers
    streams: frozenset[str]  # streams in both corpora
    ptm_pooled: bool
    ranks: int = 1  # ranks of each trial (--gpus-per-trial, --tasks-per-trial)


def corpus_limits(train_path: str, valid_path: str | None) -> CorpusLimits:
    """Read the limits from the corpus indexes (no features are read)."""
    with Corpus(train_path) as train:
        streams = set(train.streams)
        pooled = PTM_KIND in train.streams and not train.streams[PTM_KIND].time_axis
        speakers = len(train.speakers)
    if valid_path:
        with Corpus(valid_path) as valid:
            streams &= set(valid.streams)
    return CorpusLimits(str(Path(train_path)), speakers, frozenset(streams), pooled)


Check = Callable[[Mapping[str, Any], CorpusLimits], "str | None"]


def speakers_per_batch(config: Mapping[str, Any], limits: CorpusLimits) -> str | None:
    batch, per_speaker = int(config["batch_size"]), int(config["utts_per_speaker"])
    if per_speaker < 2:
        return None  # TrainConfig names it
    if batch % per_speaker:
        return f"--batch-size {batch} is not a multiple of --utts-per-speaker {per_speaker}"
    speakers = batch // per_speaker
    if 2 <= speakers <= limits.speakers:
        return None
    return (
        f"--batch-size {batch} with --utts-per-speaker {per_speaker} takes {speakers} speakers "
        f"per batch; {limits.train_path} has {limits.speakers} (batch sizes from "
        f"{2 * per_speaker} to {per_speaker * limits.speakers} fit)"
    )


def batch_splits_over_ranks(config: Mapping[str, Any], limits: CorpusLimits) -> str | None:
    """A trial of several ranks gives each the same number of whole speakers of a batch."""
    batch, per_speaker = int(config["batch_size"]), int(config["utts_per_speaker"])
    granularity = limits.ranks * per_speaker
    if limits.ranks == 1 or per_speaker < 1 or batch % granularity == 0:
        return None
    return (
        f"--batch-size {batch} does not split over {limits.ranks} ranks: it must be a multiple "
        f"of {granularity} (ranks x --utts-per-speaker {per_speaker})"
    )


def streams_present(config: Mapping[str, Any], limits: CorpusLimits) -> str | None:
    try:
        mode = canonical_mode(config["mode"])
        names = FEATURE_MODES.get(config["feature_mode"])
    except E2eSpkError:
        return None  # an unknown name: TrainConfig names it
    needed = ((PTM_KIND,) if mode in ("ptm", "fusion") else ()) + (
        names if mode in ("handcrafted", "fusion") else ()
    )
    missing = [name for name in needed if name not in limits.streams]
    if not missing:
        return None
    what = f"mode {mode!r}" + (
        f" with feature mode {config['feature_mode']!r}" if mode != "ptm" else ""
    )
    return (
        f"{what} needs stream(s) {missing}; the train/valid corpora have: "
        f"{', '.join(sorted(limits.streams))}"
    )


def attention_has_frames(config: Mapping[str, Any], limits: CorpusLimits) -> str | None:
    try:
        fusion_mode = canonical_mode(config["mode"]) == "fusion"
    except E2eSpkError:
        return None
    if fusion_mode and config["fusion"] == "cross_attention" and limits.ptm_pooled:
        return "fusion 'cross_attention' needs PTM frames, but the corpus stores pooled PTM"
    return None


RULES: tuple[tuple[tuple[str, ...], Check], ...] = (
    (("batch_size", "utts_per_speaker"), speakers_per_batch),
    (("batch_size", "utts_per_speaker"), batch_splits_over_ranks),
    (("mode", "feature_mode"), streams_present),
    (("mode", "fusion"), attention_has_frames),
)


def problem(config: Mapping[str, Any], limits: CorpusLimits) -> str | None:
    """The first rule a full trial config breaks, or None."""
    for _, check in RULES:
        found = check(config, limits)
        if found:
            return found
    return None


@dataclasses.dataclass(frozen=True, eq=False)
class FitsCorpus:
    """The cheap constraint of a space: a candidate's value plus the fixed options break no rule
    (a class rather than a lambda, so the parametrization stays picklable)."""

    base: Mapping[str, Any]
    limits: CorpusLimits

    def __call__(self, value: Mapping[str, Any]) -> bool:
        return problem({**self.base, **value}, self.limits) is None


def clip_batch_sizes(choices: list[Any], per_speaker: int, limits: CorpusLimits) -> list[int]:
    """Batch-size choices moved into [2, speakers] speakers per batch (deduplicated, in order)."""
    low, high = 2 * per_speaker, per_speaker * limits.speakers
    return list(dict.fromkeys(min(max(int(c), low), high) for c in choices))


def fit_ranges(
    ranges: dict[str, dict[str, Any]], base: Mapping[str, Any], limits: CorpusLimits
) -> tuple[dict[str, dict[str, Any]], bool]:
    """Ranges fitted to the corpus, and whether a cheap constraint is still needed.

    ``ranges`` holds the searched fields only; ``base`` the fixed values of all the others.
    """
    fitted = dict(ranges)
    needs_constraint = False
    for fields, check in RULES:
        searched = [name for name in fields if name in fitted]
        if not searched:
            found = check(base, limits)
            if found:
                raise ConfigError(f"every trial would fail: {found}")
            continue
        if len(searched) > 1 or "choices" not in fitted[searched[0]]:
            needs_constraint = True
            continue
        name = searched[0]
        choices = list(fitted[name]["choices"])
        if name == "batch_size":
            choices = clip_batch_sizes(choices, int(base["utts_per_speaker"]), limits)
        kept = [c for c in choices if check({**base, name: c}, limits) is None]
        if not kept:
            found = check({**base, name: choices[0]}, limits)
            raise ConfigError(f"no {name} choice can work: {found}")
        fitted[name] = {"choices": kept}
    return fitted, needs_constraint
