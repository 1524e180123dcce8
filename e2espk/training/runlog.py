"""What train.log says: a header a person can check the run against, and one line per epoch
(units: ``e2espk.logfile``; EER in %)."""

from __future__ import annotations

import logging
import platform
import socket
import sys
from typing import TYPE_CHECKING, Any

import torch
import yaml

from e2espk import __version__
from e2espk.config import config_to_dict
from e2espk.data.corpus import Corpus
from e2espk.logfile import format_metric

if TYPE_CHECKING:
    from e2espk.training.config import TrainConfig
    from e2espk.training.loop import ValidationSet

LOG = logging.getLogger("e2espk.training.trainer")
__all__ = ["epoch_line", "format_metric", "log_run_header"]


def corpus_line(role: str, corpus: Corpus) -> str:
    frames = next(iter(corpus.streams.values()), None)
    hours = ""
    if frames is not None and frames.time_axis and frames.frame_rate_hz:
        total = float(corpus.frames(frames.name).sum()) / frames.frame_rate_hz / 3600
        hours = f", {total:.2f} h"
    streams = ", ".join(corpus.streams)
    return (
        f"{role} corpus {corpus.path}: {len(corpus.speakers)} speakers, {len(corpus)} "
        f"utterances{hours}; streams {streams}"
    )


def log_run_header(
    config: TrainConfig,
    device: torch.device,
    corpus: Corpus,
    valid: ValidationSet | None,
    start_epoch: int,
) -> None:
    """Version, machine, device, corpora and the resolved config, at the top of every start."""
    LOG.info(
        "e2espk %s (python %s, torch %s) on %s, device %s, %d CPU threads",
        __version__, platform.python_version(), torch.__version__, socket.gethostname(),
        device, torch.get_num_threads(),
    )  # fmt: skip
    LOG.info("command: %s", " ".join(sys.argv))
    LOG.info("%s", corpus_line("train", corpus))
    if valid is not None:
        LOG.info(
            "%s; %d trials (%d target)",
            corpus_line("valid", valid.corpus),
            len(valid.labels),
            int(valid.labels.sum()),
        )
    else:
        LOG.info("no validation corpus: no EER, best.pt is the last epoch")
    LOG.info(
        "resolved config (also in config.yaml):\n%s",
        yaml.safe_dump(config_to_dict(config), sort_keys=False).rstrip(),
    )
    LOG.info(
        "units: EER in %s in this log; history.json and TensorBoard store it as a fraction", "%"
    )
    if start_epoch:
        LOG.info("continuing at epoch %d of %d", start_epoch, config.epochs)


def epoch_line(entry: dict[str, Any], epochs: int) -> str:
    """``epoch 3/10: 12.1 s (train 10.0 s, 40 steps, 4.0 steps/s), train/loss=..., ...eer=2.35%``."""
    stats = [
        f"{entry.get('seconds', 0.0):.1f} s (train {entry.get('train_seconds', 0.0):.1f} s, "
        f"{int(entry.get('train/steps', 0))} steps, {entry.get('steps_per_second', 0.0):.2f} steps/s)"
    ]
    shown = {
        key: value
        for key, value in entry.items()
        if isinstance(value, float)
        and (key == "train/loss" or key.endswith(("/eer", "/min_dcf@0.01")))
    }
    stats += [f"{key}={format_metric(key, value)}" for key, value in shown.items()]
    return f"epoch {entry['epoch']}/{epochs}: " + ", ".join(stats)
