"""Refuse a run whose ranks were started with different options or data.

Under torchrun every rank parses its own command line and opens its own copy of the corpora
(on several nodes, their own files). Ranks that disagree would train different things in
lockstep, or deadlock; they are compared once, at start, and a difference is an error on every
rank that names the rank and what differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from e2espk.distributed.process_group import DistContext, all_gather_object
from e2espk.errors import ConfigError

if TYPE_CHECKING:
    from e2espk.data.corpus import Corpus


def corpus_identity(corpus: Corpus) -> str:
    """SHA-256 of what training reads from a corpus besides the feature values: utterance and
    speaker ids, speaker of each utterance, streams (kind, dims, rate) and frames per stream.
    Independent of the file's path and time, so copies on different nodes match."""
    digest = hashlib.sha256()
    digest.update("\n".join(map(str, corpus.utterances.tolist())).encode())
    digest.update("\n".join(map(str, corpus.speakers.tolist())).encode())
    digest.update(corpus.speaker_of.astype("int64").tobytes())
    for name in sorted(corpus.streams):
        spec = json.dumps(corpus.streams[name].to_json(), sort_keys=True, default=str)
        digest.update(f"{name}:{spec}".encode())
        digest.update(corpus.frames(name).astype("int64").tobytes())
    return digest.hexdigest()


def check_same_on_all_ranks(values: Mapping[str, Any], context: DistContext) -> None:
    """Compare ``values`` (flat options, corpus identities) with rank 0's on every rank.

    Raises:
        ConfigError: on every rank, naming each rank that differs and the values that do.
    """
    if not context.active:
        return
    gathered = all_gather_object(dict(values), context)
    reference = gathered[0]
    problems = []
    for rank, other in enumerate(gathered[1:], start=1):
        keys = sorted(set(reference) | set(other))
        differing = [
            f"{key}: {reference.get(key)!r} on rank 0, {other.get(key)!r} on rank {rank}"
            for key in keys
            if reference.get(key) != other.get(key)
        ]
        if differing:
            problems.append(f"rank {rank} differs from rank 0 in {'; '.join(differing)}")
    if problems:
        raise ConfigError(
            "the ranks of this run were started with different options or data (every rank "
            f"must get the same flags, config file and corpora): {' | '.join(problems)}"
        )
