"""Audio -> features -> corpus (what ``data_prep.py extract`` runs).

The pipeline: list the audio items -> attach speakers -> drop speakers with too few recordings
-> split train/valid as packing does -> in (speaker, utterance) order, read windows of
``--bucket-window`` utterances, sort each window by length into PTM batches, compute every
stream, cut them to a common span and write each utterance straight into its part's corpus.
Writers checkpoint after every batch, so a rerun of a killed run continues where it stopped.

Batches depend only on the window (fixed boundaries in the fixed order), never on where a run
was stopped, so a resumed run computes each utterance in the same batch as an uninterrupted one
and writes the same values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from e2espk import __version__, interrupts
from e2espk.config import config_to_dict
from e2espk.data import validation
from e2espk.data.corpus import HANDCRAFTED_KIND, PTM_KIND, StreamSpec
from e2espk.data.pack_config import PackReport
from e2espk.data.packing import parse_layers
from e2espk.data.part_writer import close_parts
from e2espk.data.resumable_writer import ResumableCorpusWriter
from e2espk.errors import InputDataError
from e2espk.extract.audio import SAMPLE_RATE, AudioItem
from e2espk.extract.config import VOLATILE_FIELDS, ExtractConfig
from e2espk.extract.handcrafted import FRAME_RATE_HZ, HANDCRAFTED
from e2espk.extract.inputs import audio_items, input_files, speakers_of
from e2espk.extract.prepare import Prepared, Preparer
from e2espk.fileio import made_dir, write_json_atomic
from e2espk.progress import progress_bar

LOG = logging.getLogger(__name__)
GPU_BATCH_SECONDS = 120.0  # default padded audio per PTM batch on CUDA (none on CPU)


def align(arrays: Mapping[str, np.ndarray], ratio: int = 2) -> dict[str, np.ndarray]:
    """Cut the streams of one utterance to one span: handcrafted = ``ratio`` x PTM frames.

    PTM frame ``i`` and handcrafted frame ``ratio * i`` start at the same sample (see
    ``e2espk.extract``), so cutting the ends is all the alignment needs.
    """
    handcrafted = [len(a) for name, a in arrays.items() if name != PTM_KIND]
    if PTM_KIND not in arrays:
        n = min(handcrafted)
        return {name: a[:n] for name, a in arrays.items()}
    n_ptm = len(arrays[PTM_KIND])
    if handcrafted:
        n_ptm = min(n_ptm, min(handcrafted) // ratio)
    return {
        name: a[:n_ptm] if name == PTM_KIND else a[: ratio * n_ptm] for name, a in arrays.items()
    }


class Extractor:
    """Computes every requested stream of a batch of decoded utterances."""

    def __init__(self, config: ExtractConfig) -> None:
        self.config = config
        self.handcrafted = [HANDCRAFTED.get(name) for name in config.handcrafted()]
        self.runner = None
        if PTM_KIND in config.streams:
            from e2espk.device import resolve_device
            from e2espk.extract.ptm import PtmRunner

            assert config.ptm_model is not None
            self.runner = PtmRunner(
                config.ptm_model,
                parse_layers(config.ptm_layers),
                resolve_device(config.device),
                config.ptm_dtype,
            )
            ratio = FRAME_RATE_HZ / self.runner.info.frame_rate_hz
            if self.handcrafted and ratio != int(ratio):
                raise InputDataError(
                    self.runner.info.path,
                    f"PTM frame rate {self.runner.info.frame_rate_hz} Hz does not divide 100 Hz",
                )

    def specs(self, config: ExtractConfig) -> list[StreamSpec]:
        """The corpus streams, in the order of --streams."""
        specs = []
        for name in config.streams:
            rate = FRAME_RATE_HZ
            if name == PTM_KIND:
                assert self.runner is not None
                info = self.runner.info
                dims: tuple[int, ...] = (len(self.runner.layers), info.hidden_size)
                rate = info.frame_rate_hz
            else:
                dims = (HANDCRAFTED.get(name).dims,)
            specs.append(
                StreamSpec(
                    name=name,
                    kind=PTM_KIND if name == PTM_KIND else HANDCRAFTED_KIND,
                    dims=dims,
                    dtype=config.ptm_dtype if name == PTM_KIND else "float32",
                    frame_rate_hz=rate,
                    layers=tuple(self.runner.layers) if name == PTM_KIND and self.runner else None,
                    model=self.runner.info.name if name == PTM_KIND and self.runner else None,
                    chunk_frames=config.output.chunk_frames(rate),
                )
            )
        return specs

    def batches(self, wavs: Mapping[str, np.ndarray]) -> list[list[str]]:
        """Utterances of one window grouped into PTM batches (one batch without a PTM)."""
        from e2espk.extract.ptm import plan_batches

        ids = list(wavs)
        if self.runner is None:
            return [ids]
        seconds = self.config.ptm_batch_seconds
        if seconds is None:
            seconds = GPU_BATCH_SECONDS if self.runner.device.type == "cuda" else 0.0
        budget = int(seconds * SAMPLE_RATE)
        return [
            [ids[i] for i in batch] for batch in plan_batches([len(wavs[u]) for u in ids], budget)
        ]

    def compute(self, batch: Sequence[Prepared]) -> dict[str, dict[str, np.ndarray]]:
        """utt -> stream -> array for one batch of prepared utterances, aligned."""
        wavs = [p.wav for p in batch if p.wav is not None]
        states = self.runner(wavs) if self.runner is not None else None
        out = {}
        for row, prepared in enumerate(batch):
            arrays = dict(prepared.arrays)
            if states is not None:
                arrays[PTM_KIND] = states[row]
            if len(arrays) < len(self.config.streams):
                continue  # finished before a stop: in the batch only to keep it as it was
            out[prepared.utterance] = align({name: arrays[name] for name in self.config.streams})
        return out

    def provenance(self) -> dict[str, Any]:
        """What the file records about how its streams were made."""
        record: dict[str, Any] = {
            "e2espk_version": __version__,
            "sample_rate": SAMPLE_RATE,
            "handcrafted": {h.name: h.description for h in self.handcrafted},
        }
        if self.runner is not None:
            record["ptm"] = {**dataclasses.asdict(self.runner.info), "layers": self.runner.layers}
        return record


def signature(config: ExtractConfig, items: dict[str, AudioItem], extractor: Extractor) -> dict:
    """What the corpus is built from; a partial run with another signature is not continued."""
    options = config_to_dict(config)
    for name in VOLATILE_FIELDS:
        options.pop(name, None)
    files = json.dumps(input_files(config, items)).encode()
    return {
        "options": options,
        "inputs_sha256": hashlib.sha256(files).hexdigest(),
        "ptm_sha256": extractor.runner.info.sha256 if extractor.runner else None,
    }


@dataclasses.dataclass
class Plan:
    """What an extraction writes: utterances in writing order, their audio, speaker and part."""

    items: dict[str, AudioItem]
    speakers: dict[str, str]  # utt -> speaker, after --min-recordings
    assignment: dict[str, str]  # utt -> part ("all", or "train"/"valid")
    names: dict[str, Path]  # part -> output file
    ordered: list[str]  # (speaker, utterance) order: the windows and batches follow it
    dropped: int = 0  # utterances of speakers below --min-recordings


def plan_extraction(config: ExtractConfig) -> Plan:
    """Check the options, read the inputs and decide who goes where; no audio is decoded."""
    config.check()
    items = audio_items(config)
    out = config.output.plan(speakers_of(config, sorted(items)))
    return Plan(items, out.speakers, out.assignment, out.names, out.ordered, out.dropped)


def new_report(plan: Plan, specs: list[StreamSpec]) -> PackReport:
    return PackReport(
        outputs={p: str(n) for p, n in plan.names.items()}, utterances={}, speakers={},
        dropped_min_recordings=plan.dropped, streams={s.name: s.to_json() for s in specs},
    )  # fmt: skip


def write_report(config: ExtractConfig, report: PackReport) -> None:
    write_json_atomic(config.output.report_path(), dataclasses.asdict(report))


def extract_corpus(config: ExtractConfig) -> PackReport:
    """Run the whole extraction and return its report (also saved as JSON)."""
    plan = plan_extraction(config)
    extractor = Extractor(config)
    specs = extractor.specs(config)
    report = new_report(plan, specs)
    sign = signature(config, plan.items, extractor)
    with made_dir(config.output.out_path):
        writers: dict[str, ResumableCorpusWriter] = {}
        try:
            for part, path in plan.names.items():
                writers[part] = open_writer(config, extractor, specs, path, sign)
            write_utterances(config, extractor, specs, plan, writers)
            for writer in writers.values():
                report.skipped_bad.update(writer.bad)
            close_parts(writers, plan.names, report)
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        write_report(config, report)
    return report


def open_writer(
    config: ExtractConfig, extractor: Extractor, specs: list[StreamSpec], path: Path, sign: dict
) -> ResumableCorpusWriter:
    """A resumable writer of one output file (continues a partial one of the same signature)."""
    writer = ResumableCorpusWriter(
        path, specs, signature=sign, restart=config.restart, compression=config.output.compression,
        compression_level=config.output.compression_level, overwrite=config.output.overwrite,
    )  # fmt: skip
    writer.attrs["extraction"] = json.dumps(extractor.provenance())
    return writer


def write_utterances(
    config: ExtractConfig, extractor: Extractor, specs: list[StreamSpec], plan: Plan,
    writers: dict[str, ResumableCorpusWriter], on_window: Callable[[], None] | None = None,
) -> None:  # fmt: skip
    """Extract every unfinished utterance of ``plan`` into its part's writer (checkpointed);
    ``on_window`` runs after each window is checkpointed."""
    with Preparer(config.channel, config.workers) as preparer, interrupts.deferred():
        run = _Run(config, extractor, specs, plan, writers, preparer, on_window)
        run.all(plan.ordered)


@dataclasses.dataclass
class _Run:
    """One pass over the utterances: decode windows, compute batches, write, checkpoint."""

    config: ExtractConfig
    extractor: Extractor
    specs: list[StreamSpec]
    plan: Plan
    writers: dict[str, ResumableCorpusWriter]
    preparer: Preparer
    on_window: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        self.items, self.speakers = self.plan.items, self.plan.speakers
        self.assignment = self.plan.assignment
        self.checker = validation.UtteranceChecker(self.specs, tolerance=None)
        self.finished = set().union(*(w.done | set(w.bad) for w in self.writers.values()))

    def all(self, ordered: list[str]) -> None:
        """Every unfinished window, the next one already being prepared (by the workers, when
        there are some) while the model runs on the current one."""
        size = self.config.bucket_window
        windows = [ordered[i : i + size] for i in range(0, len(ordered), size)]
        pending = [(w, {u for u in w if u not in self.finished}) for w in windows]
        pending = [(window, todo) for window, todo in pending if todo]
        bar = progress_bar(
            total=len(ordered), enabled=self.config.progress, desc="extracting", unit="utt"
        )
        with bar:
            bar.update(len(ordered) - sum(len(window) for window, _ in pending))
            upcoming = self.prepare(*pending[0]) if pending else None
            for k, (window, todo) in enumerate(pending):
                interrupts.check()
                current = upcoming
                upcoming = self.prepare(*pending[k + 1]) if k + 1 < len(pending) else None
                assert current is not None
                self.window(todo, current)
                bar.update(len(window))
                if self.on_window is not None:
                    self.on_window()

    def prepare(self, window: list[str], todo: set[str]) -> Iterator[Prepared]:
        """Start preparing a window: handcrafted streams only for unfinished utterances (the
        others are decoded only so that the PTM batches are those of an uninterrupted run)."""
        names = tuple(self.config.handcrafted())
        return self.preparer.map([(self.items[u], names if u in todo else ()) for u in window])

    def window(self, todo: set[str], prepared: Iterator[Prepared]) -> None:
        """Run the model on a prepared window and write its unfinished utterances."""
        ready: dict[str, Prepared] = {}
        for item in prepared:
            if item.error is None:
                ready[item.utterance] = item
            elif item.utterance in todo:
                self.bad(item.utterance, item.error)
        wavs = {utt: p.wav for utt, p in ready.items() if p.wav is not None}
        for batch in self.extractor.batches(wavs):
            if not todo.intersection(batch):
                continue
            features = self.extractor.compute([ready[utt] for utt in batch])
            for utt in batch:
                if utt in todo:
                    self.write(utt, features[utt])
            for writer in self.writers.values():
                writer.checkpoint()
            interrupts.check()
        for writer in self.writers.values():
            writer.checkpoint()

    def write(self, utt: str, arrays: dict[str, np.ndarray]) -> None:
        problem = self.checker.problem(arrays)
        if problem:
            self.bad(utt, f"{problem.stream}: {problem.message}")
            return
        self.writers[self.assignment[utt]].add(self.speakers[utt], utt, arrays)

    def bad(self, utt: str, why: str) -> None:
        where = self.items[utt].where()
        if not self.config.skip_bad:
            raise InputDataError(
                where, f"utterance {utt!r}: {why}. Pass --skip-bad to skip such utterances"
            )
        LOG.warning("skipping utterance %r (%s): %s", utt, where, why)
        self.writers[self.assignment[utt]].mark_bad(utt, f"{where}: {why}")
