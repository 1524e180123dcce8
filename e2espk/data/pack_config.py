"""The options of data_prep.py and the report of what a packing run did.

Their own module: the packing pipeline (``e2espk.data.packing``) and its writing half
(``e2espk.data.part_writer``) both read them, and neither imports the other's back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from e2espk.config import from_flat, option, part
from e2espk.data.corpus import COMPRESSIONS, PTM_KIND
from e2espk.data.splits import SPLITTERS, filter_min_recordings
from e2espk.errors import ConfigError, InputDataError

DEFAULT_FRAME_RATES = {PTM_KIND: 50.0}  # every other stream: 100 Hz (10 ms hop)


@dataclasses.dataclass
class OutputPlan:
    """Who goes where: the utterances kept, their speakers and parts, the files, the order."""

    speakers: dict[str, str]  # utt -> speaker, after --min-recordings
    assignment: dict[str, str]  # utt -> part ("all", or "train"/"valid")
    names: dict[str, Path]  # part -> output file
    ordered: list[str]  # (speaker, utterance): the order utterances are written in
    dropped: int = 0  # utterances of speakers below --min-recordings


@dataclasses.dataclass
class OutputOptions:
    """Where a corpus is written and how: the options packing and extraction share.

    ``data_prep.py`` (packing) and ``data_prep.py extract`` hold this part, so both split,
    name, refuse to overwrite and lay out their files in this one place.
    """

    min_recordings: int = option(1, help="drop speakers with fewer utterances than this")
    split_by: str = option(
        "none",
        choices=SPLITTERS.names(),
        help="write a train and a valid file split by held-out speakers or utterances",
    )
    valid_size: float = option(
        0.1,
        help="held-out share: a fraction (<1) or a count (>=1) of speakers, or of each speaker's utterances",
    )
    seed: int = option(0, help="seed of the split")
    out_path: str = option(".", help="output directory")
    out_name: str = option(
        "corpus", help="output file stem: NAME.hdf, or NAME_train.hdf and NAME_valid.hdf"
    )
    compression: str = option("none", choices=list(COMPRESSIONS), help="HDF5 compression filter")
    compression_level: int = option(4, help="gzip level 1-9")
    chunk_seconds: float = option(
        0.5,
        help="seconds of frames per HDF5 chunk (random crops read about this granularity); 0: contiguous datasets, uncompressed only (faster crops, no edge padding)",
    )
    overwrite: bool = option(False, help="replace existing output files")

    def check_layout(self) -> None:
        """Chunking and compression must fit together before any input is read."""
        if self.chunk_seconds < 0:
            raise ConfigError(
                f"--chunk-seconds must be >= 0 (0: contiguous), got {self.chunk_seconds}"
            )
        if self.chunk_seconds == 0 and self.compression != "none":
            raise ConfigError(
                f"--chunk-seconds 0 (contiguous datasets) cannot be compressed; HDF5 compresses "
                f"chunks only: use --compression none, or a chunk size with --compression {self.compression}"
            )

    def chunk_frames(self, frame_rate: float | None) -> int:
        """Frames per HDF5 chunk of a stream at ``frame_rate`` (0: contiguous, and for a pooled
        stream without a time axis, ``frame_rate`` None)."""
        if frame_rate is None or self.chunk_seconds == 0:
            return 0
        return max(1, round(self.chunk_seconds * frame_rate))

    def assign(self, speakers: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str], int]:
        """``(speakers, parts, dropped)``: utterance -> speaker after --min-recordings,
        utterance -> output part ("all", or "train"/"valid"), and how many were dropped."""
        kept, dropped = filter_min_recordings(dict(speakers), self.min_recordings)
        if not kept:
            raise InputDataError(
                "inputs", f"no speaker has --min-recordings {self.min_recordings} utterances"
            )
        return kept, SPLITTERS.get(self.split_by)(kept, self.valid_size, self.seed), dropped

    def output_files(self, parts: Iterable[str]) -> dict[str, Path]:
        """Part -> output file; an existing file is refused unless --overwrite."""
        names = {
            part: Path(self.out_path)
            / (f"{self.out_name}.hdf" if part == "all" else f"{self.out_name}_{part}.hdf")
            for part in sorted(set(parts))
        }
        for path in names.values():
            if path.exists() and not self.overwrite:
                raise InputDataError(path, "output exists; pass --overwrite to replace it")
        return names

    def plan(self, speakers: Mapping[str, str]) -> OutputPlan:
        """Split ``speakers`` (utterance -> speaker) into the output files, in writing order;
        existing files are refused unless --overwrite, before anything is read."""
        kept, assignment, dropped = self.assign(speakers)
        ordered = sorted(kept, key=lambda utt: (kept[utt], utt))
        return OutputPlan(
            kept, assignment, self.output_files(assignment.values()), ordered, dropped
        )

    def report_path(self) -> Path:
        return Path(self.out_path) / f"{self.out_name}.report.json"


@dataclasses.dataclass
class PackConfig:
    """Options of data_prep.py. Each stream may come from its own sources, joined by utterance id."""

    ptm: list[str] = option(
        default_factory=list,
        help="sources of PTM hidden states [frames, layers, dims] (or pooled [layers, dims]): Kaldi dir, .scp, .pt dict, directory or manifest of per-utterance files; prefix kind: to force a reader",
    )
    mfbe: list[str] = option(
        default_factory=list, help="sources of log-mel filterbank energies [frames, 80]"
    )
    mfcc: list[str] = option(default_factory=list, help="sources of MFCCs [frames, 40]")
    pitch: list[str] = option(
        default_factory=list, help="sources of pitch/F0 [frames] or [frames, k]"
    )
    stream: list[str] = option(
        default_factory=list, help="other handcrafted streams as NAME=SOURCE"
    )
    path_to_data: list[str] = option(
        default_factory=list,
        help="Kaldi data dirs whose feats.scp feed --kaldi-stream and whose utt2spk give speakers",
    )
    more_data: list[str] = option(
        default_factory=list, help="more Kaldi data dirs merged with --path-to-data"
    )
    kaldi_stream: str = option(
        "mfbe", help="stream that the feats.scp of --path-to-data/--more-data fills"
    )
    utt2spk: list[str] = option(
        default_factory=list,
        help="speaker maps: utt2spk, spk2utt or a .pt dict {utt: spk}; default: those of the Kaldi dirs",
    )
    speaker_from_id: str | None = option(
        None,
        help="take the speaker as the part of the utterance id before this separator (e.g. '/' for VoxCeleb ids)",
    )
    unknown_speakers: bool = option(
        False,
        help="utterances without a speaker get speaker 'unknown' instead of failing (for blind test data)",
    )
    ptm_layers: str | None = option(
        None, help="PTM layers to keep, e.g. '0,3,6-12' (indices into the stored layer axis)"
    )
    ptm_layout: str = option(
        "TLD",
        choices=["TLD", "LTD"],
        help="axis order of PTM arrays: frames-layers-dims or layers-frames-dims",
    )
    ptm_model: str | None = option(
        None, help="name of the pre-trained model (recorded in the file)"
    )
    ptm_dtype: str = option(
        "float16", choices=["float16", "float32"], help="stored dtype of the PTM stream"
    )
    frame_rate: list[str] = option(
        default_factory=list, help="NAME=HZ frame rates (default: ptm 50, others 100)"
    )
    duration_tolerance: float | None = option(
        None,
        help="largest allowed difference in seconds between the durations of an utterance's streams (default: 2 frames of the slowest stream)",
    )
    drop_incomplete: bool = option(
        False, help="drop utterances missing from some stream instead of failing"
    )
    skip_bad: bool = option(
        False,
        help="skip (and report) utterances with NaN/Inf, empty or inconsistent features instead of failing",
    )
    output: OutputOptions = part(
        OutputOptions, "where the corpus is written: train/valid split, files, HDF5 layout"
    )
    progress: bool = option(True, help="show a progress bar")

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> PackConfig:
        """A PackConfig from flat ``option: value`` pairs (flag names, config-file keys), the
        output options included; options left out keep their defaults."""
        return from_flat(cls, values)

    def stream_sources(self) -> dict[str, list[str]]:
        """Stream name -> source specs, from every flag that names sources."""
        streams: dict[str, list[str]] = {}
        for name in (PTM_KIND, "mfbe", "mfcc", "pitch"):
            if getattr(self, name):
                streams[name] = list(getattr(self, name))
        for item in self.stream:
            name, sep, source = item.partition("=")
            if not sep or not name or not source:
                raise ConfigError(f"--stream expects NAME=SOURCE, got {item!r}")
            streams.setdefault(name, []).append(source)
        kaldi_dirs = [*self.path_to_data, *self.more_data]
        if kaldi_dirs:
            streams.setdefault(self.kaldi_stream, []).extend(f"kaldi:{d}" for d in kaldi_dirs)
        canonical = [PTM_KIND, "mfbe", "mfcc", "pitch"]
        streams = dict(
            sorted(
                streams.items(),
                key=lambda item: (canonical.index(item[0]) if item[0] in canonical else 4, item[0]),
            )
        )
        if not streams:
            raise ConfigError(
                "no feature sources given: use --ptm, --mfbe, --mfcc, --pitch, --stream or --path-to-data"
            )
        return streams

    def frame_rates(self) -> dict[str, float]:
        rates = dict(DEFAULT_FRAME_RATES)
        for item in self.frame_rate:
            name, _, value = item.partition("=")
            try:
                rates[name] = float(value)
            except ValueError:
                raise ConfigError(f"--frame-rate expects NAME=HZ, got {item!r}") from None
        return rates


@dataclasses.dataclass
class PackReport:
    """What a packing run did, saved as JSON beside the outputs."""

    outputs: dict[str, str]
    utterances: dict[str, int]
    speakers: dict[str, int]
    dropped_incomplete: int = 0
    dropped_min_recordings: int = 0
    skipped_bad: dict[str, str] = dataclasses.field(default_factory=dict)
    streams: dict[str, dict] = dataclasses.field(default_factory=dict)
