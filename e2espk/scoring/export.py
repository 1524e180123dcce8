"""Writing embeddings for downstream back-ends (PLDA, clustering): one registry entry per format.

Every format is written atomically and comes with an ``utt2spk`` file beside it; speaker-mean
embeddings (optional) go to a second file of the same format with the suffix ``.spk``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from e2espk.data.corpus import escape_id
from e2espk.errors import InputDataError, preview
from e2espk.fileio import atomic_path
from e2espk.registry import Registry

Writer = Callable[[Path, list[str], list[str], np.ndarray], Path]
EMBEDDING_WRITERS: Registry[Writer] = Registry("embedding format")
SUFFIX_FORMATS = {
    ".h5": "hdf5",
    ".hdf": "hdf5",
    ".hdf5": "hdf5",
    ".npz": "npz",
    ".ark": "ark",
    ".scp": "ark",
    ".pt": "pt",
}


def require_finite(path: Path, ids: list[str], embeddings: np.ndarray) -> None:
    """Refuse to export non-finite embeddings, naming the utterances (a back-end fitted on
    them would fail or silently give NaN scores)."""
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        names = [utt for utt, flag in zip(ids, bad.tolist(), strict=True) if flag]
        raise InputDataError(path, f"non-finite embeddings for {preview(names)} utterance(s)")


HDF5_INDEX = ("utterance_ids", "speaker_ids")  # root datasets: the ids as given, in order


@EMBEDDING_WRITERS.register("hdf5")
def write_hdf5(path: Path, ids: list[str], speakers: list[str], embeddings: np.ndarray) -> Path:
    """/<speaker>/<utterance> datasets of shape (E,), attrs: embedding_dim.

    Group names are escaped ids (``/`` -> ``%2F``), so each dataset also holds its ids as given
    in attrs ``utterance`` and ``speaker``, and the root datasets ``utterance_ids`` and
    ``speaker_ids`` list them all in output order: readers never need to unescape names.
    """
    reserved = sorted({escape_id(spk) for spk in speakers} & set(HDF5_INDEX))
    if reserved:
        raise InputDataError(
            path, f"speaker id {reserved[0]!r} is a reserved name here; write .npz"
        )
    text = h5py.string_dtype()
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.attrs["embedding_dim"] = embeddings.shape[1]
        handle.create_dataset(HDF5_INDEX[0], data=np.array(ids, dtype=object), dtype=text)
        handle.create_dataset(HDF5_INDEX[1], data=np.array(speakers, dtype=object), dtype=text)
        for utt, spk, vector in zip(ids, speakers, embeddings, strict=True):
            group = handle.require_group(escape_id(spk))
            group.attrs["speaker"] = spk
            dataset = group.create_dataset(escape_id(utt), data=vector)
            dataset.attrs["utterance"] = utt
            dataset.attrs["speaker"] = spk
    return path


def read_hdf5_embeddings(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """``(utterance ids, speaker ids, embeddings (N, E))`` of a file :func:`write_hdf5` wrote."""
    with h5py.File(path, "r") as handle:
        ids = handle[HDF5_INDEX[0]].asstr()[()].tolist()
        speakers = handle[HDF5_INDEX[1]].asstr()[()].tolist()
        rows = [handle[escape_id(s)][escape_id(u)][()] for u, s in zip(ids, speakers, strict=True)]
    return ids, speakers, np.stack(rows) if rows else np.zeros((0, 0), np.float32)


@EMBEDDING_WRITERS.register("npz")
def write_npz(path: Path, ids: list[str], speakers: list[str], embeddings: np.ndarray) -> Path:
    """Arrays ``ids``, ``speakers`` and ``embeddings`` (N, E)."""
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, ids=np.array(ids), speakers=np.array(speakers), embeddings=embeddings)
    return path


@EMBEDDING_WRITERS.register("ark")
def write_ark(path: Path, ids: list[str], speakers: list[str], embeddings: np.ndarray) -> Path:
    """Kaldi vectors: ``NAME.ark`` + ``NAME.scp`` (kaldiio), readable by ivector-plda tools."""
    import kaldiio

    ark, scp = path.with_suffix(".ark"), path.with_suffix(".scp")
    with atomic_path(ark) as tmp_ark, atomic_path(scp) as tmp_scp:
        with kaldiio.WriteHelper(f"ark,scp:{tmp_ark},{tmp_scp}") as writer:
            for utt, vector in zip(ids, embeddings, strict=True):
                writer(utt, vector.astype(np.float32))
        tmp_scp.write_text(tmp_scp.read_text().replace(str(tmp_ark), str(ark.resolve())))
    return ark


@EMBEDDING_WRITERS.register("pt")
def write_pt(path: Path, ids: list[str], speakers: list[str], embeddings: np.ndarray) -> Path:
    """``{utt_id: tensor (E,)}``, the whole-corpus dict format data_prep.py reads."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(
            {
                utt: torch.from_numpy(vector.copy())
                for utt, vector in zip(ids, embeddings, strict=True)
            },
            tmp,
        )
    return path


def format_of(path: Path, requested: str | None) -> str:
    if requested:
        return EMBEDDING_WRITERS.canonical(requested)
    if path.suffix in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[path.suffix]
    return EMBEDDING_WRITERS.canonical(path.suffix.lstrip(".") or "?")


def speaker_mean_embeddings(
    speakers: list[str], embeddings: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """Mean embedding of each speaker (a speaker model for enrolment / PLDA training)."""
    labels, inverse = np.unique(np.array(speakers), return_inverse=True)
    sums = np.zeros((len(labels), embeddings.shape[1]))
    np.add.at(sums, inverse, embeddings)
    return labels.tolist(), (sums / np.bincount(inverse)[:, None]).astype(np.float32)
