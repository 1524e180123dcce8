#!/usr/bin/env bash
# Sets up everything from scratch and runs the whole test suite (what CI runs).
#   - installs the CPU torch wheel pin first (no multi-GB CUDA wheels), then e2espk[dev];
#   - starts the project's single-node Slurm cluster for the tests marked `slurm`
#     (they skip with a reason where it cannot start), and stops it afterwards;
#   - lint (ruff), types (mypy), then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

$PY -m pip install -q torch==2.13.0
$PY -m pip install -q -e ".[dev]"

$PY -m ruff check .
$PY -m mypy

if [ "${E2ESPK_SKIP_SLURM:-0}" != 1 ]; then
  # a real single-node Slurm for the tests marked `slurm`; stopped again however we exit
  trap 'bash scripts/slurm_local.sh down || true' EXIT
  bash scripts/slurm_local.sh up || echo "warning: local Slurm did not start; the slurm tests will skip"
fi
$PY -m pytest -q --durations=15 "$@"
