"""Training batches: P x K speakers, time-aligned crops in every stream, reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from e2espk.data.corpus import Corpus, CorpusWriter, StreamSpec
from e2espk.data.features import resolve_layout
from e2espk.data.loader import CropDataset, SpeakerBatchSampler, training_loader
from e2espk.data.transforms import repeat_pad
from e2espk.errors import ConfigError, InputDataError


def clock_corpus(path: Path, frames_ptm: list[int]) -> Corpus:
    """Streams whose values are their frame times in seconds: crops can be checked for alignment."""
    specs = [
        StreamSpec("ptm", "ptm", (2, 3), "float32", 50.0, chunk_frames=25),
        StreamSpec("mfbe", "handcrafted", (4,), "float32", 100.0, chunk_frames=50),
        StreamSpec("pitch", "handcrafted", (1,), "float32", 100.0, chunk_frames=50),
    ]
    with CorpusWriter(path, specs) as writer:
        for k, frames in enumerate(frames_ptm):
            t50 = np.arange(frames) / 50.0
            t100 = np.arange(2 * frames) / 100.0
            writer.add(f"s{k % 3}", f"u{k}", {
                "ptm": np.broadcast_to(t50[:, None, None], (frames, 2, 3)).copy(),
                "mfbe": np.broadcast_to(t100[:, None], (2 * frames, 4)).copy(),
                "pitch": t100[:, None].copy(),
            })  # fmt: skip
    return Corpus(path)


def test_crops_cover_the_same_time_span_in_every_stream(tmp_path: Path) -> None:
    corpus = clock_corpus(tmp_path / "c.hdf", [150, 80, 200, 120, 90, 300])
    layout = resolve_layout(corpus, "fusion", "mfbe_pitch")
    dataset = CropDataset(corpus, layout, crop_seconds=1.0, cmvn="none")
    for row in range(len(corpus)):
        for seed in range(5):
            item = dataset[(row, seed)]
            ptm, hc = item["ptm"], item["handcrafted"]
            assert ptm.shape == (50, 2, 3) and hc.shape == (100, 5)
            assert abs(ptm[0, 0, 0] - hc[0, 0]) <= 0.02, (
                "crops start at the same time (within a 50 Hz frame)"
            )
            np.testing.assert_allclose(np.diff(hc[:, 0]), 0.01, atol=1e-6)  # contiguous frames
            assert item["label"] == corpus.speaker_of[row]


def test_short_utterances_are_repeat_padded(tmp_path: Path) -> None:
    corpus = clock_corpus(tmp_path / "c.hdf", [20, 30, 40])  # 0.4-0.8 s, crop 1 s
    layout = resolve_layout(corpus, "fusion", "mfbe_only")
    item = CropDataset(corpus, layout, crop_seconds=1.0, cmvn="none")[(0, 0)]
    np.testing.assert_array_equal(item["ptm"][:20], item["ptm"][20:40])
    assert item["handcrafted"].shape == (100, 4)
    np.testing.assert_array_equal(repeat_pad(np.arange(3), 7), [0, 1, 2, 0, 1, 2, 0])


def test_pk_batches_cover_the_corpus_and_are_reproducible(demo_hdf: dict[str, Path]) -> None:
    corpus = Corpus(demo_hdf["train"])  # 4 speakers x 4 utterances
    sampler = SpeakerBatchSampler(corpus.speaker_offsets, batch_size=4, utts_per_speaker=2, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 4
    seen = []
    for batch in batches:
        speakers = [int(corpus.speaker_of[row]) for row, _ in batch]
        assert len(set(speakers)) == 2 and all(speakers.count(s) == 2 for s in speakers)
        seen.extend(row for row, _ in batch)
    assert sorted(seen) == list(range(16)), (
        "one epoch visits every utterance once on a balanced corpus"
    )
    assert list(sampler) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_workers_give_identical_batches(demo_hdf: dict[str, Path]) -> None:
    corpus = Corpus(demo_hdf["train"])
    layout = resolve_layout(corpus, "fusion", "mfbe_pitch")
    dataset = CropDataset(corpus, layout, 1.0)

    def collect(workers: int) -> list[np.ndarray]:
        sampler = SpeakerBatchSampler(corpus.speaker_offsets, 8, 2, seed=0)
        return [
            np.concatenate([b["ptm"].float().numpy().ravel(), b["handcrafted"].numpy().ravel()])
            for b in training_loader(dataset, sampler, workers)
        ]

    for a, b in zip(collect(0), collect(2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_loader_leaves_the_global_rng_alone(demo_hdf: dict[str, Path]) -> None:
    """With persistent workers the DataLoader seeds them only in the first epoch; if that seed
    came from the global RNG, a resumed run would draw one number fewer and dropout would
    diverge from the uninterrupted run."""
    corpus = Corpus(demo_hdf["train"])
    dataset = CropDataset(corpus, resolve_layout(corpus, "fusion", "mfbe_pitch"), 1.0)
    loader = training_loader(dataset, SpeakerBatchSampler(corpus.speaker_offsets, 8, 2), 0)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    next(iter(loader))
    assert torch.equal(torch.get_rng_state(), before)


def test_bad_batch_shapes_and_missing_streams(demo_hdf: dict[str, Path], tmp_path: Path) -> None:
    corpus = Corpus(demo_hdf["train"])
    with pytest.raises(ConfigError, match="between 2 and the 4 speakers"):
        SpeakerBatchSampler(corpus.speaker_offsets, 20, 2)
    with pytest.raises(ConfigError, match="multiple"):
        SpeakerBatchSampler(corpus.speaker_offsets, 9, 2)
    small = clock_corpus(tmp_path / "c.hdf", [50, 60])
    with pytest.raises(
        InputDataError,
        match=r"feature mode 'mfcc_pitch' needs stream\(s\) \['mfcc'\]; this corpus has: ptm, mfbe, pitch",
    ):
        resolve_layout(small, "fusion", "mfcc_pitch")
