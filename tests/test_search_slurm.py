"""The parallel search on the project's real local Slurm cluster, through submitit's Slurm executor.

Covers what a cluster does to a search: a trial that raises, a job that is cancelled
(scancel), and the search process itself killed (SIGKILL) and started again, which must pick up
the jobs still running rather than submit them again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from e2espk.search.driver import STATE_FILE
from tests.slurm_support import REPO_ROOT, preempt, slurm_cluster  # noqa: F401
from tests.test_search import search_args

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


def slurm_search_args(
    demo_hdf: dict[str, Path], search_dir: Path, budget: int, *extra: str
) -> list[str]:
    return [
        sys.executable,
        str(REPO_ROOT / "hp_search_slurm.py"),
        *search_args(
            demo_hdf,
            search_dir,
            budget,
            "--cluster",
            "slurm",
            "--hp-workers",
            "2",
            "--poll-seconds",
            "0.5",
            "--timeout-min",
            "5",
            *extra,
        ),
    ]


def records(search_dir: Path) -> list[dict]:
    path = search_dir / "trials.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def running_jobs() -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-t", "RUNNING", "-n", "e2espk-trial", "-o", "%i"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return out.split()


def test_failing_and_cancelled_trials_are_recorded_and_the_search_goes_on(
    demo_hdf: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "space.yaml").write_text(
        yaml.safe_dump({"attention_heads": {"choices": [4, 3]}, "lr": {"log": [1e-3, 1e-2]}})
    )
    search_dir = tmp_path / "s"
    cancelled: list[str] = []

    def cancel_first_running_job() -> None:
        deadline = time.time() + 60
        while time.time() < deadline and not cancelled:
            jobs = running_jobs()
            if jobs:
                subprocess.run(["scancel", jobs[0]], check=True)
                cancelled.append(jobs[0])
            time.sleep(0.2)

    canceller = threading.Thread(target=cancel_first_running_job)
    canceller.start()
    started = time.time()
    args = slurm_search_args(demo_hdf, search_dir, 5, "--space-file", str(tmp_path / "space.yaml"), "--search-params", "attention_heads", "lr",
                             "--fusion", "cross_attention", "--search-optimizer", "RandomSearch", "--search-seed", "3")  # fmt: skip
    done = subprocess.run(
        args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    canceller.join()
    print(f"search of 5 trials on Slurm: {time.time() - started:.1f} s")
    assert done.returncode == 0, done.stderr[-3000:]
    found = records(search_dir)
    assert sorted(r["trial"] for r in found) == [0, 1, 2, 3, 4]
    by_job = {r["job_id"]: r for r in found}
    assert cancelled and by_job[cancelled[0]]["status"] == "cancelled", [
        (r["job_id"], r["status"]) for r in found
    ]
    failed = [r for r in found if r["hyperparameters"]["attention_heads"] == 3]
    assert failed and all(
        r["status"] == "failed" and "attention_heads" in r["error"] for r in failed
    )
    assert any(r["status"] == "ok" for r in found) and "retrain it:" in done.stdout
    assert all(job.isdigit() for job in by_job), "every trial ran as a Slurm job"


def test_killed_search_picks_up_running_jobs(demo_hdf: dict[str, Path], tmp_path: Path) -> None:
    search_dir = tmp_path / "s"
    args = slurm_search_args(demo_hdf, search_dir, 3, "--search-params", "lr", "--epochs", "3")
    first = subprocess.Popen(
        args,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    in_flight: dict[str, dict] = {}
    while time.time() < deadline:
        state_file = search_dir / STATE_FILE
        if state_file.exists():
            in_flight = json.loads(state_file.read_text())["pending"]
            if len(in_flight) == 2 and all(
                job in running_jobs() for job in (p["job_id"] for p in in_flight.values())
            ):
                break
        time.sleep(0.2)
    assert len(in_flight) == 2, "two trials were submitted and running"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    jobs_before = {int(trial): p["job_id"] for trial, p in in_flight.items()}
    assert set(jobs_before.values()) <= set(running_jobs()), "the jobs outlive the killed search"

    resumed = subprocess.run(
        args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    found = records(search_dir)
    assert sorted(r["trial"] for r in found) == [0, 1, 2]
    for trial, job_id in jobs_before.items():
        record = next(r for r in found if r["trial"] == trial)
        assert record["job_id"] == job_id and record["status"] == "ok", "picked up, not resubmitted"
    submitted = [p for p in (search_dir / "jobs").iterdir() if p.name.isdigit()]
    assert len(submitted) == 3, (
        f"exactly one Slurm job per trial, got {sorted(p.name for p in submitted)}"
    )


def test_preempted_trial_is_requeued_and_resumes_its_training(
    demo_hdf: dict[str, Path], tmp_path: Path
) -> None:
    from e2espk.cluster.executors import ClusterOptions, submitit_executor
    from e2espk.config import config_to_dict
    from e2espk.search.objective import TrialRunner
    from e2espk.training.config import TrainConfig
    from tests.conftest import TINY_TRAIN

    run_dir = tmp_path / "trial"
    config = TrainConfig.from_flat(
        dict(
            train_hdf_file=str(demo_hdf["train"]),
            valid_hdf_file=str(demo_hdf["valid"]),
            checkpoint_path=str(run_dir),
            backbone="ecapa_tdnn_tiny",
            epochs=6,
            **TINY_TRAIN,
        )
    )
    executor = submitit_executor(tmp_path / "jobs", ClusterOptions(cluster="slurm", timeout_min=5))
    job = executor.submit(TrialRunner(), config_to_dict(config), "fused/eer")
    deadline = time.time() + 120
    while not (run_dir / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (run_dir / "last.pt").exists(), "the trial checkpointed its first epoch"
    preempt(job.job_id, [job.paths.stderr])  # submitit checkpoints and requeues the job
    outcome = job.result()
    assert outcome.restarts >= 1, "the job was requeued"
    assert outcome.epochs_run == 6
    history = json.loads((run_dir / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == list(range(6)), (
        "resumed, not restarted: each epoch once"
    )
