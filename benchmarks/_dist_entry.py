"""train.py as torchrun starts it, timing each epoch and the global batch's all-gather.

    python -m torch.distributed.run --nproc-per-node N benchmarks/_dist_entry.py OUT.json ARGS

Wraps (in this process only) the trainer's ``train_one_epoch`` and the gather of the global
batch's embeddings and labels, forward (``replicas.gather_batch``) and backward (the
all-gather's gradient all-reduce), and writes per epoch: train seconds, steps, and the seconds
spent in the gather on this rank, to ``OUT.json`` with ``{rank}`` replaced.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's e2espk

import e2espk.distributed.collectives as collectives
import e2espk.distributed.replicas as replicas
import e2espk.training.trainer as trainer
from e2espk.cli.train import main

GATHER = {"forward": 0.0, "backward": 0.0, "calls": 0}
EPOCHS: list[dict[str, Any]] = []


def timed_gather(original: Any) -> Any:
    def gather(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            GATHER["forward"] += time.perf_counter() - started
            GATHER["calls"] += 1

    return gather


def timed_backward(original: Any) -> Any:
    def backward(ctx: Any, grad: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(ctx, grad)
        finally:
            GATHER["backward"] += time.perf_counter() - started

    return staticmethod(backward)


def timed_epoch(original: Any) -> Any:
    def train_one_epoch(*args: Any, **kwargs: Any) -> Any:
        GATHER.update(forward=0.0, backward=0.0, calls=0)
        started = time.perf_counter()
        stats = original(*args, **kwargs)
        EPOCHS.append({"seconds": time.perf_counter() - started, "steps": stats["steps"], **GATHER})
        return stats

    return train_one_epoch


if __name__ == "__main__":
    out = sys.argv[1]
    replicas.gather_batch = timed_gather(replicas.gather_batch)  # type: ignore[assignment]
    collectives._AllGather.backward = timed_backward(collectives._AllGather.backward)  # type: ignore[method-assign]
    trainer.train_one_epoch = timed_epoch(trainer.train_one_epoch)  # type: ignore[assignment]
    status = main(sys.argv[2:])
    rank = os.environ.get("RANK", "0")
    Path(out.replace("{rank}", rank)).write_text(json.dumps({"status": status, "epochs": EPOCHS}))
    raise SystemExit(status)
