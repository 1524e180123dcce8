"""train.py as torchrun starts it, with faults the distributed tests inject into one rank.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/torchrun_entry.py ARGS

Environment (all optional, read on every rank):
    E2ESPK_TEST_RANK<r>_ARGS: extra train.py arguments for rank r only (a mismatched config);
    E2ESPK_TEST_FAULT: ``RANK:STEP:raise`` or ``RANK:STEP:kill``: at its STEP-th training step
    (1-based, counted in this process) rank RANK raises a RuntimeError, or SIGKILLs itself
    after writing the time to E2ESPK_TEST_KILLED_AT (a file).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from e2espk.cli.train import main
from e2espk.losses.joint import JointLoss


def inject_fault(rank: int, spec: str) -> None:
    target, step, action = spec.split(":")
    if int(target) != rank:
        return
    forward = JointLoss.forward
    calls = [0]

    def faulty(self: JointLoss, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == int(step):
            if action == "kill":
                Path(os.environ["E2ESPK_TEST_KILLED_AT"]).write_text(str(time.time()))
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"injected failure on rank {rank} at step {step}")
        return forward(self, *args, **kwargs)

    JointLoss.forward = faulty  # type: ignore[method-assign]


if __name__ == "__main__":
    rank = int(os.environ["RANK"])
    argv = sys.argv[1:] + os.environ.get(f"E2ESPK_TEST_RANK{rank}_ARGS", "").split()
    if os.environ.get("E2ESPK_TEST_FAULT"):
        inject_fault(rank, os.environ["E2ESPK_TEST_FAULT"])
    raise SystemExit(main(argv))
