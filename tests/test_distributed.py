"""train.py under the real torchrun (``python -m torch.distributed.run``), CPU and gloo.

Every launch is a real job of 2 ranks on the tiny demo corpus. The reference is a plain
single-process run with the same global batch. Tolerance of the weight comparisons: the ranks
sum in another order than one process does (BatchNorm statistics over two halves, gradients
all-reduced over two ranks, convolutions over batches of 2 instead of 4), float32 rounding of
about 1e-7 relative per operation, which 6 SGD steps with momentum grow to about 2e-5 relative
(measured). ``rtol = atol = 1e-4`` leaves 5x margin, while a real error (gradients scaled by the
world size, a rank's slice missing from the loss, per-rank BatchNorm) moves weights by 1e-3 or
more. SGD rather than Adam: Adam divides each gradient by its own magnitude, so a parameter
whose exact gradient is 0 (a bias right before a BatchNorm) takes lr-sized steps on rounding
noise, and such parameters would differ by ~lr whatever the implementation.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from e2espk.data.loader import SpeakerBatchSampler
from e2espk.distributed.process_group import DistContext, rank_device
from e2espk.distributed.sharding import RankSlice, check_divisible, shard_bounds
from e2espk.distributed.sync_batchnorm import GlooSyncBatchNorm, convert_sync_batchnorm
from e2espk.errors import ConfigError
from e2espk.training.config import TrainConfig
from e2espk.training.trainer import train
from tests.conftest import TINY_TRAIN

REPO = Path(__file__).resolve().parents[1]
ENTRY = REPO / "tests" / "torchrun_entry.py"
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}
# a real torchrun job of 2 ranks (5-20 s each on 2 free cores)
needs_gloo = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch built without gloo",
)
OPTIONS = {
    **TINY_TRAIN,
    "backbone": "ecapa_tdnn_tiny",  # BatchNorm everywhere: --sync-bn matters
    "epochs": 2,
    "max_steps_per_epoch": 3,
    "dropout_prob": 0.0,
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "threads": 1,
    "seed": 3,
    "average_last": 2,
}


def flags(values: dict[str, Any]) -> list[str]:
    out = []
    for key, value in values.items():
        if isinstance(value, bool):
            out.append(f"--{'' if value else 'no-'}{key.replace('_', '-')}")
        else:
            out.append(f"--{key.replace('_', '-')}={value}")
    return out


def torchrun(
    demo: dict[str, Path],
    run_dir: Path,
    *extra: str,
    ranks: int = 2,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """train.py's arguments for the demo corpus, run by torchrun with ``ranks`` processes."""
    clean = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    args = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
        str(ENTRY), f"--train-hdf-file={demo['train']}", f"--valid-hdf-file={demo['valid']}",
        f"--checkpoint-path={run_dir}", "--sync-bn", *flags(OPTIONS), *extra,
    ]  # fmt: skip
    return subprocess.run(
        args, cwd=REPO, text=True, capture_output=True, timeout=300,
        env=clean | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"} | (env or {}),
    )  # fmt: skip


def single(demo: dict[str, Path], run_dir: Path, **changes: Any) -> Any:
    flat = {"train_hdf_file": str(demo["train"]), "valid_hdf_file": str(demo["valid"])}
    return train(
        TrainConfig.from_flat(flat | OPTIONS | {"checkpoint_path": str(run_dir), **changes})
    )


def state(run_dir: Path, name: str = "last.pt") -> dict[str, Any]:
    return torch.load(run_dir / name, map_location="cpu", weights_only=False)


def assert_same_weights(a: dict[str, Any], b: dict[str, Any], **tolerance: float) -> None:
    """Model, verifier and margin head (``loss``) of two checkpoints, within ``tolerance``."""
    for part in ("model", "loss"):
        assert a[part].keys() == b[part].keys()
        for key, value in a[part].items():
            torch.testing.assert_close(value, b[part][key], msg=f"{part}.{key}", **tolerance)


def valid_eers(history: list[dict[str, Any]]) -> list[float]:
    return [entry[key] for entry in history for key in sorted(entry) if key.endswith("/eer")]


@pytest.fixture(scope="module")
def runs(demo_hdf: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The single-process reference and the uninterrupted 2-rank run (2 epochs x 3 steps)."""
    root = tmp_path_factory.mktemp("ddp")
    single(demo_hdf, root / "one")
    done = torchrun(demo_hdf, root / "two")
    assert done.returncode == 0, done.stdout + done.stderr
    return {"one": root / "one", "two": root / "two", "log": root / "two.log"}


@pytest.mark.slow
@needs_gloo
def test_two_ranks_reach_the_weights_and_eer_of_one_process(runs: dict[str, Path]) -> None:
    one, two = state(runs["one"]), state(runs["two"])
    assert (one["epoch"], one["step"]) == (two["epoch"], two["step"]) == (1, 6)
    assert_same_weights(one, two, **TOLERANCE)
    assert valid_eers(two["history"]) == valid_eers(one["history"])  # EER: exactly the same
    for a, b in zip(one["history"], two["history"], strict=True):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5)
    # rank 0 alone wrote the run: one TensorBoard event file, its log names the ranks
    assert len(list((runs["two"] / "tb").glob("events.out.tfevents.*"))) == 1
    assert "2 ranks (gloo): global batch 4, 2 per rank" in (runs["two"] / "train.log").read_text()
    assert (runs["two"] / "final.pt").exists() and (runs["two"] / "results.json").exists()


@pytest.mark.slow
@needs_gloo
def test_gradient_clipping_under_two_ranks_matches_one_process(
    demo_hdf: dict[str, Path], tmp_path: Path
) -> None:
    """With a norm limit every step hits, clipping must act on the gradient all ranks share
    (after DDP's all-reduce): a rank clipping its own half would drift from one process."""
    single(demo_hdf, tmp_path / "one", max_gnorm=0.01)
    single(demo_hdf, tmp_path / "unclipped", max_gnorm=0)
    done = torchrun(demo_hdf, tmp_path / "two", "--max-gnorm=0.01")
    assert done.returncode == 0, done.stdout + done.stderr
    one, two = state(tmp_path / "one"), state(tmp_path / "two")
    assert_same_weights(one, two, **TOLERANCE)
    with pytest.raises(AssertionError):  # the limit did act: clipped != unclipped
        assert_same_weights(one, state(tmp_path / "unclipped"), **TOLERANCE)


@pytest.mark.slow
@needs_gloo
def test_a_failed_rank_ends_the_job_and_the_run_resumes_with_1_or_2_ranks(
    runs: dict[str, Path], demo_hdf: dict[str, Path], tmp_path: Path
) -> None:
    failed = tmp_path / "failed"
    # rank 1 raises in the middle of epoch 1 (its 5th step of 3 + 3)
    done = torchrun(demo_hdf, failed, env={"E2ESPK_TEST_FAULT": "1:5:raise"})
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "injected failure on rank 1 at step 5" in output
    assert re.search(r"rank\s*: 1 \(local_rank: 1\)", output), output[-3000:]
    assert state(failed)["epoch"] == 0  # epoch 0 checkpointed, epoch 1 lost
    shutil.copytree(failed, tmp_path / "failed_copy")

    done = torchrun(demo_hdf, failed, "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    assert_same_weights(state(runs["two"]), state(failed), rtol=0, atol=0)  # same ranks: exact

    resumed = single(demo_hdf, tmp_path / "failed_copy", resume=True)
    assert [entry["epoch"] for entry in resumed.history] == [0, 1]
    assert_same_weights(state(runs["two"]), state(tmp_path / "failed_copy"), **TOLERANCE)
    assert valid_eers(resumed.history) == valid_eers(state(runs["two"])["history"])


@pytest.mark.slow
@needs_gloo
def test_ranks_with_different_options_or_corpora_are_refused(
    demo_hdf: dict[str, Path], tmp_path: Path
) -> None:
    rank1 = f"--lr 0.002 --train-hdf-file {demo_hdf['valid']}"
    done = torchrun(demo_hdf, tmp_path / "run", env={"E2ESPK_TEST_RANK1_ARGS": rank1})
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "rank 1 differs from rank 0 in" in output
    assert "lr: 0.05 on rank 0, 0.002 on rank 1" in output
    assert "train corpus (ids, streams, frames):" in output
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.slow
@needs_gloo
def test_kill_9_of_a_rank_ends_the_job_in_bounded_time(
    demo_hdf: dict[str, Path], tmp_path: Path
) -> None:
    killed_at = tmp_path / "killed_at"
    env = {"E2ESPK_TEST_FAULT": "1:2:kill", "E2ESPK_TEST_KILLED_AT": str(killed_at)}
    done = torchrun(demo_hdf, tmp_path / "run", env=env)
    ended = time.time()
    output = done.stdout + done.stderr
    assert done.returncode != 0
    # torchrun sees the death within its 0.1 s monitor interval; rank 0's collective fails at
    # once (gloo: connection closed by peer); torchrun's grace before SIGKILL is 30 s
    assert ended - float(killed_at.read_text()) < 40
    assert re.search(r"rank\s*: 1 \(local_rank: 1\)", output), output[-3000:]
    assert "Signal 9 (SIGKILL)" in output


# ---- the pieces, in one process (no torchrun) ----


def test_rank_slices_cover_each_global_batch_in_order() -> None:
    offsets = np.array([0, 5, 9, 14, 20])  # 4 speakers
    batches = list(SpeakerBatchSampler(offsets, 8, 2, seed=1))
    slices = [
        list(RankSlice(SpeakerBatchSampler(offsets, 8, 2, seed=1), DistContext(rank, 2)))
        for rank in range(2)
    ]
    assert [a + b for a, b in zip(*slices, strict=True)] == batches
    assert all(len(part) == 4 for part in slices[0])  # 2 whole speakers per rank
    check_divisible(8, 2, 2)
    with pytest.raises(ConfigError, match="multiple of 4 so that every rank gets"):
        check_divisible(6, 2, 2)


def test_shards_of_rows_cover_them_once() -> None:
    bounds = [shard_bounds(10, DistContext(rank, 3)) for rank in range(3)]
    assert bounds == [(0, 3), (3, 7), (7, 10)]


def test_a_rank_uses_its_local_gpu() -> None:
    assert rank_device("cpu", 1, 2) == "cpu"
    assert rank_device("cuda", 1, 2) == "cuda:1"
    assert rank_device("cuda:1", 0, 1) == "cuda:1"  # one process: as given
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES"):
        rank_device("cuda:1", 0, 2)


def test_sync_batchnorm_keeps_the_tensors_and_is_batchnorm_in_one_process() -> None:
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Conv1d(3, 4, 3), torch.nn.BatchNorm1d(4))
    converted = copy.deepcopy(plain)
    weight = converted[1].weight
    converted = convert_sync_batchnorm(converted, torch.device("cpu"))
    assert isinstance(converted[1], GlooSyncBatchNorm) and converted[1].weight is weight
    assert converted.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(5, 3, 7)
    torch.testing.assert_close(converted(x), plain(x))  # no process group: plain BatchNorm
    torch.testing.assert_close(converted[1].running_var, plain[1].running_var)
