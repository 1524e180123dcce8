"""Feature augmentation: masks where the RNG says, spectral dims only, seeded, never in eval."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from e2espk.data import augment
from e2espk.data.augment import AugmentConfig, draw_spans
from e2espk.data.corpus import Corpus, CorpusWriter, StreamSpec
from e2espk.data.features import resolve_layout
from e2espk.data.loader import CropDataset, SpeakerBatchSampler, training_loader
from e2espk.errors import ConfigError
from e2espk.models.config import ModelConfig
from e2espk.models.encoders import PtmEncoder
from e2espk.training.checkpoint import load_embedding_system
from e2espk.training.config import TrainConfig
from e2espk.training.trainer import train
from tests.conftest import TINY_TRAIN

MELS = 20
OFF = AugmentConfig(spec_time_masks=0, spec_freq_masks=0)
ALL_ON = AugmentConfig(
    spec_time_masks=2, spec_time_mask_frames=15, spec_freq_masks=2, spec_freq_mask_bins=5,
    spec_gain_db=6.0, spec_tilt_db=6.0, spec_mix_prob=1.0,
)  # fmt: skip


def random_corpus(path: Path, n_utts: int = 6) -> Corpus:
    """Random PTM (50 Hz), log-mel and pitch (100 Hz) of 3 speakers, 1-2 s each."""
    rng = np.random.default_rng(0)
    specs = [
        StreamSpec("ptm", "ptm", (3, 4), "float32", 50.0, chunk_frames=25),
        StreamSpec("mfbe", "handcrafted", (MELS,), "float32", 100.0, chunk_frames=50),
        StreamSpec("pitch", "handcrafted", (1,), "float32", 100.0, chunk_frames=50),
    ]
    with CorpusWriter(path, specs) as writer:
        for k in range(n_utts):
            frames = int(rng.integers(50, 100))
            writer.add(f"s{k % 3}", f"u{k}", {
                "ptm": rng.standard_normal((frames, 3, 4)).astype(np.float32),
                "mfbe": (5 + rng.standard_normal((2 * frames, MELS))).astype(np.float32),
                "pitch": rng.standard_normal((2 * frames, 1)).astype(np.float32),
            })  # fmt: skip
    return Corpus(path)


def test_spans_stay_within_their_limits() -> None:
    widths = set()
    for seed in range(300):
        for start, stop in draw_spans(np.random.default_rng(seed), 30, 3, 8):
            assert 0 <= start <= stop <= 30 and stop - start <= 8
            widths.add(stop - start)
    assert widths == set(range(9)), "every width from 0 to the limit is drawn"
    for start, stop in draw_spans(np.random.default_rng(1), 4, 5, 10):
        assert 0 <= start <= stop <= 4  # a mask wider than the axis is clipped to it


def test_masks_land_where_the_rng_says_and_only_on_spectral_dims() -> None:
    frames = np.random.default_rng(0).standard_normal((60, MELS + 1)).astype(np.float32)
    columns = augment.stream_columns(("mfbe", "pitch"), (MELS, 1))
    config = AugmentConfig(
        spec_time_masks=2, spec_time_mask_frames=10, spec_freq_masks=2, spec_freq_mask_bins=4
    )
    for seed in range(20):
        out = augment.mask_spectral(frames, columns, config, np.random.default_rng(seed))
        expected_rng = np.random.default_rng(seed)  # same draws, same order
        time_spans = draw_spans(expected_rng, 60, 2, 10)
        freq_spans = draw_spans(expected_rng, MELS, 2, 4)
        masked = np.zeros(frames.shape, dtype=bool)
        for start, stop in time_spans:
            masked[start:stop, :MELS] = True
        for start, stop in freq_spans:
            masked[:, start:stop] = True
        np.testing.assert_array_equal(out[~masked], frames[~masked])
        np.testing.assert_array_equal(out[:, MELS], frames[:, MELS])  # pitch untouched
        mean = frames.mean(axis=0)
        rows, cols = np.nonzero(masked)
        np.testing.assert_allclose(out[rows, cols], mean[cols], atol=1e-6)  # crop-mean fill
        np.testing.assert_array_equal(
            out, augment.mask_spectral(frames, columns, config, np.random.default_rng(seed))
        )


def test_gain_tilt_and_mix_act_on_log_mel_only(tmp_path: Path) -> None:
    corpus = random_corpus(tmp_path / "c.hdf")
    layout = resolve_layout(corpus, "fusion", "mfbe_pitch")
    plain = CropDataset(corpus, layout, 0.8, "none")
    levelled = CropDataset(
        corpus, layout, 0.8, "none", replace(OFF, spec_gain_db=6, spec_tilt_db=4)
    )
    for seed in range(10):
        a, b = plain[(1, seed)], levelled[(1, seed)]
        np.testing.assert_array_equal(a["ptm"], b["ptm"])  # same crop position
        offset = b["handcrafted"] - a["handcrafted"]  # type: ignore[operator]
        np.testing.assert_array_equal(offset[:, MELS], 0.0)  # pitch untouched
        np.testing.assert_allclose(offset, np.broadcast_to(offset[:1], offset.shape), atol=1e-4)
        np.testing.assert_allclose(np.diff(offset[0, :MELS], 2), 0.0, atol=1e-4)  # linear in f
        tilt = offset[0, MELS - 1] - offset[0, 0]
        gain = offset[0, :MELS].mean()
        assert abs(tilt) <= 4 * augment.DB_TO_LOG_POWER + 1e-5
        assert abs(gain) <= 6 * augment.DB_TO_LOG_POWER + 1e-5
    mixed = CropDataset(corpus, layout, 0.8, "none", replace(OFF, spec_mix_prob=1))
    for seed in range(5):
        a, b = plain[(0, seed)]["handcrafted"], mixed[(0, seed)]["handcrafted"]
        assert (b[:, :MELS] >= a[:, :MELS]).all() and (b[:, :MELS] > a[:, :MELS]).any()  # type: ignore[index]
        np.testing.assert_array_equal(b[:, MELS], a[:, MELS])  # type: ignore[index]
    a, b = np.zeros((2, 3)), np.log(np.full((2, 3), 10.0))
    np.testing.assert_allclose(augment.mix_log_mel(a, b, 0.1, slice(0, 3)), np.log(2.0))
    with pytest.raises(ConfigError, match="no effect with --cmvn mean"):
        AugmentConfig(spec_gain_db=3).validate("mean")


def test_the_crop_seed_decides_the_augmentation(tmp_path: Path) -> None:
    corpus = random_corpus(tmp_path / "c.hdf")
    layout = resolve_layout(corpus, "fusion", "mfbe_pitch")
    assert CropDataset(corpus, layout, 0.8, "mean", OFF).augment is None  # all off: plain crops
    plain = CropDataset(corpus, layout, 0.8, "none")
    everything = CropDataset(corpus, layout, 0.8, "none", ALL_ON)
    first, again, other = everything[(3, 7)], everything[(3, 7)], everything[(3, 8)]
    for key in ("ptm", "handcrafted"):
        np.testing.assert_array_equal(first[key], again[key])  # same seed, same crop
    assert not np.array_equal(first["handcrafted"], other["handcrafted"])
    unaugmented = plain[(3, 7)]
    np.testing.assert_array_equal(first["ptm"], unaugmented["ptm"])  # masked in the encoder
    np.testing.assert_array_equal(  # same crop position, pitch untouched
        first["handcrafted"][:, MELS],  # type: ignore[index]
        unaugmented["handcrafted"][:, MELS],  # type: ignore[index]
    )


def test_ptm_time_masks_fill_spans_with_the_mean_frame_in_training_only() -> None:
    encoder = PtmEncoder(n_layers=3, dim=4, out_dim=2, time_masks=2, time_mask_frames=6)
    mixed = torch.randn(500, 40, 4)
    torch.manual_seed(3)
    out = encoder.train().mask_frames(mixed)
    torch.manual_seed(3)
    torch.testing.assert_close(encoder.mask_frames(mixed), out)  # same seed, same masks
    hit = (out != mixed).any(dim=2)  # (B, T)
    mean = mixed.mean(dim=1, keepdim=True).expand_as(mixed)
    torch.testing.assert_close(out[hit], mean[hit])
    assert hit.sum(dim=1).max() <= 12 and hit.any(dim=1).float().mean() > 0.8
    runs = [
        len(run) for row in hit.tolist() for run in "".join("x" if h else " " for h in row).split()
    ]
    assert max(runs) <= 12 and 6 in runs  # two spans of up to 6 frames (they may touch)
    assert torch.equal(encoder.eval().mask_frames(mixed), mixed)  # a no-op in eval mode
    with pytest.raises(ConfigError, match="ptm_time_masks"):
        ModelConfig(mode="ptm", ptm_layers=3, ptm_dim=4, ptm_time_masks=-1).validate()


def test_augmented_batches_do_not_depend_on_workers(demo_hdf: dict[str, Path]) -> None:
    corpus = Corpus(demo_hdf["train"])
    dataset = CropDataset(corpus, resolve_layout(corpus, "fusion", "mfbe_pitch"), 0.6, "none", ALL_ON)  # fmt: skip

    def collect(workers: int) -> list[np.ndarray]:
        sampler = SpeakerBatchSampler(corpus.speaker_offsets, 8, 2, seed=0)
        return [
            np.concatenate([b["ptm"].float().numpy().ravel(), b["handcrafted"].numpy().ravel()])
            for b in training_loader(dataset, sampler, workers)
        ]

    for a, b in zip(collect(0), collect(2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_ptm_layer_dropout_renormalises_and_is_off_in_eval() -> None:
    torch.manual_seed(0)
    encoder = PtmEncoder(n_layers=5, dim=4, out_dim=3, layer_dropout=0.5)
    with torch.no_grad():
        encoder.layer_logits.copy_(torch.randn(5))
    softmax = torch.softmax(encoder.layer_logits.detach(), dim=0)
    weights = encoder.train().mixing_weights(2000).detach()
    kept = weights > 0
    assert kept.any(dim=1).all(), "every example keeps at least one layer"
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2000))
    renormalised = softmax * kept / (softmax * kept).sum(dim=1, keepdim=True)
    torch.testing.assert_close(weights, renormalised)  # the softmax over the kept layers
    assert 0.4 < 1 - kept.float().mean().item() < 0.55  # about the rate (a little less: >= 1 kept)
    encoder.eval()
    torch.testing.assert_close(encoder.mixing_weights(3), softmax)
    ptm = torch.randn(2, 7, 5, 4)
    plain = PtmEncoder(n_layers=5, dim=4, out_dim=3)
    plain.load_state_dict(encoder.state_dict())
    torch.testing.assert_close(encoder(ptm), plain.eval()(ptm))  # a no-op in eval mode
    with pytest.raises(ConfigError, match="ptm_layer_dropout"):
        ModelConfig(mode="ptm", ptm_layers=3, ptm_dim=4, ptm_layer_dropout=1.0).validate()


def test_training_with_every_augmentation(
    demo_hdf: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = {
        "spec_time_masks": 2, "spec_freq_masks": 2, "spec_gain_db": 6.0, "spec_tilt_db": 3.0,
        "spec_mix_prob": 0.5, "spec_mix_snr_db": [10.0, 15.0], "ptm_time_masks": 2,
        "ptm_layer_dropout": 0.3,
    }  # fmt: skip
    result = train(
        TrainConfig.from_flat(dict(
            train_hdf_file=str(demo_hdf["train"]), valid_hdf_file=str(demo_hdf["valid"]),
            checkpoint_path=str(tmp_path / "run"), backbone="ecapa_tdnn_tiny", cmvn="none",
            epochs=1, max_steps_per_epoch=3, **TINY_TRAIN, **flags,
        ))
    )  # fmt: skip
    assert np.isfinite(result.history[0]["train/loss"])
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert {key: saved[key] for key in flags} == flags  # the run records its augmentation
    system = load_embedding_system(tmp_path / "run" / "last.pt")
    assert (
        system.model.config.ptm_layer_dropout == 0.3 and system.train_config["spec_mix_prob"] == 0.5
    )

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("embedding for eval/validation must not augment")

    for name in ("mask_spectral", "level_log_mel", "mix_log_mel"):
        monkeypatch.setattr(augment, name, refuse)
    corpus = Corpus(demo_hdf["valid"])
    rows = list(range(len(corpus)))
    first = system.embed(corpus, rows, batch_size=4)
    np.testing.assert_array_equal(first, system.embed(corpus, rows, batch_size=4))  # no dropout


def test_augmentation_flags_and_bad_values() -> None:
    from e2espk.config import parse_config

    config = parse_config(
        TrainConfig,
        ["--train-hdf-file", "x", "--spec-time-masks", "0", "--spec-mix-snr-db", "5", "12"],
        "",
    ).validate()
    assert config.augment.spec_mix_snr_db == (5.0, 12.0)
    assert not config.augment.spec_time_masks
    # off by default (the demo and the dev benchmark showed no clear gain); recipes turn it on
    assert not TrainConfig.from_flat(dict(train_hdf_file="x")).augment.enabled
    for bad in ({"spec_freq_mask_bins": -1}, {"spec_mix_prob": 2.0}, {"spec_mix_snr_db": (9, 3)}):
        with pytest.raises(ConfigError):
            TrainConfig.from_flat(dict(train_hdf_file="x", **bad)).validate()
