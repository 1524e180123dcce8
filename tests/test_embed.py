"""embed.py: every export format reads back to the same embeddings, with utt2spk and speaker means."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import kaldiio
import numpy as np
import pytest
import torch

from e2espk.cli.embed import main as embed_main
from e2espk.data.corpus import Corpus
from e2espk.inference.contract import EmbeddingContract
from e2espk.inference.extraction import extract
from e2espk.training.checkpoint import load_embedding_system


def reference(checkpoint: Path, data: Path) -> tuple[list[str], list[str], np.ndarray]:
    system = load_embedding_system(checkpoint)
    with Corpus(data) as corpus:
        contract = EmbeddingContract(system.model.config, system.layout, system.normalization, 1.0)
        embeddings = extract(system.model, corpus, list(range(len(corpus))), contract)
        return corpus.utterances.tolist(), corpus.speakers[corpus.speaker_of].tolist(), embeddings


@pytest.mark.parametrize("suffix", [".h5", ".npz", ".ark", ".pt"])
def test_formats_round_trip(
    demo_hdf: dict[str, Path], tiny_checkpoint: Path, tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"emb{suffix}"
    assert (
        embed_main(
            [
                "--cp-path",
                str(tiny_checkpoint),
                "--data",
                str(demo_hdf["valid"]),
                "--out",
                str(out),
                "--speaker-means",
                "--no-progress",
            ]
        )
        == 0
    )
    ids, speakers, expected = reference(tiny_checkpoint, demo_hdf["valid"])
    if suffix == ".h5":
        with h5py.File(out) as handle:
            got = np.stack([handle[spk][utt][()] for utt, spk in zip(ids, speakers, strict=True)])
    elif suffix == ".npz":
        archive = np.load(out)
        assert archive["ids"].tolist() == ids and archive["speakers"].tolist() == speakers
        got = archive["embeddings"]
    elif suffix == ".ark":
        table = kaldiio.load_scp(str(out.with_suffix(".scp")))
        got = np.stack([table[utt] for utt in ids])
    else:
        table = torch.load(out)
        got = np.stack([table[utt].numpy() for utt in ids])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "emb.utt2spk").read_text().splitlines()[0] == f"{ids[0]} {speakers[0]}"
    assert (tmp_path / f"emb.spk{suffix}").exists()


def test_utterance_list(
    demo_hdf: dict[str, Path],
    tiny_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids, _, _ = reference(tiny_checkpoint, demo_hdf["valid"])
    (tmp_path / "list").write_text(f"{ids[3]}\n{ids[1]}\n")
    assert (
        embed_main(
            [
                "--cp-path",
                str(tiny_checkpoint),
                "--data",
                str(demo_hdf["valid"]),
                "--out",
                str(tmp_path / "e.npz"),
                "--utt-list",
                str(tmp_path / "list"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "e.npz")["ids"].tolist() == [ids[1], ids[3]]
    (tmp_path / "list").write_text("nobody\n")
    assert (
        embed_main(
            [
                "--cp-path",
                str(tiny_checkpoint),
                "--data",
                str(demo_hdf["valid"]),
                "--out",
                str(tmp_path / "e.npz"),
                "--utt-list",
                str(tmp_path / "list"),
            ]
        )
        == 2
    )
    assert "1 ('nobody') utterance(s) are not in" in capsys.readouterr().err


def test_hdf5_export_keeps_the_users_ids(tmp_path: Path) -> None:
    from e2espk.scoring.export import read_hdf5_embeddings, write_hdf5

    ids = ["id10270/5r0dWxy17C8/00001.wav", "id10270/5r0dWxy17C8/00002.wav", "50%/a b"]
    speakers = ["id10270", "id10270", "spk/x"]
    embeddings = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = write_hdf5(tmp_path / "emb.h5", ids, speakers, embeddings)
    with h5py.File(out) as handle:  # what the README tells people to do
        assert handle["utterance_ids"].asstr()[()].tolist() == ids
        assert handle["speaker_ids"].asstr()[()].tolist() == speakers
        found = {}
        for name in handle:
            if isinstance(handle[name], h5py.Group):
                for dataset in handle[name].values():
                    found[dataset.attrs["utterance"]] = (dataset.attrs["speaker"], dataset[()])
    assert sorted(found) == sorted(ids)
    assert all(found[u][0] == s for u, s in zip(ids, speakers, strict=True))
    got_ids, got_speakers, got = read_hdf5_embeddings(out)
    assert got_ids == ids and got_speakers == speakers
    np.testing.assert_array_equal(got, embeddings)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (snippet,) = re.findall(r"^```python\n(.*?)^```", readme, flags=re.S | re.M)
    namespace: dict = {}
    exec(snippet.replace("emb/test.h5", str(out)), namespace)  # the README's reading example
    assert namespace["ids"].tolist() == ids and sorted(namespace["vectors"]) == sorted(ids)
