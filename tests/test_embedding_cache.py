"""Resumable embedding extraction: an interrupted run continues from its cache and ends with
the same embeddings; a cache from another model, window or corpus, or a corrupt one, is
replaced; eval and embed use it."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from e2espk.cli.embed import main as embed_main
from e2espk.cli.eval import main as eval_main
from e2espk.data.corpus import Corpus
from e2espk.data.transforms import as_normalization
from e2espk.errors import InputDataError
from e2espk.inference.contract import EmbeddingContract, ExtractionOptions
from e2espk.inference.embedding_cache import EmbeddingCache, model_fingerprint
from e2espk.inference.extraction import extract
from e2espk.training.checkpoint import EmbeddingSystem, load_embedding_system


class CountingModel(torch.nn.Module):
    """Wraps the real model; counts forward calls and can fail after a given number."""

    def __init__(self, model: torch.nn.Module, fail_after: int | None = None) -> None:
        super().__init__()
        self.model, self.calls, self.fail_after = model, 0, fail_after
        self.config = model.config

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        return self.model(batch)


def counting_system(checkpoint: Path, fail_after: int | None = None) -> EmbeddingSystem:
    system = load_embedding_system(checkpoint)
    system.model = CountingModel(system.model, fail_after)  # type: ignore[assignment]
    return system


def embed(system: EmbeddingSystem, corpus: Corpus, rows: list[int], cache: Path | None):
    return system.embed(corpus, rows, 1.0, 4, "cpu", False, cache)


def test_interrupted_extraction_resumes_with_identical_embeddings(
    tiny_checkpoint: Path, demo_hdf: dict[str, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache.h5"
    with Corpus(demo_hdf["valid"]) as corpus:
        rows = [*range(len(corpus) - 1, -1, -1), 3, 3]  # any order, repeats allowed

        def run(model: torch.nn.Module, layout, cmvn) -> np.ndarray:  # type: ignore[no-untyped-def]
            with EmbeddingCache(cache, {"run": 1}, len(corpus)) as store:
                contract = EmbeddingContract(model.config, layout, as_normalization(cmvn), 1.0)
                options = ExtractionOptions(batch_size=4, segment_size=3)
                return extract(model, corpus, rows, contract, options, store)

        full = counting_system(tiny_checkpoint)
        uninterrupted = embed(full, corpus, rows, None)  # no cache: one pass over all windows
        assert full.model.calls > 4
        broken = counting_system(tiny_checkpoint, fail_after=full.model.calls - 2)
        with pytest.raises(KeyboardInterrupt):
            run(broken.model, broken.layout, broken.normalization)
        with EmbeddingCache(cache, {"run": 1}, len(corpus)) as store:
            stored = int(store.done().sum())
        assert 0 < stored < len(corpus)  # finished segments were kept, the failing one was not
        resumed = counting_system(tiny_checkpoint)
        again = run(resumed.model, resumed.layout, resumed.normalization)
        np.testing.assert_allclose(again, uninterrupted, rtol=1e-6, atol=1e-6)
        assert 0 < resumed.model.calls < full.model.calls  # only the rest was embedded
        finished = counting_system(tiny_checkpoint)
        np.testing.assert_array_equal(
            run(finished.model, finished.layout, finished.normalization), again
        )
        assert finished.model.calls == 0


def test_cache_key_mismatch_and_corruption_start_over(
    tiny_checkpoint: Path, demo_hdf: dict[str, Path], tmp_path: Path, caplog
) -> None:
    cache = tmp_path / "cache.h5"
    with Corpus(demo_hdf["valid"]) as corpus:
        rows = list(range(len(corpus)))
        first = counting_system(tiny_checkpoint)
        reference = embed(first, corpus, rows, cache)
        assert first.model.calls > 0
        cached = counting_system(tiny_checkpoint)
        with caplog.at_level(logging.INFO):
            np.testing.assert_array_equal(embed(cached, corpus, rows, cache), reference)
        assert cached.model.calls == 0
        assert f"{len(rows)} of {len(rows)} utterances from the embedding cache" in caplog.text
        # another window length is another key: recomputed, with a warning
        other = counting_system(tiny_checkpoint)
        with caplog.at_level(logging.WARNING):
            other.embed(corpus, rows, 0.5, 4, "cpu", False, cache)
        assert other.model.calls > 0 and "made by another model, corpus or window" in caplog.text
        # other weights: another fingerprint
        changed = counting_system(tiny_checkpoint)
        before = model_fingerprint(changed.model)
        with torch.no_grad():
            next(changed.model.parameters()).add_(1.0)
        assert model_fingerprint(changed.model) != before
        # a file that is not HDF5 (e.g. a crash while the cache was created): replaced
        cache.write_bytes(b"not an hdf5 file")
        with caplog.at_level(logging.WARNING):
            np.testing.assert_allclose(
                embed(counting_system(tiny_checkpoint), corpus, rows, cache), reference, atol=1e-6
            )
        assert "is unreadable" in caplog.text
        with h5py.File(cache) as handle:
            assert handle["done"][:].all()


def test_eval_reuses_its_embedding_cache_and_embed_removes_its_own(
    tiny_checkpoint: Path, demo_hdf: dict[str, Path], tmp_path: Path, capfd
) -> None:
    out = tmp_path / "eval"
    args = ["--cp-path", str(tiny_checkpoint), "--test-hdf-file", str(demo_hdf["valid"]),
            "--out-path", str(out), "--no-plots", "--no-progress"]  # fmt: skip
    assert eval_main(args) == 0
    first = (out / "scores_cosine.txt").read_text()
    assert (out / "embedding_cache" / "test.h5").is_file()
    assert "from the embedding cache" not in capfd.readouterr().err
    assert eval_main(args) == 0
    assert "8 of 8 utterances from the embedding cache" in capfd.readouterr().err
    assert (out / "scores_cosine.txt").read_text() == first
    shutil.rmtree(out)
    assert eval_main([*args, "--no-embedding-cache"]) == 0
    assert not (out / "embedding_cache").exists()
    assert (out / "scores_cosine.txt").read_text() == first

    emb = tmp_path / "emb" / "valid.npz"
    assert embed_main(["--cp-path", str(tiny_checkpoint), "--data", str(demo_hdf["valid"]),
                       "--out", str(emb), "--no-progress"]) == 0  # fmt: skip
    assert emb.is_file() and sorted(p.name for p in emb.parent.iterdir()) == [
        "valid.npz",
        "valid.utt2spk",
    ]  # no cache or lock file left behind


def test_a_cache_in_use_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cache.h5"
    with EmbeddingCache(path, {"run": 1}, 4) as first:
        first.store(np.array([2, 0]), np.ones((2, 3), np.float32))
        with pytest.raises(InputDataError, match="in use by another run"):
            EmbeddingCache(path, {"run": 2}, 4)  # would otherwise replace the first one's file
        np.testing.assert_array_equal(first.done(), [True, False, True, False])
    with EmbeddingCache(path, {"run": 1}, 4) as again:  # released on close
        np.testing.assert_array_equal(again.load(np.array([2, 2, 0])), np.ones((3, 3)))
