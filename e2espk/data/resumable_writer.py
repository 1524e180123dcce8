"""A corpus writer whose unfinished file survives a stop and is continued by the next run.

Long jobs (feature extraction over days of audio) must not restart from zero after a kill. The
file is built in place under a fixed hidden name, ``.NAME.resumable``, never copied: after each
batch the HDF5 file is flushed and fsynced, and only then are the batch's utterances appended
to a journal (``.NAME.resumable.jsonl``, one JSON line each, fsynced). The journal is the truth:
a rerun reopens the file, deletes every utterance group the journal does not list (written after
the last checkpoint) and carries on. ``close()`` writes the index and renames the file into
place, like :class:`~e2espk.data.corpus.CorpusWriter`; ``abort()`` keeps it for the next run.

A process killed during the milliseconds of a flush can leave HDF5 metadata half-written; the
rerun then cannot verify the journaled utterances, says so, and starts that file again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from e2espk.data.corpus import INDEX_GROUP, SPEAKERS_GROUP, CorpusWriter, StreamSpec, escape_id
from e2espk.errors import InputDataError
from e2espk.fileio import new_file_mode

LOG = logging.getLogger(__name__)


class ResumableCorpusWriter(CorpusWriter):
    """A :class:`CorpusWriter` that checkpoints (``checkpoint()``) and resumes.

    Args:
        path: final file name.
        streams: the streams every utterance must carry.
        signature: what the file is built from (options, inputs); a partial file built from
            another signature is never continued.
        restart: discard a partial file instead of continuing it.
        **options: ``compression``, ``compression_level``, ``overwrite`` of CorpusWriter.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        streams: list[StreamSpec],
        *,
        signature: Mapping[str, Any],
        restart: bool = False,
        **options: Any,
    ) -> None:
        self.signature = json.loads(json.dumps(signature))  # plain JSON types, comparable
        self.restart = restart
        self.done: set[str] = set()  # utterances written, as of the last checkpoint
        self.bad: dict[str, str] = {}  # utterances found bad: utterance -> why
        self._pending: list[dict[str, Any]] = []
        final = Path(path)
        self.partial = final.parent / f".{final.name}.resumable"
        self.journal = final.parent / f".{final.name}.resumable.jsonl"
        super().__init__(path, streams, **options)

    # -- opening ---------------------------------------------------------------------------
    def _open(self) -> h5py.File:
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        if self.restart:
            self._remove_partial()
        if self.partial.exists() and self.journal.exists():
            try:
                return self._reopen()
            except (OSError, KeyError, ValueError) as error:
                LOG.warning(
                    "%s: cannot continue (%s); starting this file again", self.partial, error
                )
                self._rows, self.done, self.bad = {}, set(), {}
        self._remove_partial()
        handle = h5py.File(self.partial, "w")
        handle.flush()
        self._append([{"signature": self.signature}])
        return handle

    def _reopen(self) -> h5py.File:
        header, *records = _read_journal(self.journal)
        if header.get("signature") != self.signature:
            raise InputDataError(
                self.partial,
                "a partial run with other options or inputs is here; rerun with the same "
                "options to continue it, or pass --restart to discard it",
            )
        handle = h5py.File(self.partial, "r+")
        try:
            for record in records:
                if "bad" in record:
                    self.bad[record["bad"]] = record["why"]
                    continue
                speaker, utterance = record["speaker"], record["utterance"]
                self._rows.setdefault(speaker, {})[utterance] = list(record["frames"])
                self.done.add(utterance)
            _prune(handle, self._rows)
            _verify(handle, self._rows, list(self.streams.values()))
        except BaseException:
            handle.close()
            raise
        LOG.info(
            "%s: continuing a partial run (%d utterances done, %d bad)",
            self.partial,
            len(self.done),
            len(self.bad),
        )
        return handle

    # -- writing ---------------------------------------------------------------------------
    def add(self, speaker: str, utterance: str, features: Mapping[str, np.ndarray]) -> None:
        super().add(speaker, utterance, features)
        frames = self._rows[speaker][utterance]
        self._pending.append({"speaker": speaker, "utterance": utterance, "frames": frames})

    def mark_bad(self, utterance: str, why: str) -> None:
        """Record an utterance that could not be used, so a rerun does not try it again."""
        self.bad[utterance] = why
        self._pending.append({"bad": utterance, "why": why})

    def checkpoint(self) -> None:
        """Make everything added so far survive a kill: flush + fsync, then journal it."""
        if not self._pending:
            return
        self._file.flush()
        with contextlib.suppress(OSError, ValueError, TypeError):  # not the sec2 driver
            os.fsync(self._file.id.get_vfd_handle())
        self._append(self._pending)
        self.done.update(r["utterance"] for r in self._pending if "utterance" in r)
        self._pending = []

    def _append(self, records: list[dict[str, Any]]) -> None:
        """Journal lines, in one write and one fsync."""
        with self.journal.open("a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(record) + "\n" for record in records))
            handle.flush()
            os.fsync(handle.fileno())

    # -- finishing -------------------------------------------------------------------------
    def _commit(self) -> None:
        os.chmod(self.partial, new_file_mode())
        os.replace(self.partial, self.path)
        self.journal.unlink(missing_ok=True)

    def _discard(self) -> None:
        """Keep the partial file (closed after its last checkpoint) for the next run."""
        if self.partial.exists():
            LOG.info("%s: partial file kept; rerun the same command to continue", self.partial)

    def abort(self) -> None:
        self._pending = []  # written after the last checkpoint: the rerun deletes them
        super().abort()

    def _remove_partial(self) -> None:
        self.partial.unlink(missing_ok=True)
        self.journal.unlink(missing_ok=True)


def _read_journal(path: Path) -> list[dict[str, Any]]:
    """The journal's records; a torn last line (killed while appending) is dropped."""
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines):
                raise ValueError(f"journal line {number} is not JSON") from None
    if not records:
        raise ValueError("empty journal")
    return records


def _prune(handle: h5py.File, rows: Mapping[str, Mapping[str, list[int]]]) -> None:
    """Delete groups written after the last checkpoint, and an index of a close() cut short."""
    if INDEX_GROUP in handle:
        del handle[INDEX_GROUP]
    if SPEAKERS_GROUP not in handle:
        return
    speakers = handle[SPEAKERS_GROUP]
    kept = {escape_id(s): {escape_id(u) for u in utts} for s, utts in rows.items()}
    for speaker in list(speakers):
        if speaker not in kept:
            del speakers[speaker]
            continue
        for utterance in list(speakers[speaker]):
            if utterance not in kept[speaker]:
                del speakers[speaker][utterance]


def _verify(
    handle: h5py.File, rows: Mapping[str, Mapping[str, list[int]]], specs: list[StreamSpec]
) -> None:
    """Every journaled utterance has every stream, as long as journaled (else an error)."""
    for speaker, utterances in rows.items():
        group = handle[f"{SPEAKERS_GROUP}/{escape_id(speaker)}"]
        for utterance, frames in utterances.items():
            datasets = group[escape_id(utterance)]
            for spec, count in zip(specs, frames, strict=True):
                if datasets[spec.name].shape != spec.array_shape(count):
                    raise ValueError(f"utterance {utterance!r} stream {spec.name!r} is cut short")
