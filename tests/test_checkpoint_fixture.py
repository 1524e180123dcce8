"""Checkpoints users already have keep loading and give the same numbers.

``tests/fixtures/checkpoint_2026-12.pt`` was written by e2espk as of 2026-12-02
(``tests/fixtures/make_checkpoint_fixture.py``); the expected embeddings and learned scores next
to it were computed by that version on a seeded random corpus.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from e2espk.data.corpus import Corpus
from e2espk.training.checkpoint import load_embedding_system

FIXTURES = Path(__file__).resolve().parent / "fixtures"
spec = importlib.util.spec_from_file_location(
    "make_fixture", FIXTURES / "make_checkpoint_fixture.py"
)
assert spec is not None and spec.loader is not None
make_fixture = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_fixture)


def test_the_2026_12_checkpoint_embeds_and_scores_as_it_did(tmp_path: Path) -> None:
    expected = np.load(make_fixture.EXPECTED)
    corpus = Corpus(make_fixture.fixture_corpus(tmp_path / "fixture.hdf"))
    system = load_embedding_system(make_fixture.CHECKPOINT)
    assert system.layout.uses_ptm and system.layout.uses_handcrafted and system.cmvn == "mean"
    embeddings = system.embed(corpus, np.arange(len(corpus)), window_seconds=1.0)
    assert np.allclose(embeddings, expected["embeddings"], atol=1e-5)
    table = torch.as_tensor(embeddings)
    assert system.verifier is not None
    scores = system.verifier.score_pairs(
        table, table, torch.tensor([0, 0, 1]), torch.tensor([1, 2, 3])
    )
    assert np.allclose(scores.numpy(), expected["learned"], atol=1e-5)
