"""embed.py's pipeline: an embedding per utterance (and per speaker) written for back-ends.

The embedding file (its format picked by the suffix or ``--format``), an ``utt2spk`` beside it,
and optionally the speaker means; extraction resumes from ``OUT.cache.h5``, which is removed
once the outputs are written.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from e2espk.config import option
from e2espk.data.corpus import Corpus
from e2espk.data.features import check_compatible
from e2espk.device import resolve_device
from e2espk.errors import ConfigError, InputDataError, preview
from e2espk.fileio import write_text_atomic
from e2espk.inference.contract import ExtractionOptions
from e2espk.inference.system import load_embedding_system
from e2espk.scoring.export import (
    EMBEDDING_WRITERS,
    format_of,
    require_finite,
    speaker_mean_embeddings,
)
from e2espk.scoring.trials import match_utterances


@dataclasses.dataclass
class EmbedConfig:
    """Options of embed.py."""

    cp_path: str = option("", help="checkpoint from train.py")
    data: str = option("", help="corpus to embed (e2espk HDF5)")
    out: str = option(
        "embeddings.h5",
        help="output file; its suffix picks the format (.h5/.hdf5, .npz, .ark, .pt) unless --format is given",
    )
    format: str | None = option(None, choices=EMBEDDING_WRITERS.choices(), help="output format")
    utt_list: str | None = option(
        None, help="only the utterances listed in this file (first column)"
    )
    speaker_means: bool = option(
        False, help="also write per-speaker mean embeddings (OUT with suffix .spk)"
    )
    window_seconds: float | None = option(
        None, help="window length for long utterances (default: the training validation window)"
    )
    batch_size: int = option(64, help="windows per batch")
    resume: bool = option(
        True,
        help="keep embeddings in OUT.cache.h5 while extracting, so an interrupted run resumes there; the file is removed once the output is written",
    )
    device: str = option("auto", help="auto, cpu, cuda, ...")
    progress: bool = option(True, help="progress bar")


def selected_rows(corpus: Corpus, utt_list: str | None) -> np.ndarray:
    if utt_list is None:
        return np.arange(len(corpus))
    path = Path(utt_list)
    if not path.is_file():
        raise InputDataError(path, "utterance list not found")
    wanted = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    mapping = match_utterances(wanted, corpus.utterances.tolist(), path)
    missing = set(wanted) - mapping.keys()
    if missing:
        raise InputDataError(path, f"{preview(missing)} utterance(s) are not in {corpus.path}")
    return np.array(sorted({corpus.utterance_row(mapping[u]) for u in wanted}))


@dataclasses.dataclass
class EmbedReport:
    """What embed.py wrote, for the command to print."""

    utterances: int
    dim: int
    embeddings: Path  # the embedding file
    format: str
    utt2spk: Path
    speaker_means: tuple[int, Path] | None  # (speakers, file) with --speaker-means


def export_embeddings(config: EmbedConfig) -> EmbedReport:
    """Embed the corpus (or the --utt-list rows) and write the outputs."""
    if not config.cp_path or not config.data:
        raise ConfigError("--cp-path and --data are required")
    device = resolve_device(config.device)
    system = load_embedding_system(config.cp_path, device)
    corpus = Corpus(config.data)
    check_compatible(system.layout, corpus)
    out = Path(config.out)
    fmt = format_of(out, config.format)
    rows = selected_rows(corpus, config.utt_list)
    cache = out.with_name(out.name + ".cache.h5")
    options = ExtractionOptions(
        config.batch_size, device, config.progress, cache if config.resume else None
    )
    embeddings = system.extract(corpus, rows, options, config.window_seconds)
    ids = corpus.utterances[rows].tolist()
    speakers = corpus.speakers[corpus.speaker_of[rows]].tolist()
    require_finite(out, ids, embeddings)
    written = EMBEDDING_WRITERS.get(fmt)(out, ids, speakers, embeddings)
    utt2spk = write_text_atomic(
        out.with_name(out.stem + ".utt2spk"),
        "".join(f"{u} {s}\n" for u, s in zip(ids, speakers, strict=True)),
    )
    means = None
    if config.speaker_means:
        names, mean_embeddings = speaker_mean_embeddings(speakers, embeddings)
        spk_out = out.with_name(out.stem + ".spk" + out.suffix)
        means = (len(names), EMBEDDING_WRITERS.get(fmt)(spk_out, names, names, mean_embeddings))
    for leftover in (cache, cache.with_name(cache.name + ".lock")):
        leftover.unlink(missing_ok=True)  # everything the cache held is in the outputs now
    return EmbedReport(len(ids), embeddings.shape[1], written, fmt, utt2spk, means)
