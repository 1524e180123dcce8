"""What is in a corpus file, and whether it is intact (for ``data_prep.py inspect``)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from e2espk import interrupts
from e2espk.data.corpus import SPEAKERS_GROUP, Corpus, escape_id
from e2espk.progress import progress_bar


def _distribution(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "mean": float(values.mean()),
        "max": float(values.max()),
    }


def summarize(corpus: Corpus) -> dict[str, Any]:
    """Counts, duration, per-stream description and frame statistics, from the index alone."""
    per_speaker = np.diff(corpus.speaker_offsets)
    streams = {}
    for name, spec in corpus.streams.items():
        streams[name] = {
            **spec.to_json(),
            "frames_per_utterance": _distribution(corpus.frames(name)) if spec.time_axis else None,
        }
    hours = corpus.hours()
    return {
        "path": str(corpus.path),
        "schema_version": corpus.schema_version,
        "speakers": len(corpus.speakers),
        "utterances": len(corpus),
        "hours": hours,
        "file_bytes": corpus.path.stat().st_size,
        "bytes_per_hour": corpus.path.stat().st_size / hours if hours else None,
        "utterances_per_speaker": _distribution(per_speaker),
        "streams": streams,
        "extraction": _extraction(corpus),
    }


def _extraction(corpus: Corpus) -> dict[str, Any] | None:
    """How ``data_prep.py extract`` made the streams (model, weights hash), if it did."""
    raw = corpus.handle.attrs.get("extraction")
    return json.loads(raw) if raw is not None else None


def check_integrity(corpus: Corpus, check_values: bool = True, progress: bool = False) -> list[str]:
    """Every problem found by reading every dataset the index names (empty list = intact).

    Checks that each indexed utterance has every stream with the indexed frame count, the
    declared dims and dtype, finite values (if ``check_values``), and that no group exists
    outside the index.
    """
    problems: list[str] = []
    handle = corpus.handle
    rows = progress_bar(corpus.iter_rows(), enabled=progress, total=len(corpus), desc="checking")
    with interrupts.deferred(), rows:  # stops between utterances, never inside h5py
        problems += _check_rows(corpus, interrupts.checked(rows), check_values)
    indexed = {escape_id(str(s)) for s in corpus.speakers.tolist()}
    stored = set(handle[SPEAKERS_GROUP].keys()) if SPEAKERS_GROUP in handle else set()
    for extra in sorted(stored - indexed):
        problems.append(f"speaker group {extra!r} is not in the index")
    return problems


def _check_rows(corpus: Corpus, rows: Any, check_values: bool) -> list[str]:
    problems: list[str] = []
    for row, speaker, utterance in rows:
        for name, spec in corpus.streams.items():
            where = f"speaker {speaker!r} utterance {utterance!r} stream {name!r}"
            try:
                dataset = corpus.dataset(row, name)
            except KeyError:
                problems.append(f"{where}: dataset missing")
                continue
            expected = spec.array_shape(int(corpus.frames(name)[row]))
            if dataset.shape != expected:
                problems.append(f"{where}: shape {dataset.shape}, index says {expected}")
            if dataset.dtype != np.dtype(spec.dtype):
                problems.append(f"{where}: dtype {dataset.dtype}, expected {spec.dtype}")
            if check_values:
                try:
                    values = dataset[()]
                except OSError as error:
                    problems.append(f"{where}: unreadable ({error})")
                    continue
                if not np.isfinite(values).all():
                    problems.append(f"{where}: NaN/Inf values")
    return problems
