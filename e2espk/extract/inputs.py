"""What an extraction reads: the audio items and their speakers, from the command's options."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from e2espk.data.sources import read_speaker_map
from e2espk.errors import ConfigError, InputDataError, preview
from e2espk.extract.audio import AudioItem, apply_segments, parse_wav_scp, scan_audio_dir
from e2espk.extract.config import ExtractConfig

LOG = logging.getLogger(__name__)
UNKNOWN_SPEAKER = "unknown"


def audio_items(config: ExtractConfig) -> dict[str, AudioItem]:
    """utt -> AudioItem from --wav-scp (+ --segments) or --audio-dir."""
    if config.audio_dir:
        return scan_audio_dir(Path(config.audio_dir))
    assert config.wav_scp is not None
    items = parse_wav_scp(Path(config.wav_scp))
    if config.segments:
        items = apply_segments(Path(config.segments), items)
    return items


def speaker_files(config: ExtractConfig) -> list[Path]:
    """--utt2spk, else the utt2spk (or spk2utt) beside --wav-scp."""
    if config.utt2spk:
        return [Path(p) for p in config.utt2spk]
    if config.wav_scp:
        for name in ("utt2spk", "spk2utt"):
            candidate = Path(config.wav_scp).parent / name
            if candidate.is_file():
                return [candidate]
    return []


def speakers_of(config: ExtractConfig, utterances: list[str]) -> dict[str, str]:
    """utt -> speaker for every utterance; an error naming those without one."""
    separator = config.speaker_from_id
    files = speaker_files(config)
    if separator is None and config.audio_dir and not files:
        separator = "/"
    if separator:
        return {utt: utt.split(separator, 1)[0] for utt in utterances}
    mapping: dict[str, str] = {}
    for path in files:
        mapping.update(read_speaker_map(path))
    if not files and not config.unknown_speakers:
        raise ConfigError(
            "no speaker information: give --utt2spk, an utt2spk beside --wav-scp, or --speaker-from-id"
        )
    missing = [utt for utt in utterances if utt not in mapping]
    if missing and not config.unknown_speakers:
        names = ", ".join(str(p) for p in files)
        raise InputDataError(names, f"no speaker for {preview(missing)} utterance(s)")
    return {utt: mapping.get(utt, UNKNOWN_SPEAKER) for utt in utterances}


def input_files(config: ExtractConfig, items: dict[str, AudioItem]) -> list[list[Any]]:
    """[path, size, mtime_ns] of the lists and of every audio file: a rerun on changed inputs
    must not continue a partial corpus built from the old ones."""
    paths = {Path(p) for p in (config.wav_scp, config.segments) if p}
    paths |= set(speaker_files(config))
    paths |= {Path(item.source) for item in items.values() if not item.is_pipe}
    return [
        [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
        for path in sorted(paths)
        if path.is_file() and (stat := path.stat())
    ]
