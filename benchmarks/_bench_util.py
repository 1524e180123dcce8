"""Shared helpers of ``demo_accuracy.py`` and ``bench_training.py``: tables, machine, load."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEMO_HDF = Path("/tmp/bench_demo/hdf")
LOG = logging.getLogger("bench")


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal (EER 0.0213 -> '2.1')."""
    return "n/a" if value is None else f"{100 * value:.1f}"


def load_average() -> float:
    """1-minute load average (2 cores: > 1.3 means someone else is using the CPUs)."""
    return os.getloadavg()[0]


def wait_for_quiet(max_load: float = 1.3, max_wait_s: float = 300.0, poll_s: float = 20.0) -> float:
    """Sleep until the 1-minute load average drops to ``max_load``; returns the load seen.

    Gives up after ``max_wait_s`` (the load is then recorded with the timings, so a polluted
    figure is at least labelled as such).
    """
    waited = 0.0
    while load_average() > max_load and waited < max_wait_s:
        LOG.info("load average %.2f > %.2f: waiting %.0f s", load_average(), max_load, poll_s)
        time.sleep(poll_s)
        waited += poll_s
    return load_average()


def environment() -> dict[str, Any]:
    """Versions and machine, stored with every result file."""
    import h5py
    import numpy as np
    import torch

    import e2espk

    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "numpy": np.__version__,
        "e2espk": e2espk.__version__,
        "git_commit": commit,
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
        "platform": platform.platform(),
        "argv": sys.argv,
    }


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
