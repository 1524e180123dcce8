"""Deterministic train/valid splits of an utt -> speaker map.

Verification is evaluated on unseen speakers, so the default held-out set is whole speakers;
splitting each speaker's utterances is there for closed-set checks.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping

import numpy as np

from e2espk.errors import ConfigError
from e2espk.registry import Registry

Splitter = Callable[[Mapping[str, str], float, int], dict[str, str]]
SPLITTERS: Registry[Splitter] = Registry("split")


def filter_min_recordings(
    utt2spk: Mapping[str, str], min_recordings: int
) -> tuple[dict[str, str], int]:
    """Drop speakers with fewer than ``min_recordings`` utterances; return (kept map, dropped count)."""
    counts = Counter(utt2spk.values())
    kept = {utt: spk for utt, spk in utt2spk.items() if counts[spk] >= min_recordings}
    return kept, len(utt2spk) - len(kept)


def held_out_count(total: int, size: float, what: str) -> int:
    """``size`` < 1 is a fraction of ``total``, >= 1 a count; always leaves some for training."""
    count = int(size) if size >= 1 else round(size * total)
    count = max(count, 1) if size > 0 else 0
    if count >= total:
        raise ConfigError(
            f"--valid-size {size} holds out {count} of {total} {what}; nothing left to train on"
        )
    return count


@SPLITTERS.register("none")
def no_split(utt2spk: Mapping[str, str], size: float, seed: int) -> dict[str, str]:
    return dict.fromkeys(utt2spk, "all")


@SPLITTERS.register("speaker")
def split_by_speaker(utt2spk: Mapping[str, str], size: float, seed: int) -> dict[str, str]:
    """Hold out whole speakers, chosen by a seeded permutation of the sorted speaker list."""
    speakers = sorted(set(utt2spk.values()))
    count = held_out_count(len(speakers), size, "speakers")
    order = np.random.default_rng(seed).permutation(len(speakers))
    valid = {speakers[i] for i in order[:count]}
    return {utt: "valid" if spk in valid else "train" for utt, spk in utt2spk.items()}


@SPLITTERS.register("utterance")
def split_by_utterance(utt2spk: Mapping[str, str], size: float, seed: int) -> dict[str, str]:
    """Hold out part of every speaker's utterances (speakers with one utterance stay in train)."""
    by_speaker: dict[str, list[str]] = defaultdict(list)
    for utt, spk in sorted(utt2spk.items()):
        by_speaker[spk].append(utt)
    rng = np.random.default_rng(seed)
    assignment = {}
    for spk in sorted(by_speaker):
        utts = by_speaker[spk]
        wanted = int(size) if size >= 1 else round(size * len(utts))
        count = min(max(wanted, 1 if size > 0 else 0), len(utts) - 1)
        order = rng.permutation(len(utts))
        for rank, index in enumerate(order):
            assignment[utts[index]] = "valid" if rank < count else "train"
    return assignment
