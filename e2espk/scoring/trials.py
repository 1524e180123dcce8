"""Trial lists: reading the formats people have, and building seeded lists from a corpus.

Formats (detected per file from its first line):
- Kaldi: ``enroll test target|nontarget``;
- VoxCeleb: ``1|0 enroll test``;
- unlabeled: ``enroll test`` (blind scoring).

Ids are matched to a corpus the way people name one utterance: exactly when the corpus has the
id, else without an audio extension and with VoxCeleb's ``/`` as the Kaldi recipes' ``-``, so
the official ``id10270/5r0dWxy17C8/00001.wav`` finds ``id10270/5r0dWxy17C8/00001`` (the
``files`` source) and ``id10270-5r0dWxy17C8-00001`` (a Kaldi data dir).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from e2espk.errors import InputDataError

KALDI_LABELS = {"target": True, "nontarget": False}
AUDIO_SUFFIXES = (".wav", ".flac", ".m4a", ".opus", ".mp3")


@dataclasses.dataclass(frozen=True)
class Trials:
    """Pairs of utterance ids, with labels when known (True = same speaker)."""

    enroll: list[str]
    test: list[str]
    labels: np.ndarray | None = None  # (N,) bool

    def __len__(self) -> int:
        return len(self.enroll)

    def utterances(self) -> set[str]:
        return set(self.enroll) | set(self.test)

    def subset(self, keep: np.ndarray) -> Trials:
        index = np.flatnonzero(keep)
        return Trials(
            [self.enroll[i] for i in index],
            [self.test[i] for i in index],
            None if self.labels is None else self.labels[index],
        )

    def renamed(self, mapping: dict[str, str]) -> Trials:
        """The same trials with ids replaced through ``mapping`` (ids not in it are kept)."""
        return Trials(
            [mapping.get(u, u) for u in self.enroll],
            [mapping.get(u, u) for u in self.test],
            self.labels,
        )


def utterance_key(utterance: str) -> str:
    """What the usual names of one utterance share: no audio extension, ``-`` for ``/``."""
    lowered = utterance.lower()
    for suffix in AUDIO_SUFFIXES:
        if lowered.endswith(suffix):
            utterance = utterance[: -len(suffix)]
            break
    return utterance.replace("/", "-")


def match_utterances(
    wanted: Iterable[str], present: Sequence[str], source: str | Path
) -> dict[str, str]:
    """The corpus id each wanted id names; ids that name none are left out.

    An id the corpus has is itself (exact wins). Otherwise it names the one corpus id with the
    same :func:`utterance_key`, so trial lists and utterance lists written with or without
    ``.wav`` and with VoxCeleb or Kaldi-recipe ids all work.

    Raises:
        InputDataError: an id whose key two corpus ids share (say ``a.wav`` and ``a.flac``):
            guessing would score the wrong recording.
    """
    exact = set(present)
    mapping: dict[str, str] = {}
    by_key: dict[str, list[str]] | None = None
    for utterance in wanted:
        if utterance in exact:
            mapping[utterance] = utterance
            continue
        if by_key is None:
            by_key = {}
            for corpus_id in present:
                by_key.setdefault(utterance_key(corpus_id), []).append(corpus_id)
        candidates = by_key.get(utterance_key(utterance), [])
        if len(candidates) > 1:
            raise InputDataError(
                source,
                f"{utterance!r} is not in the corpus and could name any of {sorted(candidates)}, "
                "which differ only in audio extension or '/' vs '-'; name one exactly",
            )
        if candidates:
            mapping[utterance] = candidates[0]
    return mapping


def _parse_line(path: Path, number: int, parts: list[str]) -> tuple[str, str, bool | None]:
    if len(parts) == 3 and parts[2] in KALDI_LABELS:
        return parts[0], parts[1], KALDI_LABELS[parts[2]]
    if len(parts) == 3 and parts[0] in ("0", "1"):
        return parts[1], parts[2], parts[0] == "1"
    if len(parts) == 2:
        return parts[0], parts[1], None
    raise InputDataError(
        path,
        f"line {number}: {' '.join(parts)!r} is not 'enroll test target|nontarget', '1|0 enroll test' or 'enroll test'",
    )


def read_trials(path: str | Path) -> Trials:
    """Read a trial list; every line must have the same format (labelled or not)."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(path, "trial list not found")
    enroll: list[str] = []
    test: list[str] = []
    labels: list[bool | None] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            parts = line.split()
            if not parts:
                continue
            a, b, label = _parse_line(path, number, parts)
            if labels and (label is None) != (labels[0] is None):
                raise InputDataError(path, f"line {number}: mixes labelled and unlabelled trials")
            enroll.append(a)
            test.append(b)
            labels.append(label)
    if not enroll:
        raise InputDataError(path, "no trials")
    return Trials(enroll, test, None if labels[0] is None else np.array(labels, dtype=bool))


def build_trials(
    utterances: list[str],
    speakers: list[str],
    nontarget_ratio: float = 1.0,
    max_target: int | None = None,
    seed: int = 0,
) -> Trials:
    """All same-speaker pairs (or a seeded sample of ``max_target``) and a seeded sample of
    different-speaker pairs, ``nontarget_ratio`` times as many as the target pairs."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(speakers)
    first, second = np.triu_indices(len(utterances), k=1)
    same = labels[first] == labels[second]
    target = np.flatnonzero(same)
    if max_target is not None and target.size > max_target:
        target = np.sort(rng.choice(target, max_target, replace=False))
    others = np.flatnonzero(~same)
    n_non = min(others.size, max(1, round(target.size * nontarget_ratio)))
    nontarget = np.sort(rng.choice(others, n_non, replace=False))
    chosen = np.concatenate([target, nontarget])
    return Trials(
        [utterances[i] for i in first[chosen]],
        [utterances[i] for i in second[chosen]],
        np.concatenate([np.ones(target.size, bool), np.zeros(nontarget.size, bool)]),
    )
