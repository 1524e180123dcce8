"""Join the shard corpora of ``--slurm-array`` into the corpus a serial extraction writes.

The shards are checked against each other and against the plan before anything is written:
the same plan (options, utterances, bounds), the same streams and the same extraction record
(e2espk version, PTM name, revision, weights hash and layers); a shard that differs is refused
by file. Utterances are then copied in the serial order into the same writers (train/valid
split, atomic rename, index) as a serial run, so the joined files hold the same datasets,
index and attributes as a serial run's; only HDF5's internal layout (byte offsets) differs.
Each utterance is an HDF5 object copy (``CorpusWriter.add_copy``): its chunks move as stored,
compressed or not, with no decoding (``benchmarks/bench_extract_join.py``: cost against cp).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from e2espk import interrupts
from e2espk.data.corpus import Corpus, CorpusWriter, StreamSpec
from e2espk.data.pack_config import PackReport
from e2espk.data.part_writer import close_parts
from e2espk.errors import InputDataError, preview
from e2espk.extract.config import ExtractConfig
from e2espk.extract.pipeline import Plan, new_report
from e2espk.extract.shards import SHARD_ATTR, Shard, shard_path, work_dir
from e2espk.fileio import made_dir
from e2espk.progress import progress_bar


@dataclasses.dataclass
class ShardFile:
    """One shard's corpus, opened, with what it says about itself."""

    shard: Shard
    corpus: Corpus
    record: dict[str, Any]
    extraction: str


def open_shards(work: Path, shards: list[Shard], plan: str) -> list[ShardFile]:
    """Every shard file, checked against the plan and the first shard; InputDataError naming
    the file that is missing or differs."""
    opened: list[ShardFile] = []
    try:
        for shard in shards:
            path = shard_path(work, shard.index)
            corpus = Corpus(path)
            opened.append(ShardFile(shard, corpus, {}, ""))
            handle = corpus.handle
            if SHARD_ATTR not in handle.attrs or "extraction" not in handle.attrs:
                raise InputDataError(path, "not a shard of data_prep.py extract --slurm-array")
            opened[-1].record = json.loads(handle.attrs[SHARD_ATTR])
            opened[-1].extraction = str(handle.attrs["extraction"])
            _check(opened[-1], opened[0], plan, len(shards))
    except BaseException:
        for item in opened:
            item.corpus.close()
        raise
    return opened


def _check(item: ShardFile, first: ShardFile, plan: str, count: int) -> None:
    path, record = item.corpus.path, item.record
    wanted = {"plan": plan, "index": item.shard.index, "count": count}
    got = {key: record.get(key) for key in wanted}
    if got != wanted:
        raise InputDataError(
            path,
            f"shard of another extraction (plan {str(got['plan'])[:12]}, shard {got['index']} "
            f"of {got['count']}; this one is {plan[:12]}, shard {item.shard.index} of {count}): "
            "its options, inputs or sharding differ; rerun with --restart to discard it",
        )
    if item.corpus.streams != first.corpus.streams:
        raise InputDataError(
            path,
            f"streams differ from {first.corpus.path}: "
            f"{_specs(item.corpus.streams)} vs {_specs(first.corpus.streams)}",
        )
    if item.extraction != first.extraction:
        raise InputDataError(
            path,
            f"extracted with other settings than {first.corpus.path}: "
            f"{item.extraction} vs {first.extraction}",
        )


def _specs(streams: dict[str, StreamSpec]) -> str:
    return json.dumps([spec.to_json() for spec in streams.values()])


def join_shards(config: ExtractConfig, plan: Plan, shards: list[Shard], plan_id: str) -> PackReport:
    """Write the plan's output files from the shard files in ``work``; returns the report.

    Raises:
        InputDataError: a shard file is missing, belongs to another extraction, differs from
            the others, or lacks (or adds) utterances of its range.
    """
    work = work_dir(config)
    opened = open_shards(work, shards, plan_id)
    specs = list(opened[0].corpus.streams.values())
    report = new_report(plan, specs)
    writers: dict[str, CorpusWriter] = {}
    try:
        with made_dir(config.output.out_path):
            for part, path in plan.names.items():
                writers[part] = CorpusWriter(
                    path, specs, compression=config.output.compression,
                    compression_level=config.output.compression_level, overwrite=config.output.overwrite,
                )  # fmt: skip
                writers[part].attrs["extraction"] = opened[0].extraction
            bar = progress_bar(
                total=len(plan.ordered), enabled=config.progress, desc="joining", unit="utt"
            )
            with interrupts.deferred(), bar:
                for item in opened:
                    _copy(item, plan, writers, report)
                    bar.update(item.shard.stop - item.shard.start)
            close_parts(writers, plan.names, report)
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        for item in opened:
            item.corpus.close()
    return report


def _copy(
    item: ShardFile, plan: Plan, writers: dict[str, CorpusWriter], report: PackReport
) -> None:
    """Copy one shard's utterances (serial order) into their parts' writers."""
    expected = plan.ordered[item.shard.start : item.shard.stop]
    bad: dict[str, str] = item.record.get("skipped_bad", {})
    stored = set(item.corpus.utterances.tolist())
    missing = [u for u in expected if u not in stored and u not in bad]
    extra = stored.difference(expected)
    if missing or extra:
        what = f"lacks {preview(missing)}" if missing else f"has foreign {preview(sorted(extra))}"
        raise InputDataError(item.corpus.path, f"{item.shard.describe()} {what} utterance(s)")
    report.skipped_bad.update(bad)
    speakers = item.corpus.speakers
    for utt in expected:
        if utt in bad:
            continue
        interrupts.check()
        row = item.corpus.utterance_row(utt)
        if speakers[item.corpus.speaker_of[row]] != plan.speakers[utt]:
            raise InputDataError(item.corpus.path, f"utterance {utt!r} under another speaker")
        writers[plan.assignment[utt]].add_copy(item.corpus, row)
