"""Pack precomputed features into e2espk corpus files (what data_prep.py runs).

The pipeline is: open every stream's sources -> join them by utterance id -> attach speakers ->
drop speakers with too few recordings -> split train/valid deterministically -> stream the
utterances one at a time through validation into the writers. Only ids and frame counts are
held in memory, never the features of more than one utterance.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from e2espk.config import config_to_dict
from e2espk.data import validation
from e2espk.data.corpus import HANDCRAFTED_KIND, PTM_KIND, StreamSpec
from e2espk.data.pack_config import PackConfig, PackReport
from e2espk.data.part_writer import write_parts
from e2espk.data.sources import (
    FeatureSource,
    open_source,
    read_speaker_map,
    speaker_map_of_kaldi_dir,
)
from e2espk.errors import ConfigError, InputDataError, preview
from e2espk.fileio import made_dir, write_json_atomic

LOG = logging.getLogger(__name__)
UNKNOWN_SPEAKER = "unknown"


def parse_layers(text: str | None) -> list[int] | None:
    """'0,3,6-8' -> [0, 3, 6, 7, 8]."""
    if not text:
        return None
    layers: list[int] = []
    for part in text.split(","):
        start, sep, stop = part.strip().partition("-")
        try:
            layers.extend(range(int(start), int(stop) + 1) if sep else [int(start)])
        except ValueError:
            raise ConfigError(f"--ptm-layers: cannot parse {part!r} in {text!r}") from None
    if len(set(layers)) != len(layers):
        raise ConfigError(f"--ptm-layers lists a layer twice: {text!r}")
    return layers


def open_streams(config: PackConfig) -> dict[str, dict[str, FeatureSource]]:
    """Stream -> (utterance -> source), merging several sources of one stream."""
    streams: dict[str, dict[str, FeatureSource]] = {}
    for name, specs in config.stream_sources().items():
        table: dict[str, FeatureSource] = {}
        for spec in specs:
            source = open_source(spec)
            for utterance in source.ids():
                if utterance in table:
                    raise InputDataError(
                        source.path,
                        f"utterance {utterance!r} of stream {name!r} is also in {table[utterance].path}",
                    )
                table[utterance] = source
        streams[name] = table
    return streams


def join_streams(
    streams: Mapping[str, Mapping[str, FeatureSource]], drop_incomplete: bool
) -> tuple[list[str], int]:
    """Utterances present in every stream; fail (or drop) when some stream lacks some."""
    every = set().union(*(table.keys() for table in streams.values()))
    complete = set(every)
    problems = []
    for name, table in streams.items():
        missing = every - table.keys()
        complete -= missing
        if missing:
            problems.append(f"stream {name!r} lacks {preview(missing)}")
    if problems and not drop_incomplete:
        where = "; ".join(problems)
        raise InputDataError(
            "inputs",
            f"utterances missing from some streams: {where}. Pass --drop-incomplete to drop them",
        )
    for problem in problems:
        LOG.warning("dropping incomplete utterances: %s", problem)
    return sorted(complete), len(every) - len(complete)


def speaker_map_files(config: PackConfig) -> list[Path]:
    """The utt2spk/spk2utt files speakers come from: --utt2spk, else the Kaldi dirs' own."""
    if config.utt2spk:
        return [Path(p) for p in config.utt2spk]
    dirs = [Path(d) for d in [*config.path_to_data, *config.more_data]]
    dirs += [
        Path(s.split(":")[1] if s.startswith("kaldi:") else s)
        for specs in config.stream_sources().values()
        for s in specs
    ]
    return [m for d in dict.fromkeys(dirs) if d.is_dir() and (m := speaker_map_of_kaldi_dir(d))]


def input_signature(config: PackConfig) -> dict[str, Any]:
    """What a corpus would be packed from: the options, and the size and modification time
    of every input file. Equal signatures mean re-packing would write the same corpus."""
    files = {
        Path(path)
        for specs in config.stream_sources().values()
        for spec in specs
        for path in open_source(spec).files()
    }
    files |= set(speaker_map_files(config))
    stats = [
        [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
        for path in sorted(files)
        if path.is_file() and (stat := path.stat())
    ]
    options = config_to_dict(config)
    for volatile in ("progress", "overwrite"):
        options.pop(volatile, None)
    return {"options": options, "files": stats}


def speaker_map(config: PackConfig, utterances: list[str]) -> dict[str, str]:
    """utt -> speaker for every utterance; error listing those without a speaker."""
    if config.speaker_from_id:
        return {utt: utt.split(config.speaker_from_id, 1)[0] for utt in utterances}
    maps = speaker_map_files(config)
    if not maps and config.unknown_speakers:
        return dict.fromkeys(utterances, UNKNOWN_SPEAKER)
    if not maps:
        raise ConfigError(
            "no speaker information: give --utt2spk, Kaldi data dirs with utt2spk, or --speaker-from-id"
        )
    mapping: dict[str, str] = {}
    for path in maps:
        mapping.update(read_speaker_map(path))
    missing = [utt for utt in utterances if utt not in mapping]
    if missing and config.unknown_speakers:
        return {utt: mapping.get(utt, UNKNOWN_SPEAKER) for utt in utterances}
    if missing:
        names = ", ".join(str(p) for p in maps)
        raise InputDataError(names, f"no speaker for {preview(missing)} utterance(s)")
    return {utt: mapping[utt] for utt in utterances}


def stream_specs(
    config: PackConfig, first: Mapping[str, np.ndarray], layers: list[int] | None
) -> list[StreamSpec]:
    """Describe each stream from its first (already reshaped) utterance and the options."""
    rates = config.frame_rates()
    specs = []
    for name, array in first.items():
        is_ptm = name == PTM_KIND
        pooled = is_ptm and array.ndim == 2
        rate = None if pooled else rates.get(name, 100.0)
        specs.append(
            StreamSpec(
                name=name,
                kind=PTM_KIND if is_ptm else HANDCRAFTED_KIND,
                dims=tuple(array.shape if pooled else array.shape[1:]),
                dtype=config.ptm_dtype if is_ptm else "float32",
                frame_rate_hz=rate,
                layers=tuple(layers)
                if is_ptm and layers
                else (tuple(range(array.shape[-2])) if is_ptm else None),
                model=config.ptm_model if is_ptm else None,
                chunk_frames=config.output.chunk_frames(rate),
            )
        )
    return specs


def pack_corpus(config: PackConfig) -> PackReport:
    """Run the whole packing pipeline and return its report (also saved as JSON)."""
    config.output.check_layout()
    layers = parse_layers(config.ptm_layers)
    streams = open_streams(config)
    utterances, n_incomplete = join_streams(streams, config.drop_incomplete)
    if not utterances:
        raise InputDataError("inputs", "no utterance is present in every stream")
    plan = config.output.plan(speaker_map(config, utterances))
    reader = validation.UtteranceReader(streams, config.ptm_layout, layers)
    first = reader.load(plan.ordered[0])
    specs = stream_specs(config, first, layers)
    checker = validation.UtteranceChecker(specs, config.duration_tolerance)
    report = PackReport(
        outputs={p: str(n) for p, n in plan.names.items()},
        utterances={},
        speakers={},
        dropped_incomplete=n_incomplete,
        dropped_min_recordings=plan.dropped,
        streams={s.name: s.to_json() for s in specs},
    )
    with made_dir(config.output.out_path):
        write_parts(config, plan, reader, checker, first, report)
        write_json_atomic(config.output.report_path(), dataclasses.asdict(report))
    return report
