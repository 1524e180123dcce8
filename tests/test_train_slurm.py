"""train.py's ``--slurm-*`` submission (submitit) and distributed search trials.

The tests marked ``slurm`` submit real jobs of 2 tasks (2 gloo ranks on the local cluster's 2
CPUs) through ``train.py`` itself: one runs to its end and its ``final.pt`` is scored by
eval.py; one is preempted after its first checkpoint (submitit's signal path: SIGTERM, then
USR2 -> ``TrainingJob.checkpoint`` + requeue) and must end with the weights of the
uninterrupted run, bit for bit (same ranks, CPU: the resume contract of trainer.py); one loses
rank 1 to kill -9 and must fail at once naming it; one fails in every rank (--slurm-wait's exit
status and report); and a search runs a trial of 2 ranks. About 10-20 s per job on the 2-core
VM, 10-30 s more for the requeue (cred_expire and Slurm's requeue delay).
The others test the flags, the time formats and the failure reports without a cluster, and a
2-rank search trial as local processes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import submitit
import torch
from submitit.core.utils import JobPaths, cloudpickle_dump

from e2espk.cli.eval import main as eval_main
from e2espk.cli.hp_search import ParallelOptions, trial_ranks
from e2espk.cli.train import main as train_main
from e2espk.cluster.executors import ClusterOptions
from e2espk.cluster.ranks import RUN_STARTS
from e2espk.cluster.slurm_checks import TRAIN_FLAGS, check_resources, parse_sinfo
from e2espk.cluster.submission import SlurmSubmitOptions, slurm_time_minutes
from e2espk.cluster.tasks import JobFailedError, MultiTaskJob, failure_message, task_ends
from e2espk.cluster.training_job import TrainingJob
from e2espk.config import config_to_dict, from_flat
from e2espk.errors import ConfigError
from e2espk.search.constraints import CorpusLimits, fit_ranges
from e2espk.training.config import TrainConfig
from tests.conftest import TINY_TRAIN
from tests.slurm_support import REPO_ROOT, preempt, slurm_cluster  # noqa: F401
from tests.test_eval import valid_pairs, write_kaldi_trials

OPTIONS = {**TINY_TRAIN, "backbone": "ecapa_tdnn_tiny", "epochs": 6, "device": "cpu",
           "average_last": 2, "seed": 5}  # fmt: skip


def train_args(demo: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    args = [f"--train-hdf-file={demo['train']}", f"--valid-hdf-file={demo['valid']}",
            f"--checkpoint-path={run_dir}", "--sync-bn", "--slurm-tasks-per-node", "2",
            "--slurm-time", "5"]  # fmt: skip
    for key, value in OPTIONS.items():
        flag = "--" + key.replace("_", "-")
        args += (
            [flag if value else "--no-" + flag[2:]]
            if isinstance(value, bool)
            else [flag, str(value)]
        )
    return [*args, *extra]


def submitted_job(printed: str, run_dir: Path, tasks: int = 2) -> MultiTaskJob:
    found = re.search(r"submitted Slurm job (\d+): (\d+) rank\(s\)", printed)
    assert found and int(found[2]) == tasks, printed
    folder = run_dir / "slurm" / "%j"
    return MultiTaskJob(submitit.SlurmJob(folder, found[1], tasks=tuple(range(tasks))))


def weights(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


# ---------------------------------------------------------------- on the local Slurm cluster
@pytest.fixture(scope="module")
def finished(
    request: pytest.FixtureRequest, demo_hdf: dict[str, Path], tmp_path_factory: Any
) -> tuple[Path, str]:
    """A 2-task job submitted by train.py --slurm-wait, run to its end (rc, output checked)."""
    request.getfixturevalue("slurm_cluster")
    run_dir = tmp_path_factory.mktemp("slurm_train") / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = train_main(train_args(demo_hdf, run_dir, "--slurm-wait"))
    printed = out.getvalue()
    assert status == 0, printed[-3000:]
    return run_dir, printed


@pytest.mark.slurm
def test_two_task_job_from_train_py_trains_and_final_pt_evaluates(
    finished: tuple[Path, str], demo_hdf: dict[str, Path], tmp_path: Path, capsys: Any
) -> None:
    run_dir, printed = finished
    job = submitted_job(printed, run_dir)
    for task in (0, 1):
        assert job.job.task(task).paths.stderr.exists()  # the log paths printed exist
    assert f"job logs (rank 0): {job.job.task(0).paths.stdout}" in printed
    assert re.search(rf"job {job.job_id}: (RUNNING|COMPLETED)", printed)
    assert "2 ranks (gloo): global batch 4, 2 per rank" in printed  # the run log, followed
    assert "final.pt = averaged.pt" in printed
    summary = job.result()
    assert summary["code"] == str(REPO_ROOT / "e2espk"), "the job ran this checkout's e2espk"
    assert summary["restarts"] == 0 and summary["epochs_run"] == 6
    history = json.loads((run_dir / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == list(range(6))

    trials = write_kaldi_trials(tmp_path / "trials", *valid_pairs(demo_hdf))
    out = tmp_path / "eval"
    args = ["--cp-path", str(run_dir / "final.pt"), "--test-hdf-file", str(demo_hdf["valid"]),
            "--trials-path", str(trials), "--out-path", str(out), "--no-progress"]  # fmt: skip
    assert eval_main(args) == 0
    assert "28 trials" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert 0 <= results["metrics"]["fused"]["eer"] <= 1


@pytest.mark.slurm
def test_preempted_job_is_requeued_and_resumes_to_the_same_weights(
    finished: tuple[Path, str], demo_hdf: dict[str, Path], tmp_path: Path, capsys: Any
) -> None:
    run_dir = tmp_path / "run"
    assert train_main(train_args(demo_hdf, run_dir)) == 0  # returns once submitted
    job = submitted_job(capsys.readouterr().out, run_dir)
    # a liveness bound, not a timing claim: a loaded machine (CI beside other jobs) can take
    # minutes for the first epoch of a 2-rank job; a job that ends first fails here
    deadline = time.time() + 600
    while not (run_dir / "last.pt").exists() and not job.job.done() and time.time() < deadline:
        time.sleep(0.2)
    assert (run_dir / "last.pt").exists(), "the job checkpointed its first epoch"
    assert not job.job.done(), "the job was still running when it was preempted"
    logs = [job.job.task(rank).paths.stderr for rank in range(2)]
    preempt(job.job_id, logs)  # SIGTERM, then USR2 -> checkpoint() and requeue
    summary = job.result()
    assert summary["restarts"] == 1, "requeued once"
    history = json.loads((run_dir / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == list(range(6)), "resumed: each epoch once"
    assert "requeued (1 of at most 3): resumes from last.pt" in (run_dir / "train.log").read_text()
    uninterrupted, resumed = weights(finished[0] / "last.pt"), weights(run_dir / "last.pt")
    for part in ("model", "loss"):
        for key, value in uninterrupted[part].items():
            torch.testing.assert_close(resumed[part][key], value, rtol=0, atol=0, msg=key)
    assert (
        resumed["history"][-1]["valid/fused/eer"] == uninterrupted["history"][-1]["valid/fused/eer"]
    )


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_failed_job_ends_slurm_wait_with_the_task_and_its_log(
    demo_hdf: dict[str, Path], tmp_path: Path, capsys: Any
) -> None:
    run_dir = tmp_path / "run"
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")  # exists (checked at submission), fails in the job
    assert train_main(train_args(demo_hdf, run_dir, "--init-from", str(bad), "--slurm-wait")) == 1
    printed = capsys.readouterr()
    job = submitted_job(printed.out, run_dir)
    error = printed.err.strip().splitlines()[-1]
    started = rf"error: Slurm job {job.job_id} failed( \(FAILED\))?: task 0 \(rank 0\) failed: "
    assert re.match(started, error), error
    assert str(bad) in error and f"its log: {job.job.task(0).paths.stderr}" in error


def task_pid(job_id: str, task: int) -> int | None:
    """The pid of a job's task on this node (its environment names the job and the task)."""
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            variables = dict(
                item.split("=", 1) for item in environ.read_text().split("\0") if "=" in item
            )
        except OSError:
            continue
        if (
            variables.get("SLURM_JOB_ID") == job_id
            and variables.get("SLURM_PROCID") == str(task)
            and variables.get("SUBMITIT_EXECUTOR") == "slurm"
        ):
            return int(environ.parent.name)
    return None


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_kill_9_of_a_rank_ends_the_job_naming_it(
    demo_hdf: dict[str, Path], tmp_path: Path, capsys: Any
) -> None:
    run_dir = tmp_path / "run"
    assert train_main(train_args(demo_hdf, run_dir, "--epochs", "30")) == 0
    job = submitted_job(capsys.readouterr().out, run_dir)
    deadline = time.time() + 120
    while not (run_dir / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    pid = task_pid(job.job_id, 1)
    assert pid is not None, "rank 1 runs on this node"
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    with pytest.raises(JobFailedError) as failed:
        job.result()
    # srun ends the job at once (--kill-on-bad-exit); the rest is sacct catching up
    print(f"kill -9 of rank 1 -> job failure reported: {time.time() - killed_at:.1f} s")
    assert time.time() - killed_at < 60
    assert "task 1 (rank 1) failed: srun: Killed" in str(failed.value), failed.value
    assert "task(s) 0 stopped with it" in str(failed.value)


def search_of_one_two_rank_trial(demo: dict[str, Path], search_dir: Path, cluster: str) -> str:
    """A search of one trial of 2 CPU ranks; returns the trial's train.log."""
    from e2espk.cli.hp_search import main_parallel
    from tests.test_search import search_args

    args = search_args(demo, search_dir, 1, "--search-params", "lr", "--tasks-per-trial", "2",
                       "--cluster", cluster, "--hp-workers", "1", "--poll-seconds", "0.5",
                       "--timeout-min", "5", "--batch-size", "4", "--utts-per-speaker", "2")  # fmt: skip
    assert main_parallel(args) == 0
    record = json.loads((search_dir / "trials.jsonl").read_text().splitlines()[0])
    assert record["status"] == "ok", record
    return (search_dir / "trials" / "trial_000" / "train.log").read_text()


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_search_trial_of_two_ranks_on_slurm(demo_hdf: dict[str, Path], tmp_path: Path) -> None:
    log = search_of_one_two_rank_trial(demo_hdf, tmp_path / "s", "slurm")
    assert "2 ranks (gloo): global batch 4, 2 per rank" in log


@pytest.mark.slow
def test_search_trial_of_two_ranks_as_local_processes(
    demo_hdf: dict[str, Path], tmp_path: Path
) -> None:
    log = search_of_one_two_rank_trial(demo_hdf, tmp_path / "s", "local")
    assert "2 ranks (gloo): global batch 4, 2 per rank" in log


# ---------------------------------------------------------------- without a cluster
def test_slurm_time_formats() -> None:
    assert slurm_time_minutes("90") == 90
    assert slurm_time_minutes("24:00:00") == 1440
    assert slurm_time_minutes("1:30") == 2  # MM:SS, rounded up
    assert slurm_time_minutes("2-00:00:00") == 2880 and slurm_time_minutes("1-2") == 1560
    for bad in ("1h", "", "0", "1:2:3:4"):
        with pytest.raises(ConfigError, match="--slurm-time"):
            slurm_time_minutes(bad)


def test_slurm_flags_become_the_job_resources() -> None:
    assert not SlurmSubmitOptions().requested() and SlurmSubmitOptions(slurm_wait=True).requested()
    gpus = SlurmSubmitOptions(slurm_nodes=2, slurm_gpus_per_node=4, slurm_time="24:00:00")
    cluster = gpus.cluster_options("vox")
    assert (cluster.ranks, cluster.tasks_per_node, cluster.timeout_min) == (8, 4, 1440)
    assert cluster.name == "e2espk-train-vox" and cluster.flags is TRAIN_FLAGS
    cpus = SlurmSubmitOptions(slurm_tasks_per_node=2).cluster_options("x")
    assert (cpus.ranks, cpus.gpus_per_node) == (2, 0)
    with pytest.raises(ConfigError, match="--slurm-tasks-per-node 2 with --slurm-gpus-per-node 4"):
        SlurmSubmitOptions(slurm_gpus_per_node=4, slurm_tasks_per_node=2).cluster_options("x")
    with pytest.raises(ConfigError, match="training job: nodes must be >= 1, got 0"):
        SlurmSubmitOptions(slurm_nodes=0).cluster_options("x")
    with pytest.raises(ConfigError, match="--cluster local runs on this machine"):
        ClusterOptions(cluster="local", nodes=2).validate()
    with pytest.raises(ConfigError, match=r"^--slurm-partition gpu: this Slurm cluster has no"):
        check_resources(parse_sinfo("debug*|(null)|up\n"), "gpu", 0, TRAIN_FLAGS)


def test_train_py_refuses_bad_slurm_runs_before_submitting(
    demo_hdf: dict[str, Path], tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    assert train_main(train_args(demo_hdf, run_dir, "--slurm-tasks-per-node", "3")) == 2
    assert "--batch-size 4 is the global batch; with 3 ranks" in capsys.readouterr().err
    assert train_main(train_args(demo_hdf, run_dir, "--slurm-time", "soon")) == 2
    assert "--slurm-time 'soon': use Slurm's formats" in capsys.readouterr().err
    missing = train_args(demo_hdf, run_dir, "--valid-trials", str(tmp_path / "none.txt"))
    assert train_main(missing) == 2
    assert f"{tmp_path / 'none.txt'}: --valid-trials: no such file" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert train_main(train_args(demo_hdf, run_dir)) == 2
    assert "not under torchrun" in capsys.readouterr().err
    assert not run_dir.exists(), "nothing submitted, nothing written"


def test_train_py_help_lists_the_slurm_flags(capsys: Any) -> None:
    with pytest.raises(SystemExit) as exit_:
        train_main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "--sync-bn" in text and "--slurm-gpus-per-node" in text and "--slurm-wait" in text


def test_requeue_resumes_the_run_until_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    job = TrainingJob(max_requeues=2)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    delayed = job.checkpoint({"checkpoint_path": "run", "resume": False})
    assert delayed is not None and delayed.args == ({"checkpoint_path": "run", "resume": True},)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert job.checkpoint({"checkpoint_path": "run"}) is None  # submitit: "not requeued"


def test_search_trial_ranks_and_batch_sizes() -> None:
    assert trial_ranks(ParallelOptions()) == (1, 1, 0)
    assert trial_ranks(from_flat(ParallelOptions, {"gpus_per_node": 2})) == (
        1,
        1,
        2,
    )  # one process, 2 GPUs
    assert trial_ranks(ParallelOptions(gpus_per_trial=8, nodes_per_trial=2)) == (2, 4, 4)
    assert trial_ranks(ParallelOptions(tasks_per_trial=2)) == (1, 2, 0)
    for bad, message in (
        (
            {"gpus_per_trial": 3, "nodes_per_trial": 2},
            "--gpus-per-trial 3 over --nodes-per-trial 2",
        ),
        ({"gpus_per_trial": 2, "gpus_per_node": 1}, "give one"),
        ({"gpus_per_trial": 2, "tasks_per_trial": 4}, "one rank per GPU"),
    ):
        with pytest.raises(ConfigError, match=message):
            trial_ranks(from_flat(ParallelOptions, bad))
    limits = CorpusLimits("t.hdf", 100, frozenset({"ptm", "mfbe", "mfcc", "pitch"}), False, 4)
    base = config_to_dict(TrainConfig()) | {"utts_per_speaker": 2}
    searched = {"batch_size": {"choices": [16, 20, 32]}}
    fitted, _ = fit_ranges(searched, base, limits)
    assert fitted["batch_size"]["choices"] == [16, 32]  # 20 does not split over 4 ranks x 2
    with pytest.raises(ConfigError, match="does not split over 4 ranks"):
        fit_ranges({}, base | {"batch_size": 12}, limits)


def test_a_failed_job_names_the_rank_that_failed_and_its_log(tmp_path: Path) -> None:
    job = submitit.SlurmJob(tmp_path / "%j", "77", tasks=(0, 1, 2))
    traces = {
        0: "Traceback ...\ntorch.distributed.DistBackendError: Connection closed by peer [127.0.0.1]:1",
        1: "Traceback ...\nRuntimeError: injected failure on rank 1 at step 5",
    }  # task 2: no result (killed with the job)
    for task, trace in traces.items():
        paths = JobPaths(tmp_path / "%j", "77", task)
        paths.folder.mkdir(parents=True, exist_ok=True)
        cloudpickle_dump(("error", trace), paths.result_pickle)
    ends = task_ends(job)
    assert [(end.task, end.outcome, end.collateral) for end in ends] == [
        (0, "error", True), (1, "error", False), (2, "none", True)
    ]  # fmt: skip
    message = failure_message("77", "FAILED", ends)
    assert message.startswith(
        "Slurm job 77 failed (FAILED): task 1 (rank 1) failed: RuntimeError: injected failure on rank 1 "
        f"at step 5; its log: {tmp_path / '77' / '77_1_log.err'}; task(s) 0, 2 stopped with it"
    ), message
    assert issubclass(JobFailedError, Exception)

    killed = submitit.SlurmJob(tmp_path / "%j", "78", tasks=(0, 1))
    batch_log = JobPaths(tmp_path / "%j", "78", 0).stderr
    batch_log.parent.mkdir(parents=True)
    batch_log.write_text(  # the first run was requeued; the second lost task 1
        f"srun: error: vm: task 0: Exited with exit code 255\n{RUN_STARTS} (restart 1)\n"
        "srun: error: vm: task 1: Killed\nsrun: launch/slurm: _step_signal: Terminating "
        "StepId=78.0\nsrun: error: vm: task 0: Killed\n"
    )
    message = failure_message("78", "FAILED", task_ends(killed))
    assert "task 1 (rank 1) failed: srun: Killed" in message
    assert "task(s) 0 stopped with it" in message
