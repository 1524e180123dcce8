"""The shards of ``--slurm-array``: which utterances each task extracts, and the task itself.

A shard is a contiguous run of whole ``--bucket-window`` windows of the serial order. A task
therefore decodes the same windows and runs the PTM on the same batches as a serial run, so its
values are the serial run's, bit for bit. Each task writes its own corpus (``shard-NNN.hdf`` in
the work folder) with the serial pipeline's resumable writer: a task resubmitted after a
failure, or requeued after a preemption, continues its shard where it stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import submitit

from e2espk.config import config_to_dict, replace_flat
from e2espk.errors import ConfigError
from e2espk.extract.audio import AudioItem
from e2espk.extract.config import VOLATILE_FIELDS, ExtractConfig
from e2espk.extract.pipeline import Extractor, Plan, open_writer, signature, write_utterances

LOG = logging.getLogger(__name__)
SHARD_ATTR = "shard"  # JSON attribute of a shard file: plan id, index, count, skipped utterances
ALL = "all"
# Test-only fault injection, so that tests can watch a task being resubmitted (or requeued) and
# continuing its shard: comma-separated "INDEX:KIND:MARKER"; once shard INDEX has written its
# first window, and only while MARKER does not exist (the fault creates it), KIND "fail" raises
# and KIND "stall" sleeps (for the test to preempt the task). Never set it outside tests.
FAULTS_ENV = "E2ESPK_TEST_SHARD_FAULTS"


@dataclasses.dataclass(frozen=True)
class Shard:
    """Utterances ``start:stop`` of the serial order, for messages: first and last ids."""

    index: int
    start: int
    stop: int
    first: str
    last: str

    def describe(self) -> str:
        return (
            f"shard {self.index} (utterances {self.start}-{self.stop - 1} of the serial order, "
            f"{self.first!r} .. {self.last!r})"
        )


def split_windows(ordered: list[str], window: int, count: int) -> list[Shard]:
    """``count`` shards of whole windows, as even in windows as can be, in the serial order.

    Raises:
        ConfigError: fewer windows than shards (a shard would be empty).
    """
    windows = -(-len(ordered) // window)
    if count > windows:
        raise ConfigError(
            f"--slurm-array {count}: the {len(ordered)} utterances make only {windows} window(s) "
            f"of --bucket-window {window}; ask for at most {windows} tasks or a smaller window"
        )
    bounds = [min(len(ordered), (k * windows // count) * window) for k in range(count + 1)]
    return [
        Shard(k, start, stop, ordered[start], ordered[stop - 1])
        for k, (start, stop) in enumerate(itertools.pairwise(bounds))
    ]


def plan_id(config: ExtractConfig, plan: Plan, shards: list[Shard]) -> str:
    """What the shard files must agree on: the options, the utterances and the shard bounds."""
    options = config_to_dict(config)
    for name in VOLATILE_FIELDS:
        options.pop(name, None)
    payload = {
        "options": options,
        "utterances": [[utt, plan.speakers[utt]] for utt in plan.ordered],
        "bounds": [[s.start, s.stop] for s in shards],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def work_dir(config: ExtractConfig) -> Path:
    """Where the shard files and the task logs of ``--slurm-array`` live."""
    return Path(config.output.out_path) / f"{config.output.out_name}.shards"


def shard_path(work: Path, index: int) -> Path:
    return work / f"shard-{index:03d}.hdf"


def shard_record(path: Path) -> dict[str, Any] | None:
    """The shard attribute of a finished shard file, or None when it is not one."""
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as handle:
            return json.loads(handle.attrs[SHARD_ATTR])
    except (OSError, KeyError, ValueError):
        return None


@dataclasses.dataclass
class ShardJob:
    """Everything a task needs (no rescan of the inputs on the cluster): its utterances in
    order with their audio and speakers, and the identity its file must carry."""

    shard: Shard
    count: int
    plan: str
    work: str
    items: dict[str, AudioItem]
    speakers: dict[str, str]
    ordered: list[str]

    @classmethod
    def of(cls, plan: Plan, shard: Shard, count: int, plan_id: str, work: Path) -> ShardJob:
        ordered = plan.ordered[shard.start : shard.stop]
        items = {utt: plan.items[utt] for utt in ordered}
        speakers = {utt: plan.speakers[utt] for utt in ordered}
        return cls(shard, count, plan_id, str(work), items, speakers, ordered)

    @property
    def path(self) -> Path:
        return shard_path(Path(self.work), self.shard.index)

    def identity(self) -> dict[str, Any]:
        return {"plan": self.plan, "index": self.shard.index, "count": self.count}


class ShardTask(submitit.helpers.Checkpointable):
    """The submitit callable of one array task. Checkpointable, so that submitit requeues a
    preempted or timed-out task (its checkpoint is the shard's own resumable file)."""

    def __call__(self, config: ExtractConfig, job: ShardJob) -> dict[str, Any]:
        if not logging.getLogger().handlers:  # the task's main: its log is the task log file
            logging.basicConfig(
                level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
            )
        LOG.info("%s -> %s", job.shard.describe(), job.path)
        return extract_shard(config, job)


def extract_shard(config: ExtractConfig, job: ShardJob) -> dict[str, Any]:
    """Extract one shard into its file (continuing a partial one); returns its shard record."""
    done = shard_record(job.path)
    if done is not None and {k: done.get(k) for k in job.identity()} == job.identity():
        return done  # finished before a requeue or a lost result
    config = replace_flat(config, {"restart": False, "overwrite": True, "progress": False})
    extractor = Extractor(config)
    specs = extractor.specs(config)
    sign = {**signature(config, job.items, extractor), SHARD_ATTR: job.identity()}
    parts = dict.fromkeys(job.ordered, ALL)
    plan = Plan(job.items, job.speakers, parts, {ALL: job.path}, job.ordered)
    writer = open_writer(config, extractor, specs, job.path, sign)
    try:
        write_utterances(config, extractor, specs, plan, {ALL: writer}, _fault(job))
        record = {**job.identity(), "utterances": writer.n_utterances, "skipped_bad": writer.bad}
        writer.attrs[SHARD_ATTR] = json.dumps(record)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    LOG.info("%s: %s written", job.path, job.shard.describe())
    return record


def _fault(job: ShardJob) -> Callable[[], None] | None:
    """The test-only fault of :data:`FAULTS_ENV` for this shard, or None."""
    for entry in filter(None, os.environ.get(FAULTS_ENV, "").split(",")):
        index, kind, marker = entry.split(":", 2)
        if index == str(job.shard.index) and not Path(marker).exists():
            return functools.partial(_FAULTS[kind], Path(marker), job.shard.index)
    return None


def _fail(marker: Path, index: int) -> None:
    marker.touch()
    raise RuntimeError(f"{FAULTS_ENV}: shard {index} fails once, as asked")


def _stall(marker: Path, index: int) -> None:
    marker.touch()
    time.sleep(300)  # the test preempts the task here


_FAULTS = {"fail": _fail, "stall": _stall}
