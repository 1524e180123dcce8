"""Hard prototype mining: batches of speakers the margin head finds similar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import e2espk.training.trainer as trainer_module
from e2espk.data.loader import SpeakerBatchSampler
from e2espk.errors import ConfigError
from e2espk.training.hard_speakers import prototype_neighbours
from e2espk.training.trainer import train
from tests.test_generalisation import assert_same_weights, config


def test_neighbours_are_the_most_similar_prototypes_first() -> None:
    angles = torch.tensor([0.0, 0.1, 0.3, 3.0, 3.05])  # two clusters on the circle
    weight = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1) * torch.tensor(
        [[1.0], [5.0], [0.2], [2.0], [1.0]]
    )  # norms must not matter
    neighbours = prototype_neighbours(weight, pool=2)
    assert neighbours.tolist() == [[1, 2], [0, 2], [1, 0], [4, 2], [3, 2]]
    assert prototype_neighbours(weight, pool=10).shape == (5, 4)  # never itself


def test_grouped_batches_hold_each_anchor_with_its_neighbours() -> None:
    n_speakers, utts = 24, 3
    offsets = np.arange(0, (n_speakers + 1) * utts, utts)
    # speakers form families of 4 (0-3, 4-7, ...): each one's neighbours are its family
    neighbours = np.array(
        [
            [f * 4 + k for k in range(4) if f * 4 + k != s]
            for s in range(n_speakers)
            for f in [s // 4]
        ]
    )
    sampler = SpeakerBatchSampler(offsets, batch_size=16, utts_per_speaker=2, seed=3)
    sampler.set_neighbours(neighbours, group_size=4)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for batch in batches:
        speakers = [row // utts for row, _ in batch]
        chosen = list(dict.fromkeys(speakers))
        assert len(chosen) == 8 and all(speakers.count(s) == 2 for s in chosen)
        families = [s // 4 for s in chosen]
        # groups of 4 similar speakers: at most two families per batch of 8 speakers
        assert len(set(families)) <= 3, families
    random_sampler = SpeakerBatchSampler(offsets, batch_size=16, utts_per_speaker=2, seed=3)
    spread = [len({row // utts // 4 for row, _ in b}) for b in random_sampler]
    assert np.mean(spread) > 4  # without groups, batches mix families
    again = SpeakerBatchSampler(offsets, batch_size=16, utts_per_speaker=2, seed=3)
    again.set_neighbours(neighbours, group_size=4)
    assert list(again) == batches  # seeded
    with pytest.raises(ValueError, match="neighbours must be"):
        sampler.set_neighbours(neighbours[:3], group_size=4)


def test_hard_speaker_training_resumes_exactly(
    demo_hdf: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    common = {"epochs": 3, "hard_speaker_groups": 2, "hard_speaker_pool": 3}
    common |= {"hard_speaker_from_epoch": 1}
    straight = train(config(demo_hdf, tmp_path / "straight", **common))
    original = trainer_module.train_one_epoch

    def killed_in_epoch_two(opt, loader, board, generator, max_steps=0, progress=False, epoch=0):  # type: ignore[no-untyped-def]
        if epoch == 2:
            raise KeyboardInterrupt("killed")
        return original(opt, loader, board, generator, max_steps, progress, epoch)

    monkeypatch.setattr(trainer_module, "train_one_epoch", killed_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(config(demo_hdf, tmp_path / "resumed", **common))
    monkeypatch.setattr(trainer_module, "train_one_epoch", original)
    resumed = train(config(demo_hdf, tmp_path / "resumed", resume=True, **common))
    assert_same_weights(straight.model.state_dict(), resumed.model.state_dict())
    plain = train(config(demo_hdf, tmp_path / "plain", epochs=3))
    with pytest.raises(AssertionError):  # the groups changed the batches of epochs 1-2
        assert_same_weights(straight.model.state_dict(), plain.model.state_dict())


def test_hard_speakers_need_a_margin_head(demo_hdf: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="margin head"):
        train(config(demo_hdf, tmp_path / "run", hard_speaker_groups=2, margin_weight=0.0))
