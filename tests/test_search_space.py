"""The search space fits the corpus: no trial of the default space fails by construction."""

from __future__ import annotations

import json
from pathlib import Path

import nevergrad as ng
import pytest
import yaml

from e2espk.cli.hp_search import main as hp_search
from e2espk.config import config_to_dict
from e2espk.errors import ConfigError
from e2espk.search.constraints import CorpusLimits, corpus_limits, problem
from e2espk.search.report import failure_line, failure_reason
from e2espk.search.space import COSTLY_BACKBONES, build_space
from e2espk.training.config import TrainConfig
from tests.test_search import TRIAL_FLAGS

FLAGS_WITHOUT_BATCH = [f for i, f in enumerate(TRIAL_FLAGS) if "--batch-size" not in TRIAL_FLAGS[max(i - 1, 0) : i + 1]]  # fmt: skip


def base_config(demo_hdf: dict[str, Path], **fixed: object) -> dict[str, object]:
    config = TrainConfig.from_flat(
        dict(train_hdf_file=str(demo_hdf["train"]), valid_hdf_file=str(demo_hdf["valid"]))
    )
    return {**config_to_dict(config), **fixed}


def asked(space: ng.p.Dict, optimizer: str, n: int) -> list[dict]:
    opt = ng.optimizers.registry[optimizer](parametrization=space, budget=n, num_workers=1)
    values = []
    for _ in range(n):
        candidate = opt.ask()
        values.append(dict(candidate.value))
        opt.tell(candidate, 0.5)
    return values


def test_default_space_fits_a_small_corpus(demo_hdf: dict[str, Path]) -> None:
    limits = corpus_limits(str(demo_hdf["train"]), str(demo_hdf["valid"]))
    assert limits.speakers == 4
    base = base_config(demo_hdf)
    space = build_space(set(), base=base, limits=limits)
    for optimizer in ("NGOpt", "RandomSearch"):
        for value in asked(space, optimizer, 12):
            assert problem({**base, **value}, limits) is None, value
            assert 4 <= value["batch_size"] <= 8, "2 to 4 speakers of 2 utterances"
    assert build_space(set())["batch_size"].choices.value == (32, 64, 128), (
        "without a corpus: as before"
    )


def test_fields_searched_together_get_a_cheap_constraint(
    demo_hdf: dict[str, Path], tmp_path: Path
) -> None:
    limits = corpus_limits(str(demo_hdf["train"]), str(demo_hdf["valid"]))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(
        {"batch_size": {"choices": [4, 8, 16, 32]}, "utts_per_speaker": {"choices": [2, 4]}}
    ))  # fmt: skip
    space = build_space(set(), str(tmp_path / "space.yaml"), ["batch_size", "utts_per_speaker"],
                        base=base_config(demo_hdf), limits=limits)  # fmt: skip
    values = asked(space, "RandomSearch", 20)
    assert all(v["batch_size"] // v["utts_per_speaker"] in (2, 3, 4) for v in values), values


def test_choices_the_corpus_cannot_serve_leave_the_space(tmp_path: Path) -> None:
    limits = CorpusLimits("mel_pitch.hdf", 50, frozenset({"ptm", "mfbe", "pitch"}), ptm_pooled=True)
    base = {**config_to_dict(TrainConfig.from_flat(dict(train_hdf_file="x"))), "mode": "fusion"}
    space = build_space(set(), base=base, limits=limits)
    assert space["feature_mode"].choices.value == ("mfbe_pitch", "mfbe_only")
    assert "cross_attention" not in space["fusion"].choices.value, "pooled PTM has no frames"
    with pytest.raises(
        ConfigError, match=r"every trial would fail: --batch-size 128 .* takes 64 speakers"
    ):
        build_space({"batch_size"}, base={**base, "batch_size": 128}, limits=limits)
    with pytest.raises(ConfigError, match=r"mode 'fusion' .* needs stream\(s\) \['ptm'\]"):
        build_space(
            set(),
            base=base,
            limits=CorpusLimits("mel.hdf", 50, frozenset({"mfbe", "pitch"}), False),
        )


def test_a_fixed_batch_the_corpus_cannot_serve_stops_before_any_trial(
    demo_hdf: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--budget", "2", "--search-dir", str(tmp_path / "s"), "--search-params", "lr",
            "--train-hdf-file", str(demo_hdf["train"]), "--valid-hdf-file", str(demo_hdf["valid"]),
            *FLAGS_WITHOUT_BATCH, "--batch-size", "128"]  # fmt: skip
    assert hp_search(args) == 2
    assert (
        f"error: every trial would fail: --batch-size 128 with --utts-per-speaker 2 takes 64 "
        f"speakers per batch; {demo_hdf['train']} has 4 (batch sizes from 4 to 8 fit)"
    ) in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_costly_backbones_only_when_asked(demo_hdf: dict[str, Path]) -> None:
    assert not set(COSTLY_BACKBONES) & set(build_space(set())["backbone"].choices.value)
    assert set(COSTLY_BACKBONES) <= set(
        build_space(set(), costly_backbones=True)["backbone"].choices.value
    )


def test_first_default_trial_of_a_small_corpus_runs(
    demo_hdf: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # batch size searched with its default choices (32, 64, 128) on 4 training speakers
    args = ["--budget", "1", "--search-dir", str(tmp_path / "s"), "--search-params", "batch_size", "lr",
            "--train-hdf-file", str(demo_hdf["train"]), "--valid-hdf-file", str(demo_hdf["valid"]),
            *FLAGS_WITHOUT_BATCH]  # fmt: skip
    assert hp_search(args) == 0, capsys.readouterr().err
    (record,) = [
        json.loads(line) for line in (tmp_path / "s" / "trials.jsonl").read_text().splitlines()
    ]
    assert record["status"] == "ok" and record["hyperparameters"]["batch_size"] <= 8


def test_every_failed_trial_prints_its_reason(
    demo_hdf: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({"attention_heads": {"choices": [3, 5]}}))
    args = ["--budget", "2", "--search-dir", str(tmp_path / "s"), "--space-file", str(tmp_path / "space.yaml"),
            "--search-params", "attention_heads", "--fusion", "cross_attention", "--search-optimizer", "RandomSearch",
            "--train-hdf-file", str(demo_hdf["train"]), "--valid-hdf-file", str(demo_hdf["valid"]), *TRIAL_FLAGS]  # fmt: skip
    assert hp_search(args) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("trial ")]
    assert len(lines) == 2 and all(
        "failed: " in line and "attention_heads" in line for line in lines
    ), lines


def test_failure_reason_of_a_job_traceback() -> None:
    error = (
        "FailedJobError: Job (task=0) failed during processing with trace:\n----------------------\n"
        "Traceback (most recent call last):\n  File \"submission.py\", line 55, in process_job\n"
        "    result = delayed.result()\ne2espk.errors.ConfigError: batch of 128 takes 64 speakers\n\n"
        "----------------------\nYou can check full logs with 'job.stderr(0)' and 'job.stdout(0)'or at paths:\n"
        "  - /tmp/1_log.err\n"
    )  # fmt: skip
    assert failure_reason(error) == "e2espk.errors.ConfigError: batch of 128 takes 64 speakers"
    record = {
        "trial": 3,
        "status": "timeout",
        "error": "UncompletedJobError: Job 12 (task: 0) timed out",
    }
    assert (
        failure_line(record)
        == "trial 3 failed (timeout): UncompletedJobError: Job 12 (task: 0) timed out"
    )
    assert failure_line({"trial": 1, "status": "ok"}) is None
