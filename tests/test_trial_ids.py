"""Trial and utterance lists name utterances the way VoxCeleb and the Kaldi recipes do.

The official VoxCeleb lists say ``id10270/5r0dWxy17C8/00001.wav``; a ``files`` directory of
extracted features gives ``id10270/5r0dWxy17C8/00001`` and a Kaldi recipe's data dir
``id10270-5r0dWxy17C8-00001``. eval must score such a list against either corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

from e2espk.cli.eval import main as eval_main
from e2espk.errors import InputDataError
from e2espk.scoring.trials import match_utterances
from tests.conftest import write_kaldi_dir

VIDEOS = ["5r0dWxy17C8", "x-6uq_lK2Bk"]  # real shapes: 11 chars of [A-Za-z0-9_-]


def voxceleb_features(demo_root: Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """The demo corpus's streams keyed by VoxCeleb paths ``idNNNNN/<video>/NNNNN``, and the
    speaker of each."""
    corpus = demo_root / "corpus"
    ptm = torch.load(corpus / "ptm" / "embedding.pt")
    mfbe = dict(kaldiio.load_scp(str(corpus / "kaldi" / "feats.scp")))
    pitch = dict(kaldiio.load_scp(str(corpus / "kaldi" / "pitch.scp")))
    utt2spk = dict(line.split() for line in (corpus / "kaldi" / "utt2spk").read_text().splitlines())
    speakers = sorted(set(utt2spk.values()))
    streams: dict[str, dict[str, np.ndarray]] = {"ptm": {}, "mfbe": {}, "pitch": {}}
    speaker_of = {}
    count: dict[str, int] = {}
    for utt in sorted(utt2spk):
        spk = utt2spk[utt]
        count[spk] = count.get(spk, 0) + 1
        vox_id = f"id{10270 + speakers.index(spk)}/{VIDEOS[count[spk] % 2]}/{count[spk]:05d}"
        streams["ptm"][vox_id] = ptm[utt].float().numpy()
        streams["mfbe"][vox_id] = np.asarray(mfbe[utt])
        streams["pitch"][vox_id] = np.asarray(pitch[utt])
        speaker_of[vox_id] = spk
    return streams, speaker_of


def official_list(path: Path, speaker_of: dict[str, str]) -> Path:
    """A VoxCeleb-format list (``1|0 enroll test``) naming the .wav files."""
    ids = sorted(speaker_of)
    lines = [
        f"{int(speaker_of[a] == speaker_of[b])} {a}.wav {b}.wav\n"
        for i, a in enumerate(ids)
        for b in ids[i + 1 : i + 4]
    ]
    path.write_text("".join(lines))
    return path


def run_eval(checkpoint: Path, test_data: list[str], trials: Path, out: Path) -> dict:
    args = ["--cp-path", str(checkpoint), "--test-data", *test_data, "--trials-path", str(trials),
            "--out-path", str(out), "--no-progress", "--no-plots"]  # fmt: skip
    assert eval_main(args) == 0
    return json.loads((out / "results.json").read_text())


def test_official_voxceleb_list_against_a_files_directory(
    demo_hdf: dict[str, Path], tiny_checkpoint: Path, tmp_path: Path
) -> None:
    streams, speaker_of = voxceleb_features(demo_hdf["root"])
    for stream, arrays in streams.items():
        for vox_id, array in arrays.items():
            file = tmp_path / stream / f"{vox_id}.npy"  # files source: id = path without .npy
            file.parent.mkdir(parents=True, exist_ok=True)
            np.save(file, array)
    trials = official_list(tmp_path / "veri_test2.txt", speaker_of)
    results = run_eval(
        tiny_checkpoint,
        [f"{s}=files:{tmp_path / s}" for s in streams],
        trials,
        tmp_path / "o",
    )
    assert (
        results["trials"] == len(trials.read_text().splitlines()) and results["skipped_trials"] == 0
    )
    first = (tmp_path / "o" / "scores_fused.txt").read_text().split()[:2]
    assert first == trials.read_text().split()[1:3]  # scores keep the list's own ids
    assert first[0].startswith("id10270/") and first[0].endswith(".wav")


def test_official_voxceleb_list_against_a_kaldi_recipe_dir(
    demo_hdf: dict[str, Path], tiny_checkpoint: Path, tmp_path: Path
) -> None:
    streams, speaker_of = voxceleb_features(demo_hdf["root"])
    kaldi = {
        s: {v.replace("/", "-"): a for v, a in arrays.items()} for s, arrays in streams.items()
    }
    utt2spk = {v.replace("/", "-"): s for v, s in speaker_of.items()}  # id10270-5r0dWxy17C8-00001
    write_kaldi_dir(tmp_path / "data", kaldi["mfbe"], utt2spk)
    write_kaldi_dir(tmp_path / "data", kaldi["pitch"], utt2spk, name="pitch")
    torch.save({u: torch.from_numpy(a) for u, a in kaldi["ptm"].items()}, tmp_path / "ptm.pt")
    trials = official_list(tmp_path / "veri_test2.txt", speaker_of)
    test_data = [f"ptm={tmp_path / 'ptm.pt'}", f"mfbe=kaldi:{tmp_path / 'data'}",
                 f"pitch=kaldi:{tmp_path / 'data'}:pitch.scp"]  # fmt: skip
    results = run_eval(tiny_checkpoint, test_data, trials, tmp_path / "o")
    assert (
        results["trials"] == len(trials.read_text().splitlines()) and results["skipped_trials"] == 0
    )
    # and a Kaldi-format list with the recipe's own ids still matches exactly
    kaldi_trials = tmp_path / "trials"
    kaldi_trials.write_text(
        "".join(
            f"{a.replace('/', '-')[:-4]} {b.replace('/', '-')[:-4]} {'target' if t == '1' else 'nontarget'}\n"
            for t, a, b in (line.split() for line in trials.read_text().splitlines())
        )
    )
    again = run_eval(tiny_checkpoint, test_data, kaldi_trials, tmp_path / "o2")
    assert again["metrics"]["fused"]["eer"] == pytest.approx(results["metrics"]["fused"]["eer"])


def test_exact_ids_win_and_collisions_are_named() -> None:
    present = ["id10270/5r0dWxy17C8/00001", "x", "x.wav", "a.wav", "a.flac", "b"]
    wanted = ["id10270/5r0dWxy17C8/00001.wav", "id10270-5r0dWxy17C8-00001", "x", "x.wav", "b.MP3"]
    assert match_utterances([*wanted, "c"], present, "t") == {
        "id10270/5r0dWxy17C8/00001.wav": "id10270/5r0dWxy17C8/00001",
        "id10270-5r0dWxy17C8-00001": "id10270/5r0dWxy17C8/00001",
        "x": "x",  # both forms are in the corpus: each names itself
        "x.wav": "x.wav",
        "b.MP3": "b",
    }  # 'c' names nothing: left to the caller to report as missing
    with pytest.raises(
        InputDataError,
        match=r"'a' is not in the corpus and could name any of \['a.flac', 'a.wav'\]",
    ):
        match_utterances(["a"], present, "t")


def test_embed_utterance_lists_name_files_too(demo_hdf: dict[str, Path], tmp_path: Path) -> None:
    from e2espk.cli.embed import selected_rows
    from e2espk.data.corpus import Corpus

    with Corpus(demo_hdf["valid"]) as corpus:
        first, second = corpus.utterances.tolist()[:2]
        (tmp_path / "list").write_text(f"{first}.wav\n{second}\n{first}\n")
        assert selected_rows(corpus, str(tmp_path / "list")).tolist() == [0, 1]
