"""ResumableCorpusWriter: checkpoints survive, later writes are dropped, a broken partial restarts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from e2espk.data.corpus import Corpus, StreamSpec
from e2espk.data.resumable_writer import ResumableCorpusWriter
from e2espk.errors import InputDataError

SPECS = [StreamSpec("mfbe", "handcrafted", (3,), chunk_frames=4)]
SIGNATURE = {"options": {"a": 1}}


def frames(n: int, value: float) -> dict[str, np.ndarray]:
    return {"mfbe": np.full((n, 3), value, np.float32)}


def writer(path: Path, **options: object) -> ResumableCorpusWriter:
    return ResumableCorpusWriter(path, SPECS, signature=SIGNATURE, **options)  # type: ignore[arg-type]


def test_only_checkpointed_utterances_survive_a_stop(tmp_path: Path) -> None:
    path = tmp_path / "c.hdf"
    first = writer(path)
    first.add("s1", "u1", frames(5, 1.0))
    first.mark_bad("u2", "undecodable")
    first.checkpoint()
    first.add("s2", "u3", frames(6, 3.0))  # after the last checkpoint: dropped
    first.abort()
    assert not path.exists() and first.partial.exists()

    second = writer(path)
    assert second.done == {"u1"} and second.bad == {"u2": "undecodable"}
    second.add("s2", "u3", frames(7, 4.0))
    second.close()
    assert not second.partial.exists() and not second.journal.exists()
    corpus = Corpus(path)
    assert corpus.utterances.tolist() == ["u1", "u3"]
    assert corpus.read(corpus.utterance_row("u3"), "mfbe").shape == (7, 3)
    assert corpus.read(0, "mfbe").max() == 1.0


def test_a_broken_partial_file_is_started_again(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "c.hdf"
    first = writer(path)
    first.add("s1", "u1", frames(5, 1.0))
    first.checkpoint()
    first.abort()
    first.partial.write_bytes(b"\0" * 64)  # what a kill inside a flush can leave
    second = writer(path)
    assert second.done == set()
    assert "cannot continue" in caplog.text
    second.add("s1", "u1", frames(5, 2.0))
    second.close()
    assert Corpus(path).read(0, "mfbe").max() == 2.0


def test_a_torn_last_journal_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "c.hdf"
    first = writer(path)
    first.add("s1", "u1", frames(5, 1.0))
    first.checkpoint()
    first.abort()
    with first.journal.open("a") as handle:
        handle.write('{"speaker": "s1", "utter')
    assert writer(path).done == {"u1"}


def test_another_signature_is_refused_and_restart_discards(tmp_path: Path) -> None:
    path = tmp_path / "c.hdf"
    first = writer(path)
    first.add("s1", "u1", frames(5, 1.0))
    first.checkpoint()
    first.abort()
    with pytest.raises(InputDataError, match="--restart"):
        ResumableCorpusWriter(path, SPECS, signature={"options": {"a": 2}})
    fresh = ResumableCorpusWriter(path, SPECS, signature={"options": {"a": 2}}, restart=True)
    assert fresh.done == set()
    header = json.loads(fresh.journal.read_text().splitlines()[0])
    assert header == {"signature": {"options": {"a": 2}}}
    fresh.abort()
