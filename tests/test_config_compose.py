"""TrainConfig is composed of parts, and users see the same flat options as before: flags,
config files, checkpoints' train_config; the verifier's width is --verifier-hidden-size, its
old spelling still works with a warning; the search space's named choices are the registries'."""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from e2espk.config import (
    build_parser,
    config_to_dict,
    flat_fields,
    option,
    parse_config,
    parse_explicit,
    part,
    save_config,
)
from e2espk.data.augment import SPECTRAL_STREAMS
from e2espk.data.features import FEATURE_MODES
from e2espk.errors import ConfigError
from e2espk.inference.system import load_embedding_system
from e2espk.models.backbones import BACKBONES
from e2espk.models.fusion import FUSIONS
from e2espk.search.driver import Pending, SearchState
from e2espk.search.space import COSTLY_BACKBONES, DEFAULT_RANGES, build_space, load_space_file
from e2espk.training.config import TrainConfig
from e2espk.training.optim import OPTIMIZERS
from e2espk.training.trainer import train
from tests.conftest import TINY_TRAIN

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "checkpoint_2026-12.pt"
# train.py's options before TrainConfig was composed (hidden_size became verifier_hidden_size)
OPTIONS_TEXT = """
train_hdf_file valid_hdf_file valid_trials valid_nontarget_ratio valid_max_target
valid_window_seconds mode feature_mode n_frames cmvn cmvn_skip_streams input_stats_streams
batch_size utts_per_speaker valid_batch_size workers spec_time_masks spec_time_mask_frames
spec_freq_masks spec_freq_mask_bins spec_gain_db spec_tilt_db spec_mix_prob spec_mix_snr_db
speaker_perturb speaker_vtlp speaker_tempo speaker_pitch speaker_perturb_mel_hz
speaker_perturb_log_f0_column ptm_time_masks ptm_time_mask_frames ptm_layer_dropout fusion
fusion_direction gate_granularity attention_heads backbone backbone_channels pooling
encoder_size ptm_norm latent_size dropout_prob hidden_size n_hidden ndiscriminators rproj_size
verifier_features verifier_normalize softmax margin scale smoothing margin_weight pair_weight
margin_start margin_hold_epochs margin_warmup_epochs init_from average_last final_checkpoint
hard_speaker_groups hard_speaker_pool hard_speaker_from_epoch pair_mining
pair_negatives_per_positive pair_label_smoothing pair_detach verifier_dropout verifier_l2
optimizer lr layer_weight_lr_scale momentum l2 warmup scheduler min_lr_ratio step_every
step_gamma plateau_patience max_gnorm amp epochs max_steps_per_epoch patience side_scores
pitch_log_f0_column pitch_voicing_column fusion_backends fusion_backend_max_utterances
select_metric checkpoint_path logdir save_every resume seed threads device progress
"""
FLAT_OPTIONS_2026_12 = OPTIONS_TEXT.split()
ADDED_SINCE = ["fusion_asnorm", "fusion_asnorm_top_n"]  # issue 13: the AS-norm fusion
ADDED_SINCE += ["sync_bn", "dist_timeout_seconds"]  # issue 11: several ranks under torchrun
CURRENT = [
    "verifier_hidden_size" if name == "hidden_size" else name for name in FLAT_OPTIONS_2026_12
] + ADDED_SINCE


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def test_every_part_field_is_a_flag_of_its_old_name() -> None:
    parts = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("part")}
    assert parts >= {"model", "verifier", "loss", "optim", "augment", "speaker_copies"}
    fields = flat_fields(TrainConfig)
    assert sorted(f.name for f in fields) == sorted(CURRENT)
    assert config_to_dict(TrainConfig()).keys() == set(CURRENT)
    in_parts = {f.name: f.parts[0] for f in fields if f.parts}
    assert in_parts["lr"] == in_parts["amp"] == in_parts["verifier_l2"] == "optim"
    assert in_parts["encoder_size"] == in_parts["dropout_prob"] == "model"
    assert in_parts["verifier_hidden_size"] == in_parts["pair_mining"] == "verifier"
    assert TrainConfig().optim.lr == 1e-3 and TrainConfig().verifier.verifier_hidden_size == 256
    parser = build_parser(TrainConfig, "train.py")
    option_strings = {s for action in parser._actions for s in action.option_strings}
    assert {flag(name) for name in FLAT_OPTIONS_2026_12} <= option_strings
    text = parser.format_help()
    for name in CURRENT:
        assert flag(name) in text, name
    for heading in ("model:", "verifier:", "loss:", "optim:", "augment:", "speaker_copies:"):
        assert f"\n{heading}\n" in text
    assert "--hidden-size" not in text  # the old spelling works but is not advertised


def test_flat_yaml_round_trip(tmp_path: Path) -> None:
    changed = {
        "train_hdf_file": "t.hdf", "lr": 0.02, "amp": "off", "backbone": "tdnn",
        "verifier_hidden_size": 64, "verifier_features": ("product", "sum"),
        "spec_mix_snr_db": (5.0, 9.0), "speaker_perturb": (0.9, 1.1), "cmvn_skip_streams": (),
        "side_scores": ["pitch_level"], "margin": 0.3, "pair_mining": "hard",
    }  # fmt: skip
    config = TrainConfig.from_flat(changed)
    assert config.optim.lr == 0.02 and config.model.backbone == "tdnn"
    assert config.augment.spec_mix_snr_db == (5.0, 9.0)
    path = save_config(config, tmp_path / "config.yaml")
    saved = yaml.safe_load(path.read_text())
    assert list(saved) == list(config_to_dict(config)) and "optim" not in saved  # flat
    assert parse_config(TrainConfig, ["--config", str(path)], "") == config
    assert TrainConfig.from_flat(saved) == config
    assert parse_config(TrainConfig, ["--lr", "0.02"], "").optim.lr == 0.02
    assert config.replace(lr=0.5, seed=3).optim.lr == 0.5 and config.optim.lr == 0.02
    with pytest.raises(
        ConfigError, match=r"unknown option\(s\) optim; valid options: .*verifier_l2"
    ):
        parse_config(TrainConfig, ["--config", str(_yaml(tmp_path, {"optim": {"lr": 1}}))], "")
    with pytest.raises(ConfigError, match=r"learning_rate; valid options: "):
        TrainConfig.from_flat({"learning_rate": 1.0})


def _yaml(tmp_path: Path, payload: dict[str, object]) -> Path:
    path = tmp_path / "options.yaml"
    path.write_text(yaml.safe_dump(payload))
    return path


def test_old_hidden_size_flag_and_key_are_mapped_with_a_warning(tmp_path: Path) -> None:
    with pytest.warns(FutureWarning, match="--hidden-size is renamed --verifier-hidden-size"):
        config = parse_config(TrainConfig, ["--hidden-size", "8"], "")
    assert config.verifier.verifier_hidden_size == 8
    assert config.model.encoder_size == 256  # the encoders' width is another option
    with pytest.warns(FutureWarning, match="hidden_size is renamed verifier_hidden_size"):
        config, explicit = parse_explicit(
            TrainConfig, ["--config", str(_yaml(tmp_path, {"hidden_size": 16}))], ""
        )
    assert config.verifier.verifier_hidden_size == 16 and "verifier_hidden_size" in explicit
    with pytest.warns(FutureWarning, match="renamed verifier_hidden_size"):
        assert TrainConfig.from_flat({"hidden_size": 32}).verifier.verifier_hidden_size == 32
    with pytest.raises(ConfigError, match="give verifier_hidden_size or its old name hidden_size"):
        TrainConfig.from_flat({"hidden_size": 32, "verifier_hidden_size": 8})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the current spelling warns about nothing
        parse_config(TrainConfig, ["--verifier-hidden-size", "8"], "")
        assert TrainConfig.upgrade_keys({"hidden_size": 8}) == {"verifier_hidden_size": 8}


def test_old_checkpoint_with_hidden_size_loads() -> None:
    raw = torch.load(FIXTURE, map_location="cpu", weights_only=False)
    assert (
        "hidden_size" in raw["train_config"] and "verifier_hidden_size" not in raw["train_config"]
    )
    system = load_embedding_system(FIXTURE)
    assert system.verifier is not None
    width = raw["train_config"]["hidden_size"]
    assert system.verifier.heads[0][0].out_features == width
    options = TrainConfig.from_flat(TrainConfig.upgrade_keys(raw["train_config"]))
    assert options.verifier.verifier_hidden_size == width


def test_an_old_run_resumes_without_naming_the_renamed_option(
    demo_hdf: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    flat = {"train_hdf_file": str(demo_hdf["train"]), "checkpoint_path": str(run)}
    flat |= {"backbone": "ecapa_tdnn_tiny", "max_steps_per_epoch": 1, **TINY_TRAIN}
    train(TrainConfig.from_flat(flat | {"epochs": 1}))
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    options = state["train_config"]
    options["hidden_size"] = options.pop("verifier_hidden_size")  # as written before the rename
    torch.save(state, run / "last.pt")
    with caplog.at_level(logging.WARNING, logger="e2espk.training.init_from"):
        result = train(TrainConfig.from_flat(flat | {"epochs": 2, "resume": True}))
    assert [entry["epoch"] for entry in result.history] == [0, 1]
    warned = [r.getMessage() for r in caplog.records if "differ from the run's" in r.getMessage()]
    assert warned and "epochs: 1 -> 2" in warned[0] and "hidden_size" not in warned[0]


def test_search_space_choices_are_the_registries_names() -> None:
    choices = {name: spec["choices"] for name, spec in DEFAULT_RANGES.items() if "choices" in spec}
    assert choices["fusion"] == FUSIONS.names(sort=False)
    assert choices["optimizer"] == OPTIMIZERS.names(sort=False)
    real = [name for name in BACKBONES.names(sort=False) if not name.endswith("_tiny")]
    assert set(COSTLY_BACKBONES) <= set(real)
    assert choices["backbone"] == [name for name in real if name not in COSTLY_BACKBONES]
    spectral = [n for n in FEATURE_MODES.names(sort=False) if SPECTRAL_STREAMS & set(FEATURE_MODES.get(n))]  # fmt: skip
    assert choices["feature_mode"] == spectral and "pitch_only" not in spectral
    assert "verifier_hidden_size" in DEFAULT_RANGES and "hidden_size" not in DEFAULT_RANGES
    assert set(DEFAULT_RANGES) <= set(CURRENT)


def test_space_file_and_search_state_take_the_old_name(tmp_path: Path) -> None:
    path = _yaml(tmp_path, {"hidden_size": {"choices": [8, 16]}})
    with pytest.warns(FutureWarning, match="hidden_size is renamed verifier_hidden_size"):
        assert load_space_file(path) == {"verifier_hidden_size": {"choices": [8, 16]}}
    with pytest.warns(FutureWarning):
        space = build_space(set(), str(path), ["hidden_size", "lr"])
    assert sorted(space.value) == ["lr", "verifier_hidden_size"]
    hp = {"hidden_size": 8, "lr": 0.01}
    old = SearchState(["hidden_size", "lr"], "fused/eer", [["ask", 0, hp], ["tell", 0, 0.5]])
    old.pending = {1: Pending(1, dict(hp), {"hidden_size": 8, "epochs": 1}, "j", 0.0)}
    old.records = [{"trial": 0, "hyperparameters": dict(hp), "status": "ok", "value": 0.5}]
    old.save(tmp_path / "state.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state = SearchState.load(tmp_path / "state.json")
    current = {"verifier_hidden_size": 8, "lr": 0.01}
    assert state.space_names == ["lr", "verifier_hidden_size"]
    assert state.events[0][2] == current and state.records[0]["hyperparameters"] == current
    assert state.pending[1].config == {"verifier_hidden_size": 8, "epochs": 1}


def test_an_option_in_two_parts_is_refused() -> None:
    @dataclasses.dataclass
    class A:
        lr: float = option(1.0, help="a")

    @dataclasses.dataclass
    class B:
        lr: float = option(2.0, help="b")

    @dataclasses.dataclass
    class Both:
        a: A = part(A, "a")
        b: B = part(B, "b")

    with pytest.raises(TypeError, match="lr declared twice"):
        flat_fields(Both)
