"""scripts/test.sh under CI: Slurm tests that cannot run fail the run instead of skipping.

The script runs for real with two stand-ins: ``PYTHON`` is a fake interpreter that records its
calls (so no pip, ruff, mypy or pytest runs), and ``E2ESPK_SLURM_SCRIPT`` a fake
``slurm_local.sh`` whose ``up`` fails or succeeds as the test says. No Slurm is started.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.slurm_support import REQUIRE_ENV, give_up

REPO = Path(__file__).resolve().parents[1]


def run_test_script(tmp_path: Path, up_status: int, ci: str | None) -> tuple[int, str, str]:
    calls = tmp_path / "calls"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "{REQUIRE_ENV}=${{{REQUIRE_ENV}:-}} $*" >> {calls}\n')
    slurm = tmp_path / "slurm_local.sh"
    slurm.write_text(f'echo "slurm $1" >> {calls}\n[ "$1" = down ] || exit {up_status}\n')
    python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", REQUIRE_ENV, "E2ESPK_SKIP_SLURM")}
    env |= {"PYTHON": str(python), "E2ESPK_SLURM_SCRIPT": str(slurm)} | ({"CI": ci} if ci else {})
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "test.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stderr, calls.read_text() if calls.exists() else ""


def test_ci_fails_when_slurm_does_not_start(tmp_path: Path) -> None:
    status, err, calls = run_test_script(tmp_path, up_status=1, ci="true")
    assert status != 0
    assert (
        "error: local Slurm did not start" in err and "with CI=true the slurm tests must run" in err
    )
    assert "-m pytest" not in calls and "slurm down" in calls  # stopped, never reported as a pass


def test_outside_ci_the_slurm_tests_skip_with_a_warning(tmp_path: Path) -> None:
    status, err, calls = run_test_script(tmp_path, up_status=1, ci=None)
    assert status == 0 and "warning: local Slurm did not start" in err
    assert f"{REQUIRE_ENV}= -m pytest" in calls


def test_ci_with_slurm_up_requires_the_slurm_tests(tmp_path: Path) -> None:
    status, _, calls = run_test_script(tmp_path, up_status=0, ci="true")
    assert status == 0 and f"{REQUIRE_ENV}=1 -m pytest" in calls


def test_an_unusable_cluster_fails_where_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception):
        give_up("down")
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="the slurm tests must run"):
        give_up("down")
