"""The project's local Slurm cluster, for tests marked ``@pytest.mark.slurm``.

The cluster is the real thing (munged, MariaDB + slurmdbd, slurmctld, slurmd on localhost),
started by ``scripts/slurm_local.sh up``. Tests use it through the ``slurm_cluster`` fixture::

    from tests.slurm_support import slurm_cluster  # noqa: F401
    from tests.slurm_support import slurm_executor

    pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

(``usefixtures`` rather than a ``slurm_cluster`` argument, which ruff reports as F811.)
The fixture never stops the cluster, not even one it started: CI stops it with
``scripts/slurm_local.sh down`` in a trap, and on a workstation a running cluster makes the
next test run fast.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import submitit

REPO_ROOT = Path(__file__).resolve().parents[1]
UP_SCRIPT = REPO_ROOT / "scripts" / "slurm_local.sh"
START_ENV = "E2ESPK_START_SLURM"  # "1": the fixture may run `slurm_local.sh up` itself
REQUIRE_ENV = "E2ESPK_REQUIRE_SLURM"  # "1" (scripts/test.sh under CI): unusable is a failure
USABLE_NODE_STATES = ("idle", "mixed", "allocated", "completing")


@dataclasses.dataclass(frozen=True)
class SlurmCluster:
    """What tests may rely on about the running cluster."""

    node: str
    cpus: int  # CPUs Slurm schedules on the node; concurrency tests need 2


def _run(cmd: list[str], timeout_s: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)


def _one_line(output: str) -> str:
    """Slurm's multi-line complaints (banners of asterisks included) as one short line."""
    lines = [line.strip() for line in output.splitlines() if line.strip().strip("*")]
    return " / ".join(lines)[:400] or "(no output)"


def _state_dir_conf() -> Path:
    return Path(os.environ.get("E2ESPK_SLURM_DIR", "/tmp/e2espk-slurm")) / "etc" / "slurm.conf"


def probe_cluster() -> tuple[SlurmCluster | None, str]:
    """Check that the cluster answers the way submitit needs it to.

    submitit submits with sbatch but learns job states only from sacct, so a cluster whose
    accounting is down makes cancelled jobs hang forever; check both.

    Returns:
        ``(cluster, "")`` when usable, else ``(None, what failed)``.
    """
    if not all(shutil.which(tool) for tool in ("scontrol", "sinfo", "sacct")):
        return None, "scontrol/sinfo/sacct not on PATH (slurm-client not installed)"
    try:
        # scontrol ping answers at once; sinfo retries for ~10 s when slurmctld is down.
        ping = _run(["scontrol", "ping"])
        if " is UP" not in ping.stdout:
            return None, f"`scontrol ping`: {_one_line(ping.stdout + ping.stderr)}"
        sinfo = _run(["sinfo", "-h", "-N", "-o", "%N %T %c"])
        if sinfo.returncode != 0:
            return None, f"`sinfo` failed: {_one_line(sinfo.stderr or sinfo.stdout)}"
        nodes = [line.split() for line in sinfo.stdout.splitlines() if line.strip()]
        usable = [n for n in nodes if n[1].rstrip("*~#") in USABLE_NODE_STATES]
        if not usable:
            return None, f"no usable node in `sinfo` (got {sinfo.stdout.strip()!r})"
        sacct = _run(["sacct", "-n", "-j", "1"])
        if sacct.returncode != 0:
            return None, f"`sacct -j 1` failed: {_one_line(sacct.stderr or sacct.stdout)}"
    except subprocess.TimeoutExpired as exc:
        return None, f"`{' '.join(map(str, exc.cmd))}` did not answer in {exc.timeout} s"
    node, _, cpus = usable[0]
    return SlurmCluster(node=node, cpus=int(cpus)), ""


def _start_cluster() -> str:
    """Run ``slurm_local.sh up``; return "" or why it failed."""
    try:
        proc = _run(["bash", str(UP_SCRIPT), "up"], timeout_s=600)
    except subprocess.TimeoutExpired:
        return f"`{UP_SCRIPT} up` did not finish in 600 s"
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        return f"`{UP_SCRIPT} up` exited {proc.returncode}:\n{tail}"
    return ""


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A usable local Slurm cluster, or a skip that says what is wrong (a failure with
    ``E2ESPK_REQUIRE_SLURM=1``, which scripts/test.sh sets under CI).

    Set ``E2ESPK_START_SLURM=1`` to let the fixture start the cluster when it is not up.
    """
    with pytest.MonkeyPatch.context() as mp:
        _use_our_conf(mp)
        cluster, problem = probe_cluster()
        if cluster is None and os.environ.get(START_ENV) == "1":
            failure = _start_cluster()
            _use_our_conf(mp)
            cluster, problem = probe_cluster()
            problem = failure or problem
        if cluster is None:
            hint = f"run `bash {UP_SCRIPT.relative_to(REPO_ROOT)} up` or set {START_ENV}=1"
            if os.environ.get(START_ENV) == "1":
                hint = f"logs in {_state_dir_conf().parent.parent / 'log'}"
            give_up(f"local Slurm cluster unusable: {problem} ({hint})")
        yield cluster


def give_up(message: str) -> None:
    """Skip the Slurm tests, saying why; fail them where they are required (CI)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message}; {REQUIRE_ENV}=1: the slurm tests must run", pytrace=False)
    pytest.skip(message)


def _use_our_conf(mp: pytest.MonkeyPatch) -> None:
    """Point clients (and, through the exported environment, jobs) at our config if needed.

    Clients find it through /etc/slurm/slurm.conf, a symlink made by ``up``; ``up`` leaves that
    path alone when it belongs to someone else, and then SLURM_CONF has to say where ours is.
    """
    conf = _state_dir_conf()
    if "SLURM_CONF" in os.environ or not conf.exists():
        return
    if Path("/etc/slurm/slurm.conf").resolve() != conf.resolve():
        mp.setenv("SLURM_CONF", str(conf))


def slurm_executor(folder: str | Path, **params: Any) -> submitit.AutoExecutor:
    """A submitit executor on the real Slurm cluster, with test-friendly defaults.

    ``cluster="slurm"`` is explicit: AutoExecutor picks Slurm whenever ``srun`` is on PATH,
    but tests must not depend on that. Each test gives its own folder (e.g. ``tmp_path``),
    because a folder reused across clusters can return another job's old result pickle.

    Args:
        folder: submitit's log/pickle folder for this test.
        **params: ``update_parameters`` overrides, e.g. ``slurm_additional_parameters={...}``
            for sbatch flags submitit has no name for.
    """
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    settings: dict[str, Any] = {
        "timeout_min": 5,  # hung jobs die quickly; tests interrupt jobs, never wait for limits
        "cpus_per_task": 1,  # 2 jobs at a time on the 2-core node
        # No --mem: with CR_Core the node's memory is not a consumable, so jobs never queue on it.
        "slurm_additional_parameters": {},
        **params,
    }
    executor.update_parameters(**settings)
    return executor


SIGTERM_SEEN = "Bypassing signal SIGTERM"  # submitit's log line when a task ignores SIGTERM


def preempt(job_id: str, task_logs: list[Path], timeout_s: float = 60) -> None:
    """What Slurm pre-emption sends (submitit's ``_interrupt``): SIGTERM, then USR2, which
    makes submitit checkpoint the job and run ``scontrol requeue``.

    ``_interrupt`` sends both at once, and under load the SIGTERM can land after USR2 and kill
    the ``scontrol requeue`` that the USR2 handler started. So USR2 goes only once every
    task's log (``task_logs``, their stderr) shows submitit has ignored the SIGTERM.
    """
    subprocess.run(["scancel", job_id, "--signal", "SIGTERM"], check=True)
    deadline = time.monotonic() + timeout_s
    while not all(
        log.exists() and SIGTERM_SEEN in log.read_text(errors="replace") for log in task_logs
    ):
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id}: no task logged {SIGTERM_SEEN!r} in {timeout_s} s")
        time.sleep(0.1)
    subprocess.run(["scancel", job_id, "--signal", "USR2"], check=True)
