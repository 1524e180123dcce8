"""The ``distributed`` part of TrainConfig: what changes when train.py runs under torchrun."""

from __future__ import annotations

import dataclasses

from e2espk.config import option
from e2espk.errors import ConfigError


@dataclasses.dataclass
class DistributedOptions:
    """Options that matter only with several ranks (``torchrun --nproc-per-node N train.py``);
    a plain ``python train.py`` ignores them."""

    sync_bn: bool = option(
        False,
        help="with several ranks, BatchNorm statistics over the global batch (SyncBatchNorm) "
        "instead of each rank's share; no effect in a single process",
    )
    dist_timeout_seconds: float = option(
        1800.0,
        help="with several ranks, how long a collective (and the ranks waiting while rank 0 "
        "exports final.pt) waits for a rank that stopped answering before the job fails",
    )

    def validate(self) -> None:
        if self.dist_timeout_seconds <= 0:
            raise ConfigError(
                f"--dist-timeout-seconds must be > 0, got {self.dist_timeout_seconds}"
            )
