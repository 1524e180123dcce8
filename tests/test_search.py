"""Hyperparameter search: the space, serial and local-parallel searches, failures, resume."""

from __future__ import annotations

import json
from pathlib import Path

import nevergrad as ng
import pytest
import yaml

from e2espk.cli.hp_search import main as hp_search
from e2espk.cli.hp_search import main_parallel as hp_search_parallel
from e2espk.errors import ConfigError
from e2espk.search import driver
from e2espk.search.space import build_space

TRIAL_FLAGS = ["--backbone", "ecapa_tdnn_tiny", "--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "4", "--n-frames", "60",
               "--encoder-size", "16", "--latent-size", "8", "--verifier-hidden-size", "8", "--valid-window-seconds", "1.0", "--no-progress"]  # fmt: skip


def search_args(demo_hdf: dict[str, Path], search_dir: Path, budget: int, *extra: str) -> list[str]:
    return [
        "--budget",
        str(budget),
        "--search-dir",
        str(search_dir),
        "--train-hdf-file",
        str(demo_hdf["train"]),
        "--valid-hdf-file",
        str(demo_hdf["valid"]),
        *TRIAL_FLAGS,
        *extra,
    ]


def test_fixed_options_leave_the_space(tmp_path: Path) -> None:
    space = build_space(fixed={"lr", "fusion"})
    assert "lr" not in space.value and "fusion" not in space.value and "margin" in space.value
    assert isinstance(space["lr" if False else "l2"], ng.p.Log)
    (tmp_path / "space.yaml").write_text(
        yaml.safe_dump({"warmup": {"int_range": [0, 10]}, "fusion": {"choices": ["gating"]}})
    )
    space = build_space(
        fixed=set(), space_file=str(tmp_path / "space.yaml"), only=["warmup", "fusion"]
    )
    assert set(space.value) == {"warmup", "fusion"} and isinstance(space.value["warmup"], int)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"lr": {"log": [1.0, 0.1]}}))
    with pytest.raises(ConfigError, match="needs low < high"):
        build_space(fixed=set(), space_file=str(tmp_path / "bad.yaml"))
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({"learning_rate": {"log": [0.1, 1.0]}}))
    with pytest.raises(ConfigError, match=r"learning_rate are not train\.py options"):
        build_space(fixed=set(), space_file=str(tmp_path / "typo.yaml"))
    with pytest.raises(ConfigError, match="nothing to search"):
        build_space(fixed={"lr"}, only=["lr"])


def test_bad_search_options(
    demo_hdf: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        hp_search(search_args(demo_hdf, tmp_path / "s", 2, "--search-optimizer", "NoSuchOpt")) == 2
    )
    assert "unknown nevergrad optimizer 'NoSuchOpt'" in capsys.readouterr().err
    assert (
        hp_search(search_args(demo_hdf, tmp_path / "s2", 2, "--objective", "fused/accuracy")) == 2
    )
    assert "--objective" in capsys.readouterr().err


def test_serial_search_with_a_failing_trial(
    demo_hdf: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # heads 3 do not divide the 16 encoder channels: those trials fail inside train() and the search goes on
    (tmp_path / "space.yaml").write_text(
        yaml.safe_dump({"attention_heads": {"choices": [4, 3]}, "lr": {"log": [1e-3, 1e-2]}})
    )
    args = search_args(demo_hdf, tmp_path / "s", 4, "--search-optimizer", "RandomSearch", "--space-file", str(tmp_path / "space.yaml"),
                       "--search-params", "attention_heads", "lr", "--fusion", "cross_attention", "--search-seed", "3")  # fmt: skip
    status = hp_search(args)
    out = capsys.readouterr().out
    records = [
        json.loads(line) for line in (tmp_path / "s" / "trials.jsonl").read_text().splitlines()
    ]
    assert len(records) == 4 and sorted(r["trial"] for r in records) == [0, 1, 2, 3]
    failed = [r for r in records if r["status"] != "ok"]
    ok = [r for r in records if r["status"] == "ok"]
    assert failed and ok, "seed 3 draws both head counts"
    assert all(
        r["hyperparameters"]["attention_heads"] == 3 and "attention_heads" in r["error"]
        for r in failed
    )
    assert all(r["hyperparameters"]["attention_heads"] == 4 and 0 <= r["value"] <= 1 for r in ok)
    assert status == 0 and "retrain it:  python train.py --config" in out
    best = yaml.safe_load((tmp_path / "s" / "best_config.yaml").read_text())
    assert best["fusion"] == "cross_attention" and best["attention_heads"] == 4
    assert (tmp_path / "s" / "objective.png").stat().st_size > 0
    assert len(list((tmp_path / "s" / "tb").iterdir())) == 4, "one HParams run per trial"


@pytest.mark.parametrize("optimizer", ["OnePlusOne", "NGOpt"])
def test_killed_search_resumes_without_losing_or_repeating_trials(
    demo_hdf: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, optimizer: str
) -> None:
    args = search_args(
        demo_hdf, tmp_path / "s", 4, "--search-optimizer", optimizer, "--search-params", "lr"
    )
    original = driver.report.log_hparams
    calls = {"n": 0}

    def die_after_two(search_dir, record, objective):  # type: ignore[no-untyped-def]
        original(search_dir, record, objective)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(driver.report, "log_hparams", die_after_two)
    assert hp_search(args) == 130
    first = [
        json.loads(line) for line in (tmp_path / "s" / "trials.jsonl").read_text().splitlines()
    ]
    assert [r["trial"] for r in first] == [0, 1]
    monkeypatch.setattr(driver.report, "log_hparams", original)
    assert hp_search(args) == 0
    records = [
        json.loads(line) for line in (tmp_path / "s" / "trials.jsonl").read_text().splitlines()
    ]
    assert [r["trial"] for r in records] == [0, 1, 2, 3]
    assert records[:2] == first, "finished trials are kept as they were"
    state = driver.SearchState.load(tmp_path / "s" / driver.STATE_FILE)
    assert [e[0] for e in state.events].count("tell") == 4 and not state.pending
    assert (
        hp_search(
            search_args(
                demo_hdf,
                tmp_path / "straight",
                4,
                "--search-optimizer",
                optimizer,
                "--search-params",
                "lr",
            )
        )
        == 0
    )
    straight = [
        json.loads(line)
        for line in (tmp_path / "straight" / "trials.jsonl").read_text().splitlines()
    ]
    assert [r["hyperparameters"] for r in straight] == [r["hyperparameters"] for r in records], (
        "the resumed optimizer asks what an uninterrupted one asks"
    )


def test_resume_refuses_another_space(
    demo_hdf: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert hp_search(search_args(demo_hdf, tmp_path / "s", 1, "--search-params", "lr")) == 0
    assert (
        hp_search(search_args(demo_hdf, tmp_path / "s", 2, "--search-params", "lr", "margin")) == 2
    )
    assert "holds a search over ['lr'] for fused/eer" in capsys.readouterr().err


def test_local_parallel_search(demo_hdf: dict[str, Path], tmp_path: Path) -> None:
    args = search_args(
        demo_hdf,
        tmp_path / "s",
        3,
        "--cluster",
        "local",
        "--hp-workers",
        "2",
        "--search-params",
        "lr",
        "--poll-seconds",
        "0.5",
        "--timeout-min",
        "5",
    )
    assert hp_search_parallel(args) == 0
    records = [
        json.loads(line) for line in (tmp_path / "s" / "trials.jsonl").read_text().splitlines()
    ]
    assert sorted(r["trial"] for r in records) == [0, 1, 2] and all(
        r["status"] == "ok" for r in records
    )
    assert len({r["job_id"] for r in records}) == 3, "every trial ran as its own submitit job"
    assert all((Path(r["run_dir"]) / "best.pt").exists() for r in records)
    best = yaml.safe_load((tmp_path / "s" / "best_config.yaml").read_text())
    assert best["threads"] == 1, "trials ran with --cpus-per-task 1 threads; the config records it"
    from e2espk.training.config import TrainConfig
    from e2espk.training.trainer import train

    retrained = train(TrainConfig.from_flat({**best, "checkpoint_path": str(tmp_path / "retrain")}))
    assert retrained.best_metric == min(r["value"] for r in records), (
        "the best config reproduces its trial"
    )


def test_repeated_points_are_not_trained_again(demo_hdf: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text(
        yaml.safe_dump({"fusion": {"choices": ["concat", "gating"]}})
    )
    args = search_args(
        demo_hdf,
        tmp_path / "s",
        2,
        "--search-optimizer",
        "RandomSearch",
        "--space-file",
        str(tmp_path / "space.yaml"),
        "--search-params",
        "fusion",
    )
    assert hp_search(args) == 0
    records = [
        json.loads(line) for line in (tmp_path / "s" / "trials.jsonl").read_text().splitlines()
    ]
    assert sorted(r["hyperparameters"]["fusion"] for r in records) == ["concat", "gating"], (
        "the second trial is a new point"
    )
    state = driver.SearchState.load(tmp_path / "s" / driver.STATE_FILE)
    assert hp_search([*args[:1], "3", *args[2:]]) == 0, "resuming replays the repeated asks too"
    assert (
        len(driver.SearchState.load(tmp_path / "s" / driver.STATE_FILE).records) == 3
        and len(state.records) == 2
    )


def test_trial_value_is_that_of_the_exported_checkpoint() -> None:
    from e2espk.search.objective import exported_metrics

    history = [
        {"epoch": 0, "valid/fused/eer": 0.30},
        {"epoch": 1, "valid/fused/eer": 0.10},
        {"epoch": 2, "valid/fused/eer": 0.20},
    ]
    exported = {"averaged": {"epochs": [1, 2], "valid/fused/eer": 0.15}}
    assert exported_metrics(history, exported, "fused/eer", "averaged")[:1] == (0.15,)
    assert exported_metrics(history, exported, "fused/eer", "last")[0] == 0.20
    assert exported_metrics(history, exported, "fused/eer", "best")[::2] == (0.10, 1)
    # without an averaged model (e.g. fewer epochs than --average-last) the best epoch counts
    assert exported_metrics(history, {}, "fused/eer", "averaged")[0] == 0.10


def test_trials_averaged_over_seeds(
    demo_hdf: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--trial-seeds 2: each trial trains seeds 0 and 1 in its own run directories and tells
    the optimizer their mean; a resume must ask for the same number of seeds."""
    args = search_args(demo_hdf, tmp_path / "s", 1, "--search-params", "lr", "--trial-seeds", "2")
    assert hp_search(args) == 0
    (record,) = [json.loads(line) for line in (tmp_path / "s" / "trials.jsonl").read_text().splitlines()]  # fmt: skip
    assert record["status"] == "ok"
    trial_dir = Path(record["run_dir"])
    values = []
    for k in (0, 1):
        run = trial_dir / f"seed_{k}"
        assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == k
        history = json.loads((run / "history.json").read_text())
        values.append(history[-1]["valid/fused/eer"])
        assert record["metrics"][f"valid/fused/eer@seed_{k}"] == pytest.approx(values[-1])
    assert record["value"] == pytest.approx(sum(values) / 2)
    assert record["metrics"]["valid/fused/eer"] == pytest.approx(sum(values) / 2)
    # the same search dir with another number of seeds: refused, nothing trained
    assert hp_search(search_args(demo_hdf, tmp_path / "s", 2, "--search-params", "lr")) == 2
    assert "--trial-seeds 1" in capsys.readouterr().err
    assert not (tmp_path / "s" / "trials" / "trial_001").exists()
    assert hp_search(search_args(demo_hdf, tmp_path / "t", 1, "--trial-seeds", "0")) == 2
    assert "--trial-seeds must be >= 1" in capsys.readouterr().err
