"""The process group of a training run, set up from the variables torchrun exports.

``torchrun --nproc-per-node N train.py ...`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`session` joins them with
``init_method="env://"``: NCCL with one CUDA device per local rank, gloo on the CPU. Without
those variables (or with ``WORLD_SIZE=1``) there is no process group: a plain ``python
train.py`` runs exactly as it always did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from e2espk.distributed.options import DistributedOptions
from e2espk.errors import ConfigError

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DistContext:
    """Where this process stands in the run: its rank among ``world_size`` and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "auto"  # the --device value this rank uses (cuda:LOCAL_RANK under NCCL)
    backend: str | None = None  # None: single process, no process group

    @property
    def active(self) -> bool:
        """Several ranks: collectives, DDP and rank-0-only writing apply."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one rank that writes logs, TensorBoard, history and checkpoints."""
        return self.rank == 0


def env_rank() -> int:
    """This process's rank as torchrun exported it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_device(name: str, local_rank: int, world_size: int) -> str:
    """The ``--device`` a rank uses: with several ranks on CUDA, ``cuda:LOCAL_RANK``.

    Raises:
        ConfigError: a fixed CUDA index with several ranks (they would share one GPU).
    """
    if world_size == 1:
        return name
    wants_cuda = name == "cuda" or (name == "auto" and torch.cuda.is_available())
    if name.startswith("cuda:"):
        raise ConfigError(
            f"--device {name} with {world_size} ranks: each rank uses the GPU of its local "
            "rank; give --device cuda (or auto) and choose GPUs with CUDA_VISIBLE_DEVICES"
        )
    return f"cuda:{local_rank}" if wants_cuda else name


@contextlib.contextmanager
def session(device: str, options: DistributedOptions) -> Iterator[DistContext]:
    """Join torchrun's process group for the block (nothing to join: a single process).

    A process group made by the caller is used as it is and left open. The group's timeout
    (``--dist-timeout-seconds``) bounds how long a rank waits in a collective for a rank that
    hangs; a rank that exits closes its connections, which ends the others' collectives at once
    under gloo (torchrun then stops the rest of the job).
    """
    if dist.is_available() and dist.is_initialized():
        yield _context(device, dist.get_backend())
        return
    world_size = env_world_size()
    if world_size == 1:
        yield DistContext(device=device)
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    name = rank_device(device, local_rank, world_size)
    backend = "nccl" if name.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    timeout = datetime.timedelta(seconds=options.dist_timeout_seconds)
    dist.init_process_group(backend, init_method="env://", timeout=timeout)
    context = _context(device, backend)
    LOG.info(
        "rank %d of %d (local rank %d, %s, %s)",
        context.rank, world_size, local_rank, backend, context.device,
    )  # fmt: skip
    yield context
    # only after a run that ended well: a rank that failed leaves the group to its exit (the
    # others may be waiting in a collective with it, and NCCL's teardown could wait for them)
    dist.destroy_process_group()


def _context(device: str, backend: str) -> DistContext:
    world_size = dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return DistContext(
        rank=dist.get_rank(),
        world_size=world_size,
        local_rank=local_rank,
        device=rank_device(device, local_rank, world_size),
        backend=str(backend),
    )


def rank_seed(seed: int, epoch: int, context: DistContext) -> int:
    """A seed for torch's RNG on this rank in this epoch (dropout, PTM masks): ranks draw
    different masks for their slices, and a run resumed at an epoch draws the same ones."""
    return int(np.random.SeedSequence([seed, epoch, context.rank]).generate_state(1)[0])


def barrier(context: DistContext) -> None:
    """Wait for every rank (no-op in a single process)."""
    if context.active:
        dist.barrier()


def broadcast_object(value: Any, context: DistContext, source: int = 0) -> Any:
    """Rank ``source``'s ``value`` on every rank (picklable objects; no-op single-process)."""
    if not context.active:
        return value
    holder = [value if context.rank == source else None]
    dist.broadcast_object_list(holder, src=source)
    return holder[0]


def all_gather_object(value: Any, context: DistContext) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not context.active:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered
