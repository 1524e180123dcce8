"""Splitting work over ranks and gathering it back, so results equal a single process's.

- Training batches: every rank draws the same seeded global batch plan and keeps its own
  contiguous slice (:class:`RankSlice`); the loss is then computed on the global batch,
  gathered back with gradients (:func:`gather_batch`).
- Validation: each rank embeds a contiguous share of the utterances and every rank gets all of
  them back in order (:func:`shard_rows`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from e2espk.distributed.collectives import all_gather_cat
from e2espk.distributed.process_group import DistContext, all_gather_object
from e2espk.errors import ConfigError

T = TypeVar("T")


def check_divisible(batch_size: int, utts_per_speaker: int, world_size: int) -> None:
    """Each rank's slice of the global batch must hold whole speakers.

    Raises:
        ConfigError: ``batch_size`` is not a multiple of ``world_size * utts_per_speaker``.
    """
    granularity = world_size * utts_per_speaker
    if batch_size % granularity:
        raise ConfigError(
            f"--batch-size {batch_size} is the global batch; with {world_size} ranks and "
            f"--utts-per-speaker {utts_per_speaker} it must be a multiple of {granularity} so "
            "that every rank gets the same number of whole speakers"
        )


class RankSlice(Sampler[list[T]]):
    """This rank's contiguous share of each batch of a global batch sampler.

    The global sampler is the one the run drives (``set_epoch``, hard speaker groups); every
    rank iterates its own copy of it with the same seed, so the global batches do not depend on
    the world size and a run resumed with another one continues the same sequence.
    """

    def __init__(self, batches: Sampler[list[T]], context: DistContext) -> None:
        self.batches = batches
        self.context = context

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[T]]:
        world, rank = self.context.world_size, self.context.rank
        for batch in self.batches:
            share, rest = divmod(len(batch), world)
            if rest:
                raise ValueError(f"a batch of {len(batch)} does not split over {world} ranks")
            yield batch[rank * share : (rank + 1) * share]


def gather_batch(
    embeddings: torch.Tensor, labels: torch.Tensor, context: DistContext
) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch's ``(B, E)`` embeddings (with gradients) and ``(B,)`` labels, in rank
    order, from each rank's ``(B / N, E)`` slice; unchanged in a single process.

    Every rank then computes the same loss over the global batch (pairs mined across ranks,
    the margin loss a mean over all of it). The gather's backward sums the N ranks' identical
    gradients, and DDP averages over the N ranks: the model's gradient is exactly the one of a
    single process holding the whole batch.
    """
    if not context.active:
        return embeddings, labels
    label_parts = [torch.empty_like(labels) for _ in range(context.world_size)]
    dist.all_gather(label_parts, labels)
    return all_gather_cat(embeddings), torch.cat(label_parts)


def shard_bounds(n_items: int, context: DistContext) -> tuple[int, int]:
    """``[start, stop)`` of this rank's contiguous share of ``n_items`` (sizes differ by <= 1)."""
    bounds = np.linspace(0, n_items, context.world_size + 1).round().astype(int)
    return int(bounds[context.rank]), int(bounds[context.rank + 1])


def shard_rows(
    compute: Callable[[Sequence[int]], np.ndarray], rows: Sequence[int], context: DistContext
) -> np.ndarray:
    """``compute(rows)`` with each rank computing a contiguous share, gathered in order on
    every rank (a plain call in a single process)."""
    if not context.active:
        return compute(rows)
    start, stop = shard_bounds(len(rows), context)
    part = compute(rows[start:stop]) if stop > start else None
    parts = [p for p in all_gather_object(part, context) if p is not None]
    return np.concatenate(parts)
