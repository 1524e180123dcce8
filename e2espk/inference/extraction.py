"""Embedding extraction: every utterance once, in fixed-length windows batched across utterances.

Windows of the contract's ``window_seconds`` cover each utterance (the last one aligned to its
end); their embeddings are averaged. Utterances shorter than a window are repeat-padded to it,
so every batch is one tensor and memory is capped by ``batch_size`` windows whatever the
lengths. ``extract`` takes an ``EmbeddingContract`` (what the numbers depend on) and
``ExtractionOptions`` (how they are computed); ``extract_embeddings`` is the older call form.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from e2espk import interrupts
from e2espk.data import transforms
from e2espk.data.corpus import PTM_KIND, Corpus
from e2espk.data.features import InputLayout
from e2espk.data.loader import utterance_seconds
from e2espk.data.validation import require_finite
from e2espk.errors import InputDataError, preview
from e2espk.inference.contract import EmbeddingContract, ExtractionOptions
from e2espk.inference.embedding_cache import EmbeddingCache, corpus_fingerprint, model_fingerprint
from e2espk.progress import progress_bar

LOG = logging.getLogger(__name__)


def window_starts(seconds: float, window_seconds: float, hop_seconds: float) -> list[float]:
    """Start times of windows covering ``seconds`` of audio (one window when it is short)."""
    if seconds <= window_seconds:
        return [0.0]
    starts = list(np.arange(0.0, seconds - window_seconds, hop_seconds))
    return [*starts, seconds - window_seconds]


def _utterance_windows(
    corpus: Corpus,
    layout: InputLayout,
    row: int,
    window_seconds: float,
    hop_seconds: float,
    cmvn: str | transforms.Normalization,
) -> Iterator[dict[str, np.ndarray]]:
    normalization = transforms.as_normalization(cmvn)
    utterance = str(corpus.utterances[row])
    whole = {
        name: require_finite(corpus.read(row, name), corpus.path, utterance, name)
        for name in layout.streams()
    }
    for start in window_starts(utterance_seconds(corpus, layout, row), window_seconds, hop_seconds):
        window: dict[str, np.ndarray] = {}
        parts, names = [], []
        for name in layout.streams():
            spec = corpus.streams[name]
            if not spec.time_axis:
                cut = whole[name]
            else:
                rate = spec.frame_rate_hz or 1.0
                length = max(1, round(window_seconds * rate))
                first = min(int(start * rate), max(whole[name].shape[0] - length, 0))
                cut = transforms.repeat_pad(whole[name][first : first + length], length)
            if name == PTM_KIND:
                window["ptm"] = cut
            else:
                parts.append(cut)
                names.append(name)
        if parts:
            columns = transforms.concatenated_columns(names, [part.shape[1] for part in parts])
            frames = np.concatenate(parts, axis=1).astype(np.float32, copy=False)
            window["handcrafted"] = normalization.apply(frames, columns)
        yield window


@torch.no_grad()
def extract(
    model: torch.nn.Module,
    corpus: Corpus,
    rows: Sequence[int],
    contract: EmbeddingContract,
    options: ExtractionOptions | None = None,
    cache: EmbeddingCache | None = None,
) -> np.ndarray:
    """``(len(rows), latent)`` float32 embeddings, the mean over each utterance's windows.

    With a ``cache`` (default: the one at ``options.cache_path``, keyed by the contract, if
    set), rows already in it are read back, and the others are embedded
    ``options.segment_size`` utterances at a time, each segment stored before the next starts:
    an interrupted run loses at most one segment. A stop signal (``interrupts``) stops it
    between utterances, never inside h5py; the segment being embedded is then not stored.
    """
    options = options or ExtractionOptions()
    if cache is None and options.cache_path is not None:
        key = contract.cache_key(model_fingerprint(model), corpus_fingerprint(corpus))
        with EmbeddingCache(options.cache_path, key, len(corpus)) as opened:
            return extract(model, corpus, rows, contract, options, opened)
    if len(rows) == 0:
        raise ValueError("no utterances to embed")
    model.eval()
    with interrupts.deferred():
        return _extract(model, corpus, rows, contract, options, cache)


def _extract(
    model: torch.nn.Module,
    corpus: Corpus,
    rows: Sequence[int],
    contract: EmbeddingContract,
    options: ExtractionOptions,
    cache: EmbeddingCache | None,
) -> np.ndarray:
    if cache is None:
        bar = progress_bar(total=len(rows), enabled=options.progress, desc="embedding", unit="utt")
        with bar:
            return _embed_rows(model, corpus, rows, contract, options, bar)
    wanted = np.asarray(rows, dtype=np.int64)
    unique = np.unique(wanted)
    todo = unique[~cache.done()[unique]]
    if todo.size < unique.size:
        LOG.info(
            "%d of %d utterances from the embedding cache %s",
            unique.size - todo.size,
            unique.size,
            cache.path,
        )
    with progress_bar(
        total=unique.size,
        initial=unique.size - todo.size,
        desc="embedding",
        unit="utt",
        enabled=options.progress,
    ) as bar:
        for start in range(0, todo.size, options.segment_size):
            segment = todo[start : start + options.segment_size]
            embeddings = _embed_rows(model, corpus, segment, contract, options, bar)
            cache.store(segment, embeddings)
    return cache.load(wanted)


def _embed_rows(
    model: torch.nn.Module,
    corpus: Corpus,
    rows: Sequence[int],
    contract: EmbeddingContract,
    options: ExtractionOptions,
    bar: tqdm,
) -> np.ndarray:
    """Windows of consecutive utterances batched together; each utterance's mean returned."""
    device = torch.device(options.device)
    window = contract.window_seconds
    pending: list[tuple[int, dict[str, np.ndarray]]] = []
    sums: np.ndarray | None = None
    counts = np.zeros(len(rows))

    def flush() -> None:
        nonlocal sums
        batch = {
            key: torch.from_numpy(np.stack([w[key] for _, w in pending])).to(device).float()
            for key in pending[0][1]
        }
        out = model(batch).float().cpu().numpy()
        if sums is None:
            sums = np.zeros((len(rows), out.shape[1]), dtype=np.float64)
        owners = np.array([owner for owner, _ in pending])
        np.add.at(sums, owners, out)
        np.add.at(counts, owners, 1)
        pending.clear()

    for position, row in enumerate(rows):
        interrupts.check()
        for cut in _utterance_windows(
            corpus, contract.layout, int(row), window, window, contract.normalization
        ):
            pending.append((position, cut))
            if len(pending) >= options.batch_size:
                flush()
        bar.update(1)
    if pending:
        flush()
    assert sums is not None, "no utterances to embed"
    embeddings = (sums / counts[:, None]).astype(np.float32)
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():  # the inputs were finite (checked on reading): the model overflowed
        names = corpus.utterances[np.asarray(rows)[bad]].tolist()
        raise InputDataError(
            corpus.path,
            f"the model gives non-finite embeddings for {preview(names)} utterance(s) whose "
            "features are finite: their values are out of the range the model was trained on",
        )
    return embeddings
