"""The e2espk HDF5 corpus format: schema, writer and reader, all in this one module.

Layout (schema version 1)::

    /                              attrs: format="e2espk-corpus", schema_version=1,
                                          streams=<JSON list of StreamSpec>, e2espk_version
    /speakers/<spk>/<utt>/<stream> one dataset per feature stream of an utterance:
                                   ptm [frames, layers, dims] (or [layers, dims] when pooled),
                                   mfbe [frames, 80], mfcc [frames, 40], pitch [frames, 1], ...
    /index/speakers                [S] speaker ids (UTF-8 bytes), sorted
    /index/speaker_offsets         [S+1] int64: speaker s owns utterance rows offsets[s]:offsets[s+1]
    /index/utterances              [N] utterance ids (UTF-8 bytes), grouped by speaker
    /index/frames                  [N, n_streams] int64 frames per stream (1 for pooled streams);
                                   column order = the ``streams`` attribute

Group names are ids escaped so that "/" (as in VoxCeleb ids) does not create nested groups.
Time-axis datasets are chunked along time (``chunk_frames`` per chunk) or, uncompressed,
contiguous (``chunk_frames`` 0); either way a random crop of N frames reads about N frames
whatever the utterance length. Opening a corpus reads only /index.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import h5py
import numpy as np

from e2espk import __version__
from e2espk.errors import InputDataError
from e2espk.fileio import atomic_path

FORMAT_NAME = "e2espk-corpus"
SCHEMA_VERSION = 1
SPEAKERS_GROUP = "speakers"
INDEX_GROUP = "index"
PTM_KIND = "ptm"
HANDCRAFTED_KIND = "handcrafted"
COMPRESSIONS = ("none", "gzip", "lzf")


@dataclasses.dataclass(frozen=True)
class StreamSpec:
    """What one feature stream is: per-frame shape, stored dtype, frame rate and provenance.

    Attributes:
        name: stream name ("ptm", "mfbe", "mfcc", "pitch", ...).
        kind: "ptm" (layer-wise hidden states) or "handcrafted".
        dims: per-frame shape: (layers, dims) for PTM, (features,) for handcrafted.
        dtype: stored dtype, "float16" or "float32".
        frame_rate_hz: frames per second; None for pooled streams without a time axis.
        layers: original indices of the PTM layers kept (None for handcrafted streams).
        model: name of the pre-trained model the PTM states come from, if known.
        chunk_frames: frames per HDF5 chunk along time; 0 stores each utterance contiguously
            (and is the value for pooled streams).
    """

    name: str
    kind: str
    dims: tuple[int, ...]
    dtype: str = "float32"
    frame_rate_hz: float | None = 100.0
    layers: tuple[int, ...] | None = None
    model: str | None = None
    chunk_frames: int = 0

    @property
    def time_axis(self) -> bool:
        """False for utterance-level (pooled) streams stored without frames."""
        return self.frame_rate_hz is not None

    def array_shape(self, frames: int) -> tuple[int, ...]:
        """Shape of an utterance's dataset with ``frames`` frames."""
        return (frames, *self.dims) if self.time_axis else tuple(self.dims)

    def chunk_shape(self, frames: int) -> tuple[int, ...] | None:
        """HDF5 chunk shape of an utterance's dataset; None for a contiguous one."""
        if not self.time_axis or self.chunk_frames == 0:
            return None
        return (min(self.chunk_frames, frames), *self.dims)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> StreamSpec:
        values = dict(payload)
        values["dims"] = tuple(values["dims"])
        if values.get("layers") is not None:
            values["layers"] = tuple(values["layers"])
        return cls(**values)


def escape_id(identifier: str) -> str:
    """An id usable as one HDF5 group name ("/" and "%" escaped, "."/".." protected)."""
    escaped = quote(identifier, safe=" !#$&'()*+,-.:;=?@[]^_`{|}~")
    return escaped.replace(".", "%2E") if escaped in (".", "..") else escaped


def unescape_id(name: str) -> str:
    return unquote(name)


def utterance_path(speaker: str, utterance: str, stream: str) -> str:
    """HDF5 path of one stream of one utterance."""
    return f"/{SPEAKERS_GROUP}/{escape_id(speaker)}/{escape_id(utterance)}/{stream}"


def _encode_ids(ids: list[str]) -> np.ndarray:
    encoded = [identifier.encode("utf-8") for identifier in ids]
    width = max((len(item) for item in encoded), default=1)
    return np.array(encoded, dtype=f"S{max(width, 1)}")


def _decode_ids(raw: np.ndarray) -> np.ndarray:
    if not raw.size:
        return np.array([], dtype=str)
    if int(raw.view(np.uint8).max()) < 0x80:  # ASCII ids (the usual case): 4x faster than decode
        return raw.astype("U")
    return np.char.decode(raw, "utf-8")


class CorpusWriter:
    """Writes an e2espk corpus utterance by utterance; memory stays flat.

    The file is built under a temporary name and moved into place by ``close()``; if writing
    fails (or the process dies), nothing appears under the final name. Utterances may arrive in
    any order; the index groups them by speaker.

    Args:
        path: final file name.
        streams: the streams every utterance must carry.
        compression: "none", "gzip" or "lzf" (datasets are chunked either way).
        compression_level: gzip level 1-9.
        overwrite: replace an existing file at ``path``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        streams: list[StreamSpec],
        *,
        compression: str = "none",
        compression_level: int = 4,
        overwrite: bool = False,
    ) -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise InputDataError(self.path, "output exists; pass --overwrite to replace it")
        self.streams = {spec.name: spec for spec in streams}
        self._filters: dict[str, Any] = {}
        if compression != "none":
            self._filters = {"compression": compression, "shuffle": True}
            if compression == "gzip":
                self._filters["compression_opts"] = compression_level
        self.attrs: dict[str, str] = {}  # more file attributes, written by close()
        self._rows: dict[str, dict[str, list[int]]] = {}  # speaker -> utterance -> frames
        self._file = self._open()

    def _open(self) -> h5py.File:
        """The file being built: a temp file beside ``path`` (a subclass may resume one)."""
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        try:
            return h5py.File(self._tmp, "w")
        except BaseException as error:  # the temp file goes now, not when garbage-collected
            self._atomic.__exit__(type(error), error, error.__traceback__)
            raise

    def _commit(self) -> None:
        """Move the closed file to its final name."""
        self._atomic.__exit__(None, None, None)

    def _discard(self) -> None:
        """Remove the closed, unfinished file."""
        error = RuntimeError("aborted")
        with contextlib.suppress(RuntimeError):
            self._atomic.__exit__(type(error), error, None)

    def add(self, speaker: str, utterance: str, features: Mapping[str, np.ndarray]) -> None:
        """Store one utterance; ``features`` maps each stream name to its array."""
        if set(features) != set(self.streams):
            raise ValueError(
                f"utterance {utterance!r} has streams {sorted(features)}, "
                f"expected {sorted(self.streams)}"
            )
        utterances = self._rows.setdefault(speaker, {})
        if utterance in utterances:
            raise InputDataError(self.path, f"utterance {utterance!r} added twice")
        group = self._file.require_group(f"{SPEAKERS_GROUP}/{escape_id(speaker)}")
        group = group.create_group(escape_id(utterance))
        frames = []
        for name, spec in self.streams.items():
            array = np.asarray(features[name])
            n_frames = array.shape[0] if spec.time_axis else 1
            if array.shape != spec.array_shape(n_frames):
                raise ValueError(
                    f"{utterance!r} stream {name!r}: shape {array.shape} != {spec.dims}"
                )
            chunks = spec.chunk_shape(n_frames)
            if chunks is None and self._filters:  # filters need chunks: one per utterance
                chunks = spec.array_shape(n_frames)
            group.create_dataset(
                name, data=array.astype(spec.dtype, copy=False), chunks=chunks, **self._filters
            )
            frames.append(n_frames)
        utterances[utterance] = frames

    def add_copy(self, source: Corpus, row: int) -> None:
        """Store the utterance at ``row`` of ``source``, a corpus of the same streams, as it is
        stored there: an HDF5 object copy (chunks and filters kept, nothing decoded), which is
        how shard corpora are joined at about the speed of copying their bytes."""
        if source.streams != self.streams:
            raise InputDataError(source.path, f"streams differ from those of {self.path}")
        speaker = str(source.speakers[source.speaker_of[row]])
        utterance = str(source.utterances[row])
        utterances = self._rows.setdefault(speaker, {})
        if utterance in utterances:
            raise InputDataError(self.path, f"utterance {utterance!r} added twice")
        group = self._file.require_group(f"{SPEAKERS_GROUP}/{escape_id(speaker)}")
        stored = source.handle[f"{SPEAKERS_GROUP}/{escape_id(speaker)}/{escape_id(utterance)}"]
        self._file.copy(stored, group, name=escape_id(utterance))
        utterances[utterance] = [int(source.frames(name)[row]) for name in self.streams]

    @property
    def n_utterances(self) -> int:
        return sum(len(utterances) for utterances in self._rows.values())

    @property
    def n_speakers(self) -> int:
        return len(self._rows)

    def close(self) -> Path:
        """Write the index and file attributes, then move the file to its final name."""
        speakers = sorted(self._rows)
        utterances = [utt for spk in speakers for utt in sorted(self._rows[spk])]
        counts = [len(self._rows[spk]) for spk in speakers]
        frames = np.array(
            [self._rows[spk][utt] for spk in speakers for utt in sorted(self._rows[spk])],
            dtype=np.int64,
        ).reshape(len(utterances), len(self.streams))
        index = self._file.create_group(INDEX_GROUP)
        index.create_dataset("speakers", data=_encode_ids(speakers))
        index.create_dataset(
            "speaker_offsets", data=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        )
        index.create_dataset("utterances", data=_encode_ids(utterances))
        index.create_dataset("frames", data=frames)
        attrs = self._file.attrs
        attrs["format"] = FORMAT_NAME
        attrs["schema_version"] = SCHEMA_VERSION
        attrs["e2espk_version"] = __version__
        attrs["streams"] = json.dumps([spec.to_json() for spec in self.streams.values()])
        for key, value in self.attrs.items():
            attrs[key] = value
        self._file.close()
        self._commit()
        return self.path

    def abort(self) -> None:
        """Discard everything written so far."""
        if self._file.id.valid:
            self._file.close()
        self._discard()

    def __enter__(self) -> CorpusWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class Corpus:
    """Read access to an e2espk corpus file.

    Opening reads only the index (ids, speaker offsets, frame counts). The HDF5 handle is opened
    lazily and dropped when pickled, so a Corpus can be handed to DataLoader workers and each
    worker opens its own handle. Datasets stay open in a bounded LRU (looking one up by path
    costs more than reading a crop), and HDF5's chunk cache is off: random crops never reuse a
    chunk, and reading through the cache copies whole chunks (benchmarks/README.md).

    Args:
        path: the corpus file.
        open_datasets: how many datasets to keep open per process.
    """

    def __init__(self, path: str | os.PathLike[str], open_datasets: int = 4096) -> None:
        self.path = Path(path)
        self._open_limit = open_datasets
        self._datasets: OrderedDict[tuple[int, str], h5py.Dataset] = OrderedDict()
        handle = self._open_checked()
        try:
            attrs = handle.attrs
            self.schema_version = int(attrs["schema_version"])
            specs = [StreamSpec.from_json(item) for item in json.loads(attrs["streams"])]
            self.streams: dict[str, StreamSpec] = {spec.name: spec for spec in specs}
            index = handle[INDEX_GROUP]
            self.speakers: np.ndarray = _decode_ids(index["speakers"][()])
            self.speaker_offsets: np.ndarray = index["speaker_offsets"][()]
            self.utterances: np.ndarray = _decode_ids(index["utterances"][()])
            frames = index["frames"][()]
        except (KeyError, ValueError, OSError) as error:
            handle.close()
            raise InputDataError(self.path, f"corrupt e2espk corpus index: {error}") from None
        self._frames = {name: frames[:, col] for col, name in enumerate(self.streams)}
        counts = np.diff(self.speaker_offsets)
        self.speaker_of: np.ndarray = np.repeat(np.arange(len(self.speakers)), counts)
        self._handle: h5py.File | None = handle
        self._utt_lookup: dict[str, int] | None = None

    def _open_checked(self) -> h5py.File:
        if not self.path.exists():
            raise InputDataError(self.path, "corpus file not found")
        try:
            handle = h5py.File(self.path, "r", rdcc_nbytes=0)
        except OSError as error:
            raise InputDataError(self.path, f"not a readable HDF5 file ({error})") from None
        fmt = handle.attrs.get("format")
        version = handle.attrs.get("schema_version")
        if fmt != FORMAT_NAME:
            handle.close()
            raise InputDataError(
                self.path, "not an e2espk corpus (no format attribute); build it with data_prep.py"
            )
        if version is None or int(version) > SCHEMA_VERSION:
            handle.close()
            raise InputDataError(
                self.path,
                f"schema version {version} is newer than this e2espk reads ({SCHEMA_VERSION})",
            )
        return handle

    @property
    def handle(self) -> h5py.File:
        """The open HDF5 file, opened on first use in this process."""
        if self._handle is None or not self._handle.id.valid:
            self._handle = self._open_checked()
        return self._handle

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handle"] = None
        state["_datasets"] = OrderedDict()
        return state

    def close(self) -> None:
        self._datasets.clear()
        if self._handle is not None and self._handle.id.valid:
            self._handle.close()
        self._handle = None

    def __enter__(self) -> Corpus:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.utterances)

    def frames(self, stream: str) -> np.ndarray:
        """Frames per utterance of ``stream`` (int64, aligned with ``utterances``)."""
        return self._frames[self.require_stream(stream).name]

    def require_stream(self, stream: str) -> StreamSpec:
        if stream not in self.streams:
            raise InputDataError(
                self.path, f"no stream {stream!r}; this corpus has: {', '.join(self.streams)}"
            )
        return self.streams[stream]

    def speaker_utterances(self) -> dict[str, np.ndarray]:
        """Speaker id -> row indices of its utterances (no group walk: from the index)."""
        offsets = self.speaker_offsets
        return {
            speaker: np.arange(offsets[row], offsets[row + 1])
            for row, speaker in enumerate(self.speakers.tolist())
        }

    def utterance_row(self, utterance: str) -> int:
        """Row of an utterance id; InputDataError if it is not in the corpus."""
        if self._utt_lookup is None:
            self._utt_lookup = {utt: row for row, utt in enumerate(self.utterances.tolist())}
        try:
            return self._utt_lookup[utterance]
        except KeyError:
            raise InputDataError(self.path, f"unknown utterance {utterance!r}") from None

    def dataset(self, row: int, stream: str) -> h5py.Dataset:
        """The open dataset of one stream of the utterance at ``row`` (kept open, LRU)."""
        key = (row, stream)
        dataset = self._datasets.get(key)
        if dataset is not None and dataset.id.valid:
            self._datasets.move_to_end(key)
            return dataset
        speaker = str(self.speakers[self.speaker_of[row]])
        dataset = self.handle[utterance_path(speaker, str(self.utterances[row]), stream)]
        self._datasets[key] = dataset
        if len(self._datasets) > self._open_limit:
            self._datasets.popitem(last=False)
        return dataset

    def read(
        self, row: int, stream: str, start: int | None = None, stop: int | None = None
    ) -> np.ndarray:
        """Frames ``start:stop`` of one stream of the utterance at ``row`` (all when omitted)."""
        spec = self.require_stream(stream)
        dataset = self.dataset(row, stream)
        if not spec.time_axis or (start is None and stop is None):
            return dataset[()]
        return dataset[slice(start, stop)]

    def hours(self) -> float | None:
        """Total duration in hours, from the first stream that has a time axis."""
        for name, spec in self.streams.items():
            if spec.time_axis and spec.frame_rate_hz:
                return float(self._frames[name].sum()) / spec.frame_rate_hz / 3600.0
        return None

    def iter_rows(self) -> Iterator[tuple[int, str, str]]:
        """(row, speaker, utterance) for every utterance, in storage order."""
        for row, utterance in enumerate(self.utterances.tolist()):
            yield row, str(self.speakers[self.speaker_of[row]]), utterance
