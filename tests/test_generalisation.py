"""Issue 13: margin warm-up, --init-from, checkpoint averaging and final.pt, pair mining."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from e2espk.cli.average import main as average_main
from e2espk.cli.train import main as train_main
from e2espk.errors import ConfigError
from e2espk.losses import MARGIN_HEADS, JointLoss, PairLossOptions, mine_pairs, pair_loss
from e2espk.losses.mining import hard_pairs, semi_hard_pairs
from e2espk.models import PairVerifier
from e2espk.pipelines.evaluation import EvalConfig, run_evaluation
from e2espk.training import run_setup
from e2espk.training import trainer as trainer_module
from e2espk.training.average import average_checkpoints, recent_checkpoints
from e2espk.training.checkpoint import load_checkpoint, load_embedding_system
from e2espk.training.config import TrainConfig
from e2espk.training.init_from import initialize_from
from e2espk.training.margin_schedule import MarginSchedule
from e2espk.training.run_setup import parameter_groups
from e2espk.training.trainer import train
from tests.conftest import TINY_TRAIN


def config(demo_hdf: dict[str, Path], run: Path, **overrides: object) -> TrainConfig:
    values = {
        "train_hdf_file": str(demo_hdf["train"]),
        "valid_hdf_file": str(demo_hdf["valid"]),
        "checkpoint_path": str(run),
        "backbone": "ecapa_tdnn_tiny",
        "max_steps_per_epoch": 3,
        **TINY_TRAIN,
    }
    return TrainConfig.from_flat(values | overrides)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key].cpu(), b[key].cpu()), key


# --- margin schedule -------------------------------------------------------------------------


def test_margin_schedule_values() -> None:
    schedule = MarginSchedule(end=0.2, start=0.0, hold_steps=10, ramp_steps=20)
    expected = {0: 0.0, 9: 0.0, 10: 0.0, 15: 0.05, 20: 0.1, 29: 0.19, 30: 0.2, 1000: 0.2}
    assert {s: schedule.margin_at(s) for s in expected} == pytest.approx(expected)
    assert MarginSchedule(0.3).margin_at(0) == 0.3  # no warm-up: the margin from step 0
    assert MarginSchedule(0.3, 0.1, hold_steps=5).margin_at(4) == 0.1
    assert MarginSchedule(0.3, 0.1, hold_steps=5).margin_at(5) == 0.3  # hold, then a jump
    cfg = TrainConfig.from_flat(
        dict(margin=0.4, margin_start=0.1, margin_hold_epochs=1, margin_warmup_epochs=0.5)
    )
    assert cfg.loss.margin_schedule(steps_per_epoch=10) == MarginSchedule(0.4, 0.1, 10, 5)


def test_margin_schedule_resumes_exactly_and_is_logged(
    demo_hdf: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    common = {"epochs": 3, "margin_hold_epochs": 1.0, "margin_warmup_epochs": 1.0}
    common |= {"average_last": 2, "dropout_prob": 0.1}
    straight = train(config(demo_hdf, tmp_path / "straight", **common))
    # 3 steps per epoch: epoch 0 holds 0; epoch 1 ramps 0, 0.2/3, 0.4/3; epoch 2 is at 0.2
    margins = [entry["train/margin"] for entry in straight.history]
    assert margins == pytest.approx([0.0, 0.2 / 3, 0.2])
    events = EventAccumulator(str(tmp_path / "straight" / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    assert "train/margin" in events.Tags()["scalars"]
    assert {"valid_averaged/fused/eer", "valid_averaged/cosine/eer"} <= set(
        events.Tags()["scalars"]
    )

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
    assert [h["train/margin"] for h in resumed.history] == margins
    assert [h["valid/fused/eer"] for h in straight.history] == [
        h["valid/fused/eer"] for h in resumed.history
    ]
    averaged = [
        load_checkpoint(p / "averaged.pt") for p in (tmp_path / "straight", tmp_path / "resumed")
    ]
    assert_same_weights(averaged[0]["model"], averaged[1]["model"])


# --- --init-from -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parent_run(demo_hdf: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs (rolling set of 2 kept), fused-EER validated."""
    run = tmp_path_factory.mktemp("parent")
    train(config(demo_hdf, run, epochs=2, average_last=2))
    return run


def test_init_from_loads_weights_and_records_the_parent(
    demo_hdf: dict[str, Path],
    parent_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    parent = load_checkpoint(parent_run / "last.pt")
    cfg = config(
        demo_hdf, tmp_path / "stage2", init_from=str(parent_run / "last.pt"), dropout_prob=0.2
    )  # dropout changes no parameter: allowed
    run = run_setup.build_run(cfg)
    record = initialize_from(
        cfg.init_from,  # type: ignore[arg-type]
        run.opt.model,
        run.opt.loss,
        run.model_config.to_dict(),
        cfg.verifier_config().to_dict(),
        run.corpus.speakers.tolist(),
    )
    assert record["loaded"] == ["model", "verifier", "margin_head"] and record["epoch"] == 1
    assert_same_weights(parent["model"], run.opt.model.state_dict())
    assert_same_weights(parent["loss"], run.opt.loss.state_dict())  # head and verifier

    # the README recipe: the parent's config.yaml keeps the architecture, flags change the rest
    stage2 = tmp_path / "stage2_run"
    argv = ["--config", str(parent_run / "config.yaml"), "--init-from", str(parent_run / "final.pt"),
            "--checkpoint-path", str(stage2), "--n-frames", "80", "--margin", "0.4", "--epochs", "1",
            "--lr", "1e-4", "--warmup", "0", "--average-last", "0", "--final-checkpoint", "last"]  # fmt: skip
    assert train_main(argv) == 0
    assert "final.pt = last.pt" in capsys.readouterr().out
    results = json.loads((stage2 / "results.json").read_text())
    assert results["init_from"]["path"] == str((parent_run / "final.pt").resolve())
    assert results["init_from"]["loaded"] == ["model", "verifier", "margin_head"]
    assert results["epochs_run"] == 1 and results["final"]["train/steps"] == 3
    assert load_checkpoint(stage2 / "last.pt")["parent"]["epoch"] == 1
    saved = yaml.safe_load((stage2 / "config.yaml").read_text())
    assert saved["init_from"] == str(parent_run / "final.pt") and saved["n_frames"] == 80
    assert (stage2 / "final.pt").samefile(stage2 / "last.pt")


def test_init_from_refuses_another_architecture(
    demo_hdf: dict[str, Path], parent_run: Path, tmp_path: Path
) -> None:
    cfg = config(
        demo_hdf,
        tmp_path / "run",
        init_from=str(parent_run / "last.pt"),
        latent_size=16,
        backbone="tdnn_tiny",
    )
    with pytest.raises(
        ConfigError, match=r"backbone: 'ecapa_tdnn_tiny' -> 'tdnn_tiny'; latent_size: 8 -> 16"
    ):
        train(cfg)
    with pytest.raises(ConfigError, match=r"verifier differs .* n_hidden: 2 -> 1"):
        train(
            config(demo_hdf, tmp_path / "run2", init_from=str(parent_run / "last.pt"), n_hidden=1)
        )


# --- averaging and final.pt ------------------------------------------------------------------


def test_training_exports_a_validated_average_and_final(parent_run: Path) -> None:
    recent = recent_checkpoints(parent_run)
    assert [p.name for p in recent] == ["epoch_000.pt", "epoch_001.pt"]
    results = json.loads((parent_run / "results.json").read_text())
    assert results["averaged"]["epochs"] == [0, 1]
    assert 0.0 <= results["averaged"]["valid/fused/eer"] <= 1.0
    assert results["final_checkpoint"] == {"checkpoint": "averaged", "source": "averaged.pt"}
    assert (parent_run / "final.pt").samefile(parent_run / "averaged.pt")
    assert "optimizer" not in load_checkpoint(parent_run / "averaged.pt")  # not resumable


def test_average_of_two_checkpoints_is_the_elementwise_mean(
    parent_run: Path, demo_hdf: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_path, b_path = recent_checkpoints(parent_run)
    out = tmp_path / "avg.pt"
    assert average_main([str(a_path), str(b_path), "-o", str(out)]) == 0
    assert "averaged 2 checkpoints" in capsys.readouterr().out
    a, b, avg = (load_checkpoint(p) for p in (a_path, b_path, out))
    for part in ("model", "verifier", "loss"):
        for key, value in avg[part].items():
            if value.is_floating_point():
                assert torch.allclose(value, (a[part][key] + b[part][key]) / 2, atol=1e-7), key
            else:  # BatchNorm's num_batches_tracked: the newest checkpoint's
                assert torch.equal(value, b[part][key]), key
    assert any("running_mean" in key for key in avg["model"])  # BatchNorm stats were averaged
    assert avg["averaged_from"] == [
        {"path": str(a_path), "epoch": 0},
        {"path": str(b_path), "epoch": 1},
    ]
    assert_same_weights(avg["model"], load_checkpoint(parent_run / "averaged.pt")["model"])
    system = load_embedding_system(out)
    assert system.verifier is not None and system.epoch == 1
    report = run_evaluation(
        EvalConfig(
            cp_path=str(out),
            test_hdf_file=str(demo_hdf["valid"]),
            out_path=str(tmp_path / "eval"),
            plots=False,
            progress=False,
            embedding_cache=False,
        )
    )
    assert 0.0 <= report.metrics["fused"]["eer"] <= 1.0
    with pytest.raises(ConfigError, match="at least one checkpoint"):
        average_checkpoints([], tmp_path / "none.pt")


# --- pair mining -----------------------------------------------------------------------------

# Three speakers, two crops each. Cosines (rounded) of the different-speaker pairs: (1,2) 0.96,
# (0,2) 0.80, (3,5) 0.796, (1,4) 0.784, (2,4) 0.588, (1,5) 0.48, (2,5) 0.36, (3,4) 0.195,
# (0,3) 0.10, (1,3) 0.06, (0,4) 0, (0,5) 0; same-speaker pairs: (0,1) 0.6,
# (2,3) 0.08, (4,5) 0.745.
HAND_EMB = torch.tensor(
    [
        [1.0, 0.0, 0.0],
        [0.6, 0.8, 0.0],
        [0.8, 0.6, 0.0],
        [0.1, 0.0, 1.0],
        [0.0, 1.0, 0.2],
        [0.0, 0.6, 0.8],
    ]
)
HAND_LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


def pairs(
    idx_a: torch.Tensor, idx_b: torch.Tensor, same: torch.Tensor
) -> list[tuple[int, int, bool]]:
    return list(zip(idx_a.tolist(), idx_b.tolist(), same.tolist(), strict=True))


def test_hard_mining_picks_the_highest_cosine_negatives() -> None:
    positives = [(0, 1, True), (2, 3, True), (4, 5, True)]
    negatives = [(1, 2, False), (0, 2, False), (3, 5, False)]  # the three most similar
    assert pairs(*hard_pairs(HAND_LABELS, HAND_EMB, 1.0)) == [*positives, *negatives]
    two = pairs(*hard_pairs(HAND_LABELS, HAND_EMB, 2.0))
    assert two[6:] == [(1, 4, False), (2, 4, False), (1, 5, False)]
    every = pairs(*hard_pairs(HAND_LABELS, HAND_EMB, 0.0))
    assert len(every) == 3 + 12  # ratio 0: all 12 different pairs, hardest first


def test_semi_hard_negatives_are_below_both_crops_hardest_positive() -> None:
    # hardest-positive cosines: crops 0,1 -> 0.6; 2,3 -> 0.08; 4,5 -> 0.745
    mined = pairs(*semi_hard_pairs(HAND_LABELS, HAND_EMB, 1.0))
    assert mined[3:] == [(1, 5, False), (1, 3, False), (0, 4, False)]  # 0.48 < 0.6, 0.06 < 0.08
    # (0, 3) at 0.10 is above crop 3's positive (0.08): it only fills once the others are used
    assert pairs(*semi_hard_pairs(HAND_LABELS, HAND_EMB, 2.0))[7:] == [(0, 3, False), (3, 4, False)]


def test_hard_positives_with_more_than_two_crops_per_speaker() -> None:
    emb = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [1.0, 0.1], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    idx_a, idx_b, same = hard_pairs(labels, emb, 1.0)
    # each crop's least similar same-speaker crop: 0 -> 2, 1 -> 2, 2 -> 0; (0, 1) is dropped
    assert pairs(idx_a[same], idx_b[same], same[same]) == [(0, 2, True), (1, 2, True), (3, 4, True)]


def test_random_mining_ratio_and_default_unchanged() -> None:
    labels = torch.arange(12) // 2  # 6 same pairs, 60 different
    default = mine_pairs(labels, generator=torch.Generator().manual_seed(4))
    assert (PairLossOptions().mining, PairLossOptions().negatives_per_positive) == ("random", 1.0)
    _, _, same = mine_pairs(
        labels, generator=torch.Generator().manual_seed(4), negatives_per_positive=3
    )
    assert same.sum() == 6 and (~same).sum() == 18
    assert (~default[2]).sum() == 6


def constant_verifier(bias: float) -> PairVerifier:
    verifier = PairVerifier(3, n_hidden=0)
    with torch.no_grad():
        verifier.heads[0][-1].weight.zero_()  # type: ignore[index]
        verifier.heads[0][-1].bias.fill_(bias)  # type: ignore[index]
    return verifier


def test_pair_label_smoothing() -> None:
    loss, _ = pair_loss(
        constant_verifier(2.0), HAND_EMB, HAND_LABELS, options=PairLossOptions(label_smoothing=0.2)
    )
    same = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    expected = F.binary_cross_entropy_with_logits(torch.full((6,), 2.0), same * 0.8 + 0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_pair_detach_sends_no_pair_gradient_into_the_model() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    x, labels = torch.randn(8, 5), torch.arange(8) // 2
    head = MARGIN_HEADS.build("aam_softmax", embedding_dim=3, n_classes=4)
    verifier = PairVerifier(3, hidden_size=8)

    def grads(pair_weight: float, detach: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        model.zero_grad(set_to_none=True)
        verifier.zero_grad(set_to_none=True)
        joint = JointLoss(
            head, verifier, 1.0, pair_weight, PairLossOptions(mining="hard", detach=detach)
        )
        joint(model(x), labels)[0].backward()
        first = verifier.heads[0][0].weight.grad  # type: ignore[index]
        return model.weight.grad.clone(), None if first is None else first.clone()  # type: ignore[union-attr]

    margin_only, _ = grads(0.0, False)
    detached, verifier_grad = grads(1.0, True)
    attached, _ = grads(1.0, False)
    assert torch.allclose(detached, margin_only)  # the pair term adds nothing to the model
    assert verifier_grad is not None and verifier_grad.abs().sum() > 0  # but trains the verifier
    assert not torch.allclose(attached, margin_only)
    alone = JointLoss(None, verifier, 0.0, 1.0, PairLossOptions(detach=True))
    model.zero_grad(set_to_none=True)
    alone(model(x), labels)[0].backward()
    assert model.weight.grad is None


# --- verifier regularisation and config checks ------------------------------------------------


def test_verifier_dropout_and_weight_decay_group() -> None:
    assert TrainConfig.from_flat(dict(dropout_prob=0.1)).verifier_config().dropout == 0.1
    assert (
        TrainConfig.from_flat(dict(dropout_prob=0.1, verifier_dropout=0.3))
        .verifier_config()
        .dropout
        == 0.3
    )
    model = torch.nn.Linear(5, 3)
    head = MARGIN_HEADS.build("aam_softmax", embedding_dim=3, n_classes=4)
    loss = JointLoss(head, PairVerifier(3, hidden_size=8), 1.0, 1.0)
    assert len(parameter_groups(model, loss, 10.0)) == 1  # default: one group, as before
    groups = parameter_groups(model, loss, 10.0, verifier_l2=0.05)
    assert len(groups) == 2 and groups[1]["weight_decay"] == 0.05
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in loss.verifier.parameters()}  # type: ignore[union-attr]
    assert sum(len(g["params"]) for g in groups) == len([*model.parameters(), *loss.parameters()])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"average_last": 0}, "--final-checkpoint averaged needs --average-last >= 2"),
        ({"final_checkpoint": "best", "valid_hdf_file": None}, "needs --valid-hdf-file"),
        (
            {"pair_detach": True, "margin_weight": 0.0, "select_metric": "learned/eer"},
            "nothing would train",
        ),
        ({"pair_mining": "hardest"}, "unknown pair mining 'hardest'"),
        ({"pair_negatives_per_positive": -1.0}, "must be >= 0"),
        ({"margin_warmup_epochs": -1.0}, "must be >= 0"),
    ],
)
def test_bad_generalisation_options(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_flat(dict(train_hdf_file="x.hdf", **overrides)).validate()


@pytest.mark.parametrize("features", [("product", "absdiff"), ("sqdiff",), ("sum", "product")])
def test_verifier_pair_features_are_symmetric_and_scoring_matches_forward(
    features: tuple[str, ...],
) -> None:
    torch.manual_seed(0)
    verifier = PairVerifier(6, hidden_size=5, n_hidden=1, features=features).eval()
    a, b = torch.randn(7, 6), torch.randn(7, 6)
    assert verifier.heads[0][0].in_features == 6 * len(features)
    assert torch.allclose(verifier(a, b), verifier(b, a))
    table = torch.cat([a, b])
    scored = verifier.score_pairs(table, table, torch.arange(7), torch.arange(7, 14), chunk_size=3)
    assert torch.allclose(scored, verifier.score(a, b), atol=1e-6)
    without_sum = PairVerifier(6, features=("product", "absdiff"))
    shifted = without_sum(a + 1.0, a + 1.0) - without_sum(a, a)  # identical pairs elsewhere
    assert not torch.allclose(shifted, torch.zeros_like(shifted))  # product still locates them
    with pytest.raises(ConfigError):
        PairVerifier(6, features=("product", "product"))


def test_verifier_features_and_normalisation_reach_the_checkpoint(
    tmp_path: Path, demo_hdf: dict[str, Path]
) -> None:
    config = TrainConfig.from_flat(dict(
        train_hdf_file=str(demo_hdf["train"]), checkpoint_path=str(tmp_path / "run"),
        backbone="ecapa_tdnn_tiny", epochs=1, max_steps_per_epoch=2,
        verifier_features=("product", "absdiff"), verifier_normalize=True, **TINY_TRAIN,
    ))  # fmt: skip
    train(config)
    system = load_embedding_system(tmp_path / "run" / "last.pt")
    assert system.verifier is not None and system.verifier.normalize
    assert system.verifier.heads[0][0].in_features == 2 * config.model.latent_size
