"""A resumable store of extracted embeddings, one HDF5 file per (model, corpus, windowing).

Extracting a VoxCeleb-sized test set takes hours on a CPU. The cache is written segment by
segment, so an interrupted eval or embed picks up where it stopped, and a re-run with other
trial lists or AS-norm settings skips extraction altogether. It is derived data: a cache made
by another model, corpus or window setting, or one left unreadable by a crash, is replaced
with a warning, never trusted.

Layout: ``/embeddings`` (corpus rows, E) float32 and ``/done`` (corpus rows,) bool, indexed by
corpus row, so any subset of rows (trial utterances, an ``--utt-list``) shares one file; the
attribute ``key`` is the JSON of everything the embeddings depend on.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import IO, Any

import h5py
import numpy as np
import torch

import e2espk
from e2espk.data.corpus import Corpus
from e2espk.errors import InputDataError

LOG = logging.getLogger(__name__)
CACHE_VERSION = 2  # 2: never holds non-finite embeddings (version 1 could)


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of the model's parameters and buffers (names, dtypes, shapes, bytes): the same
    weights give the same fingerprint whatever file they were loaded from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        if value.numel():
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def corpus_fingerprint(corpus: Corpus) -> dict[str, Any]:
    """Identity of a corpus file without reading its features: path, size, modification time
    and utterance count (re-packing a corpus changes them)."""
    stat = os.stat(corpus.path)
    return {
        "path": str(Path(corpus.path).resolve()),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "utterances": len(corpus),
    }


class EmbeddingCache:
    """Embeddings of some rows of one corpus, kept on disk as they are computed.

    Args:
        path: the cache file (created with its parent directory if needed).
        key: everything the embeddings depend on (JSON-serialisable); a file with another key
            is replaced.
        n_rows: utterances in the corpus (rows are corpus rows).
    """

    def __init__(self, path: str | Path, key: dict[str, Any], n_rows: int) -> None:
        self.path = Path(path)
        versions = {
            "version": CACHE_VERSION,
            "e2espk": e2espk.__version__,
            "torch": torch.__version__,
        }
        self.key = json.dumps({**versions, **key}, sort_keys=True)
        self.n_rows = n_rows
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = self._acquire_lock()
        try:
            self.file = self._open()
        except BaseException:
            self._lock.close()
            raise

    def _acquire_lock(self) -> IO[bytes]:
        """An exclusive lock beside the cache for as long as it is open: a second eval or embed
        writing to the same place is refused instead of replacing this one's cache."""
        lock = (self.path.parent / (self.path.name + ".lock")).open("wb")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise InputDataError(
                self.path,
                "the embedding cache is in use by another run; give this one another output path",
            ) from None
        return lock

    def _open(self) -> h5py.File:
        if self.path.exists():
            reason = self._unusable_reason()
            if reason is None:
                return h5py.File(self.path, "r+")
            LOG.warning("embedding cache %s %s: starting a new one", self.path, reason)
            self.path.unlink()
        handle = h5py.File(self.path, "w")
        try:
            handle.attrs["key"] = self.key
            handle.create_dataset("done", shape=(self.n_rows,), dtype=bool, fillvalue=False)
        except BaseException:
            handle.close()
            raise
        return handle

    def _unusable_reason(self) -> str | None:
        try:
            with h5py.File(self.path, "r") as handle:
                if handle.attrs.get("key") != self.key:
                    return "was made by another model, corpus or window setting"
                if handle["done"].shape != (self.n_rows,):
                    return "does not match the corpus size"
        except (OSError, KeyError) as error:
            return f"is unreadable ({error})"
        return None

    def done(self) -> np.ndarray:
        """``(n_rows,)`` bool: which corpus rows have their embedding stored."""
        return np.asarray(self.file["done"][:], dtype=bool)

    def store(self, rows: np.ndarray, embeddings: np.ndarray) -> None:
        """Write embeddings of ``rows`` (unique corpus rows), then mark them done and flush:
        a crash between the two leaves the rows not done, so they are recomputed."""
        if not np.isfinite(embeddings).all():
            raise ValueError(f"{self.path}: refusing to cache non-finite embeddings")
        order = np.argsort(rows)
        rows, embeddings = np.asarray(rows)[order], embeddings[order]
        if "embeddings" not in self.file:
            self.file.create_dataset(
                "embeddings",
                shape=(self.n_rows, embeddings.shape[1]),
                dtype=np.float32,
                chunks=(min(self.n_rows, 1024), embeddings.shape[1]),
            )
        self.file["embeddings"][rows] = embeddings.astype(np.float32, copy=False)
        self.file.flush()
        self.file["done"][rows] = True
        self.file.flush()

    def load(self, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), E)`` stored embeddings of ``rows`` (all must be done), in that order."""
        rows = np.asarray(rows)
        unique, inverse = np.unique(rows, return_inverse=True)
        dataset = self.file["embeddings"]
        if unique.size > self.n_rows // 8:  # one contiguous read beats a large point selection
            return np.asarray(dataset[:], dtype=np.float32)[rows]
        return np.asarray(dataset[unique], dtype=np.float32)[inverse]

    def close(self) -> None:
        self.file.close()
        self._lock.close()  # releases the lock

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
