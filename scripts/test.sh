#!/usr/bin/env bash
# Sets up everything from scratch and runs the whole test suite (what CI runs).
#   - installs the CPU torch wheel pin first (no multi-GB CUDA wheels), then e2espk[dev];
#   - starts the project's single-node Slurm cluster for the tests marked `slurm`, and stops
#     it afterwards; where it cannot start they skip with a reason, except under CI=true,
#     where the run fails instead (CI must not report skipped Slurm tests as a pass;
#     E2ESPK_SKIP_SLURM=1 leaves them out on purpose);
#   - lint (ruff), types (mypy), then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

$PY -m pip install -q torch==2.13.0
$PY -m pip install -q -e ".[dev]"

$PY -m ruff check .
$PY -m mypy

# CI=true|1|yes (GitHub Actions, GitLab CI and others set it): what the run claims to test, it tests
case "${CI:-}" in true | TRUE | True | 1 | yes) IN_CI=1 ;; *) IN_CI=0 ;; esac
SLURM_SCRIPT=${E2ESPK_SLURM_SCRIPT:-scripts/slurm_local.sh} # tests substitute a fake one

if [ "${E2ESPK_SKIP_SLURM:-0}" != 1 ]; then
  # a real single-node Slurm for the tests marked `slurm`; stopped again however we exit
  trap 'bash "$SLURM_SCRIPT" down || true' EXIT
  if ! bash "$SLURM_SCRIPT" up; then
    if [ "$IN_CI" = 1 ]; then
      echo "error: local Slurm did not start (bash $SLURM_SCRIPT up failed, output above); with CI=true the slurm tests must run, not skip. Set E2ESPK_SKIP_SLURM=1 to leave them out on purpose." >&2
      exit 1
    fi
    echo "warning: local Slurm did not start; the slurm tests will skip" >&2
  elif [ "$IN_CI" = 1 ]; then
    export E2ESPK_REQUIRE_SLURM=1 # the slurm fixture fails rather than skips if it is unusable
  fi
fi
$PY -m pytest -q --durations=15 "$@"
