"""train(): every architecture takes a step; resume equals uninterrupted; TensorBoard; bad configs."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from e2espk.cli.train import main as train_main
from e2espk.device import resolve_device
from e2espk.errors import ConfigError, InputDataError
from e2espk.models.config import ModelConfig
from e2espk.models.speaker_model import build_speaker_model
from e2espk.training import trainer as trainer_module
from e2espk.training.checkpoint import load_checkpoint
from e2espk.training.config import TrainConfig
from e2espk.training.runtime import seed_everything
from e2espk.training.trainer import train
from tests.conftest import TINY_TRAIN

TINY = TINY_TRAIN


def config(demo_hdf: dict[str, Path], run: Path, **overrides: object) -> TrainConfig:
    values = {
        "train_hdf_file": str(demo_hdf["train"]),
        "valid_hdf_file": str(demo_hdf["valid"]),
        "checkpoint_path": str(run),
        "backbone": "ecapa_tdnn_tiny",
        **TINY,
    }
    return TrainConfig.from_flat(values | overrides)


ARCHITECTURES = [
    *[("ptm", "concat", b) for b in ("ecapa_tdnn_tiny", "tdnn_tiny", "resnet_tiny")],
    *[("handcrafted", "concat", b) for b in ("ecapa_tdnn_tiny", "tdnn_tiny", "resnet_tiny")],
    *itertools.product(
        ["fusion"],
        ["concat", "cross_attention", "gating"],
        ["ecapa_tdnn_tiny", "tdnn_tiny", "resnet_tiny"],
    ),
]


@pytest.mark.parametrize(("mode", "fusion", "backbone"), ARCHITECTURES)
def test_every_architecture_trains_one_step(
    demo_hdf: dict[str, Path], tmp_path: Path, mode: str, fusion: str, backbone: str
) -> None:
    cfg = config(
        demo_hdf,
        tmp_path,
        mode=mode,
        fusion=fusion,
        backbone=backbone,
        valid_hdf_file=None,
        epochs=1,
        max_steps_per_epoch=1,
        select_metric="cosine/eer",
    )
    result = train(cfg)
    assert result.history[0]["train/steps"] == 1 and torch.isfinite(
        torch.tensor(result.history[0]["train/loss"])
    )
    state = load_checkpoint(tmp_path / "last.pt")
    rebuilt = build_speaker_model(ModelConfig.from_dict(state["model_config"]))
    rebuilt.load_state_dict(state["model"])  # the checkpoint alone rebuilds the model
    for a, b in zip(rebuilt.state_dict().values(), result.model.state_dict().values(), strict=True):
        assert torch.equal(a, b.cpu())
    seed_everything(cfg.seed)  # the initial weights train() started from
    initial = build_speaker_model(ModelConfig.from_dict(state["model_config"]))
    changed = [
        name
        for (name, a), b in zip(initial.named_parameters(), rebuilt.parameters(), strict=True)
        if not torch.equal(a, b)
    ]
    assert changed, "one optimizer step must change the weights"


def test_pooled_ptm_corpus_trains(tmp_path: Path) -> None:
    from e2espk.data.packing import PackConfig, pack_corpus
    from tests.conftest import make_features

    tiny = make_features(n_speakers=4, n_utts=4)
    torch.save(
        {u: torch.from_numpy(a.mean(0)) for u, a in tiny.ptm.items()}, tmp_path / "pooled.pt"
    )
    pack_corpus(
        PackConfig.from_flat(
            dict(
                ptm=[str(tmp_path / "pooled.pt")],
                utt2spk=[str(tiny.write_utt2spk(tmp_path / "u2s"))],
                out_path=str(tmp_path),
                progress=False,
            )
        )
    )
    cfg = TrainConfig.from_flat(
        dict(
            train_hdf_file=str(tmp_path / "corpus.hdf"),
            valid_hdf_file=str(tmp_path / "corpus.hdf"),
            mode="ptm",
            backbone="pooled_mlp_tiny",
            pooling="mean",
            checkpoint_path=str(tmp_path / "run"),
            epochs=1,
            **TINY,
        )
    )
    result = train(cfg)
    assert 0.0 <= result.history[0]["valid/fused/eer"] <= 1.0


def test_resume_equals_uninterrupted(
    demo_hdf: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    common = {"epochs": 3, "dropout_prob": 0.1, "fusion": "gating", "max_steps_per_epoch": 3}
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
    with pytest.raises(ConfigError, match="pass --resume"):
        train(config(demo_hdf, tmp_path / "resumed", **common))
    resumed = train(config(demo_hdf, tmp_path / "resumed", resume=True, **common))
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), f"{name} differs after resume"
    for a, b in zip(
        straight.verifier.state_dict().values(), resumed.verifier.state_dict().values(), strict=True
    ):  # type: ignore[union-attr]
        assert torch.equal(a, b)
    assert [h["valid/fused/eer"] for h in straight.history] == [
        h["valid/fused/eer"] for h in resumed.history
    ]


def test_resume_names_the_options_that_differ(
    demo_hdf: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    common = {"epochs": 1, "max_steps_per_epoch": 1}
    train(config(demo_hdf, run, **common))
    saved_yaml = (run / "config.yaml").read_text()
    with pytest.raises(ConfigError) as refused:
        train(config(demo_hdf, run, resume=True, **(common | {"latent_size": 16})))
    assert "latent_size: 8 -> 16" in str(refused.value) and "config.yaml" in str(refused.value)
    assert (run / "config.yaml").read_text() == saved_yaml  # a refused resume changes nothing
    with caplog.at_level("WARNING", logger="e2espk.training.init_from"):
        train(
            config(
                demo_hdf,
                run,
                resume=True,
                epochs=2,
                max_steps_per_epoch=1,
                lr=0.01,
                dropout_prob=0.2,
            )
        )
    warned = [r.getMessage() for r in caplog.records if "differ from the run's" in r.getMessage()]
    assert len(warned) == 1, caplog.text
    assert (
        "epochs: 1 -> 2" in warned[0]
        and "lr: 0.001 -> 0.01" in warned[0]
        and "dropout_prob" in warned[0]
    )
    assert "resume:" not in warned[0]  # expected to change on a resume


def test_run_directory_and_tensorboard_tags(demo_hdf: dict[str, Path], tmp_path: Path) -> None:
    result = train(
        config(demo_hdf, tmp_path, epochs=2, fusion="gating", max_steps_per_epoch=10, save_every=1)
    )
    for name in (
        "config.yaml",
        "model_summary.txt",
        "history.json",
        "results.json",
        "last.pt",
        "best.pt",
        "epoch_000.pt",
        "epoch_001.pt",
    ):
        assert (tmp_path / name).exists(), name
    assert len(json.loads((tmp_path / "history.json").read_text())) == 2
    state = load_checkpoint(tmp_path / "last.pt")
    assert {
        "model",
        "verifier",
        "loss",
        "optimizer",
        "schedule",
        "scaler",
        "rng",
        "epoch",
        "train_config",
        "model_config",
        "layout",
    } <= set(state)
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    scalars, histograms = set(events.Tags()["scalars"]), set(events.Tags()["histograms"])
    expected = {
        "train/loss",
        "train/lr",
        "train/margin_loss",
        "train/pair_loss",
        "valid/fused/eer",
        "valid/cosine/min_dcf@0.01",
        "valid/learned/eer",
        "ptm_layer_weight/00",
        "ptm_layer_weight/02",
        "gate/mean",
    }
    assert expected <= scalars, expected - scalars
    assert {"valid/embeddings", "ptm_layer_weights", "valid/scores_fused/target"} <= histograms
    eers = [event.value for event in events.Scalars("valid/fused/eer")]
    assert eers == pytest.approx([h["valid/fused/eer"] for h in result.history])


def test_cli_config_file_and_flags(
    demo_hdf: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "train.yaml"
    file.write_text(
        yaml.safe_dump(
            {
                "epochs": 5,
                "max_steps_per_epoch": 2,
                "backbone": "tdnn_tiny",
                **{k: v for k, v in TINY.items() if k != "progress"},
            }
        )
    )
    args = [
        "--config",
        str(file),
        "--epochs",
        "1",
        "--train-hdf-file",
        str(demo_hdf["train"]),
        "--valid-hdf-file",
        str(demo_hdf["valid"]),
        "--checkpoint-path",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    assert train_main(args) == 0
    out = capsys.readouterr().out
    assert "validation EER (fused)" in out and "validation EER (cosine)" in out
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["backbone"] == "tdnn_tiny", (
        "flags override the file, the file overrides defaults"
    )
    assert (tmp_path / "run" / "train.log").read_text().count("epoch 0/1:") == 1


def test_bad_configurations_fail_before_training(demo_hdf: dict[str, Path], tmp_path: Path) -> None:
    cases: list[tuple[dict[str, object], type[Exception], str]] = [
        (
            {"select_metric": "fused/eer", "pair_weight": 0.0},
            ConfigError,
            "needs the verification network",
        ),
        ({"select_metric": "cosine/accuracy"}, ConfigError, "SCORE/METRIC"),
        (
            {"margin_weight": 0.0, "pair_weight": 0.0, "select_metric": "cosine/eer"},
            ConfigError,
            "nothing to train",
        ),
        ({"batch_size": 5}, ConfigError, "multiple of --utts-per-speaker"),
        ({"amp": "bf16", "device": "cpu"}, ConfigError, "needs a CUDA device"),
        (
            {"backbone": "transformer9000"},
            ConfigError,
            "unknown backbone 'transformer9000'; choose one of",
        ),
        ({"fusion": "cross_attention", "attention_heads": 5}, ConfigError, "attention_heads"),
        ({"train_hdf_file": str(tmp_path / "nope.hdf")}, InputDataError, "corpus file not found"),
    ]
    for overrides, error, message in cases:
        with pytest.raises(error, match=message):
            train(config(demo_hdf, tmp_path / "run", **overrides))
        assert not (tmp_path / "run" / "last.pt").exists()
    trials = tmp_path / "trials"
    trials.write_text("spk0000-s0-000 ghost-utt target\n")
    with pytest.raises(InputDataError, match="'ghost-utt'"):
        train(config(demo_hdf, tmp_path / "run", valid_trials=str(trials)))


def test_missing_stream_for_mode_is_reported(tmp_path: Path) -> None:
    from e2espk.data.packing import PackConfig, pack_corpus
    from tests.conftest import make_features, write_kaldi_dir

    tiny = make_features(n_speakers=4, n_utts=2)
    write_kaldi_dir(tmp_path / "k", tiny.mfbe, tiny.utt2spk)
    pack_corpus(
        PackConfig.from_flat(
            dict(path_to_data=[str(tmp_path / "k")], out_path=str(tmp_path), progress=False)
        )
    )
    cfg = TrainConfig.from_flat(
        dict(
            train_hdf_file=str(tmp_path / "corpus.hdf"),
            mode="fusion",
            checkpoint_path=str(tmp_path / "run"),
            **TINY,
        )
    )
    with pytest.raises(InputDataError, match="needs stream"):
        train(cfg)
    with pytest.raises(InputDataError, match="mode 'ptm' needs a 'ptm' stream"):
        train(dataclasses.replace(cfg, mode="1"))


def test_cuda_device_names_resolve_to_an_indexed_current_device(monkeypatch) -> None:
    """No GPU here: torch.cuda's queries are stubbed to a 2-GPU machine, and the test checks
    only e2espk's handling of the names (plain "cuda" needs an index for set_device)."""
    made_current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", made_current.append)
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert made_current == [torch.device("cuda", 1), torch.device("cuda", 0)]
    with pytest.raises(ConfigError, match="--device cuda:2: this machine has 2 CUDA device"):
        resolve_device("cuda:2")
