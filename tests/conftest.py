"""Shared fixtures: tiny generated features in every input format the readers accept."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

LAYERS, DIMS, MELS = 3, 8, 6


@dataclasses.dataclass
class TinyFeatures:
    """Random features of a few speakers; PTM at 50 Hz, handcrafted at 100 Hz."""

    ptm: dict[str, np.ndarray]
    mfbe: dict[str, np.ndarray]
    pitch: dict[str, np.ndarray]
    utt2spk: dict[str, str]

    def write_utt2spk(self, path: Path) -> Path:
        path.write_text("".join(f"{u} {s}\n" for u, s in sorted(self.utt2spk.items())))
        return path


def make_features(
    n_speakers: int = 3, n_utts: int = 3, seed: int = 0, id_sep: str = "-"
) -> TinyFeatures:
    rng = np.random.default_rng(seed)
    ptm, mfbe, pitch, utt2spk = {}, {}, {}, {}
    for s in range(n_speakers):
        for u in range(n_utts):
            utt = f"spk{s}{id_sep}utt{u}"
            frames = int(rng.integers(10, 30))
            ptm[utt] = rng.standard_normal((frames, LAYERS, DIMS)).astype(np.float32)
            mfbe[utt] = rng.standard_normal((2 * frames, MELS)).astype(np.float32)
            pitch[utt] = rng.standard_normal(2 * frames).astype(np.float32)
            utt2spk[utt] = f"spk{s}"
    return TinyFeatures(ptm, mfbe, pitch, utt2spk)


def write_kaldi_dir(
    directory: Path, features: dict[str, np.ndarray], utt2spk: dict[str, str], name: str = "feats"
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with kaldiio.WriteHelper(
        f"ark,scp:{directory / (name + '.ark')},{directory / (name + '.scp')}"
    ) as writer:
        for utt in sorted(features):
            writer(utt, features[utt])
    subset = {u: s for u, s in utt2spk.items() if u in features}
    (directory / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in sorted(subset.items())))
    return directory


@pytest.fixture
def tiny() -> TinyFeatures:
    return make_features()


@pytest.fixture
def tiny_inputs(tmp_path: Path, tiny: TinyFeatures) -> dict[str, Path]:
    """The tiny corpus as a PTM .pt dict + utt2spk and a Kaldi dir with feats.scp and pitch.scp."""
    torch.save({u: torch.from_numpy(a) for u, a in tiny.ptm.items()}, tmp_path / "embedding.pt")
    kaldi = write_kaldi_dir(tmp_path / "kaldi", tiny.mfbe, tiny.utt2spk)
    write_kaldi_dir(
        kaldi, {u: a[:, None] for u, a in tiny.pitch.items()}, tiny.utt2spk, name="pitch"
    )
    return {
        "ptm": tmp_path / "embedding.pt",
        "kaldi": kaldi,
        "utt2spk": tiny.write_utt2spk(tmp_path / "utt2spk"),
        "out": tmp_path / "out",
    }


def pack_args(inputs: dict[str, Path], *extra: str) -> list[str]:
    """data_prep.py arguments packing ``tiny_inputs`` into inputs['out']/corpus.hdf."""
    return [
        "--ptm", str(inputs["ptm"]),
        "--path-to-data", str(inputs["kaldi"]),
        "--pitch", f"kaldi:{inputs['kaldi']}:pitch.scp",
        "--out-path", str(inputs["out"]),
        "--ptm-dtype", "float32",
        "--no-progress",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def demo_hdf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny demo corpus packed into train (4 speakers) and valid (2 speakers) HDF5 files."""
    from e2espk.data.demo import DemoConfig, write_demo_corpus
    from e2espk.data.packing import PackConfig, pack_corpus

    root = tmp_path_factory.mktemp("demo")
    paths = write_demo_corpus(
        DemoConfig(
            out_dir=str(root / "corpus"),
            speakers=6,
            utterances=4,
            sessions=2,
            min_seconds=0.8,
            max_seconds=1.6,
            ptm_layers=3,
            ptm_dims=8,
        )
    )
    pack_corpus(
        PackConfig.from_flat(dict(
            ptm=[str(paths.ptm_dict)], path_to_data=[str(paths.kaldi_dir)],
            mfcc=[f"kaldi:{paths.kaldi_dir}:mfcc.scp"], pitch=[f"kaldi:{paths.kaldi_dir}:pitch.scp"],
            split_by="speaker", valid_size=2, out_path=str(root / "hdf"), out_name="demo", progress=False,
        ))
    )  # fmt: skip
    return {
        "train": root / "hdf" / "demo_train.hdf",
        "valid": root / "hdf" / "demo_valid.hdf",
        "root": root,
    }


TINY_TRAIN = {
    "batch_size": 4,
    "utts_per_speaker": 2,
    "n_frames": 60,
    "encoder_size": 16,
    "latent_size": 8,
    "verifier_hidden_size": 8,
    "warmup": 2,
    "progress": False,
    "valid_batch_size": 8,
    "valid_window_seconds": 1.0,
}


@pytest.fixture(scope="session")
def tiny_checkpoint(demo_hdf: dict[str, Path]) -> Path:
    """A fusion model trained for 2 epochs on the tiny demo corpus (best.pt)."""
    from e2espk.training.config import TrainConfig
    from e2espk.training.trainer import train

    run = demo_hdf["root"] / "run"
    train(
        TrainConfig.from_flat(
            dict(
                train_hdf_file=str(demo_hdf["train"]),
                valid_hdf_file=str(demo_hdf["valid"]),
                checkpoint_path=str(run),
                backbone="ecapa_tdnn_tiny",
                epochs=2,
                **TINY_TRAIN,
            )
        )
    )
    return run / "best.pt"
