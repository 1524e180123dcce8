"""Audio inputs: Kaldi ``wav.scp`` (files and ``cmd |`` pipes, optional ``segments``) or a
directory tree of wav/flac files, decoded to mono float32 and resampled to 16 kHz with soxr.

Every item knows where it came from (``where``), so a file that cannot be decoded is reported
by utterance id and path or command, never as a bare library traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import struct
import subprocess
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from e2espk.data.sources import _check_unique, _read_pairs
from e2espk.errors import InputDataError

LOG = logging.getLogger(__name__)
SAMPLE_RATE = 16000  # Hz: every stream is computed from 16 kHz audio
AUDIO_SUFFIXES = (".wav", ".flac")
PIPE_TIMEOUT_S = 600.0


class DecodeError(Exception):
    """One utterance's audio cannot be read; the pipeline reports (or skips) it by id."""


@dataclasses.dataclass(frozen=True)
class AudioItem:
    """One utterance: a file or a ``cmd |`` pipe, optionally a [start, end) span in seconds.

    Attributes:
        utterance: the utterance id.
        source: the path, or the shell command without its trailing ``|``.
        is_pipe: ``source`` is a command whose stdout is an audio file.
        start_s, end_s: the span of a Kaldi segment (end None: to the end of the recording).
    """

    utterance: str
    source: str
    is_pipe: bool = False
    start_s: float = 0.0
    end_s: float | None = None

    def where(self) -> str:
        """The path or command, for messages and reports."""
        return f"{self.source} |" if self.is_pipe else self.source


def parse_wav_scp(path: Path) -> dict[str, AudioItem]:
    """utt -> AudioItem from a Kaldi ``wav.scp`` (``<id> <path>`` or ``<id> <command> |``)."""
    if not path.is_file():
        raise InputDataError(path, "wav.scp not found")
    pairs = _read_pairs(path)
    _check_unique(path, (key for key, _ in pairs))
    items = {}
    for key, value in pairs:
        value = value.strip()
        if value.endswith("|"):
            items[key] = AudioItem(key, value[:-1].strip(), is_pipe=True)
        elif value.startswith("-") or value.rsplit(":", 1)[-1].isdigit():
            raise InputDataError(
                path,
                f"recording {key!r}: {value!r} (stdin or an ark offset) is not supported; "
                "give a file path or a 'command |' pipe",
            )
        else:
            items[key] = AudioItem(key, value)  # relative: to the working directory, as in Kaldi
    return items


def apply_segments(path: Path, recordings: dict[str, AudioItem]) -> dict[str, AudioItem]:
    """utt -> AudioItem of each line ``<utt> <recording> <start> <end>`` of a Kaldi ``segments``."""
    if not path.is_file():
        raise InputDataError(path, "segments file not found")
    items: dict[str, AudioItem] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (4, 5):
            raise InputDataError(
                path, f"line {number}: expected '<utt> <recording> <start> <end>', got {line!r}"
            )
        utt, recording = fields[0], fields[1]
        if recording not in recordings:
            raise InputDataError(path, f"line {number}: recording {recording!r} not in wav.scp")
        try:
            start, end = float(fields[2]), float(fields[3])
        except ValueError:
            raise InputDataError(path, f"line {number}: bad start/end in {line!r}") from None
        if start < 0 or (end >= 0 and end <= start):
            raise InputDataError(path, f"line {number}: empty span {start}..{end} of {utt!r}")
        if utt in items:
            raise InputDataError(path, f"line {number}: utterance {utt!r} listed twice")
        base = recordings[recording]
        items[utt] = dataclasses.replace(
            base, utterance=utt, start_s=start, end_s=end if end >= 0 else None
        )
    return items


def scan_audio_dir(root: Path, suffixes: Iterable[str] = AUDIO_SUFFIXES) -> dict[str, AudioItem]:
    """utt -> AudioItem of every wav/flac under ``root``; the id is the relative path without
    its suffix (``id10001/1zcIwhmdeo4/00001``, as VoxCeleb names its trials)."""
    if not root.is_dir():
        raise InputDataError(root, "audio directory not found")
    wanted = {s.lower() for s in suffixes}
    items: dict[str, AudioItem] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in wanted or not path.is_file():
            continue
        utt = path.relative_to(root).with_suffix("").as_posix()
        if utt in items:
            raise InputDataError(path, f"utterance {utt!r} also at {items[utt].source}")
        items[utt] = AudioItem(utt, str(path))
    if not items:
        raise InputDataError(root, f"no {'/'.join(sorted(wanted))} files found")
    return items


def _read_bytes(item: AudioItem) -> bytes | str:
    """The pipe's stdout, or the path itself for files (soundfile reads those directly)."""
    return _run_pipe(item.source) if item.is_pipe else item.source


@functools.lru_cache(maxsize=1)
def _run_pipe(command: str) -> bytes:
    """stdout of ``command``; the last one is kept, so the segments of one piped recording
    run its command once."""
    try:
        done = subprocess.run(
            command, shell=True, capture_output=True, timeout=PIPE_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise DecodeError(f"command did not finish within {PIPE_TIMEOUT_S:.0f}s") from None
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise DecodeError(f"command exited with status {done.returncode}: {' / '.join(tail)}")
    return fix_streamed_wav(done.stdout)


def fix_streamed_wav(data: bytes) -> bytes:
    """A WAV written to a pipe cannot seek back to fill in its sizes (sox, sph2pipe and others
    leave 0 or a guess there); set them to what arrived, as Kaldi's reader tolerates."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return data
    position = 12
    while position + 8 <= len(data):
        chunk, size = data[position : position + 4], struct.unpack_from("<I", data, position + 4)[0]
        if chunk == b"data":
            actual = len(data) - position - 8
            if size == 0 or size > actual:
                patched = bytearray(data)
                struct.pack_into("<I", patched, position + 4, actual)
                struct.pack_into("<I", patched, 4, len(data) - 8)
                return bytes(patched)
            return data
        position += 8 + size + (size & 1)
    return data


def decode(item: AudioItem, channel: int = -1) -> np.ndarray:
    """(samples,) float32 in [-1, 1] at 16 kHz: decoded, cut to the segment, mixed, resampled.

    Raises:
        DecodeError: naming what went wrong; the caller adds the utterance and path.
    """
    import soundfile
    import soxr

    data = _read_bytes(item)
    try:
        handle = soundfile.SoundFile(io.BytesIO(data) if isinstance(data, bytes) else data)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise DecodeError(f"cannot decode audio ({error})") from None
    with handle:
        rate = handle.samplerate
        start = round(item.start_s * rate)
        stop = None if item.end_s is None else round(item.end_s * rate)
        try:
            if start:
                handle.seek(start)
            frames = -1 if stop is None else max(stop - start, 0)
            audio = handle.read(frames, dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError) as error:
            raise DecodeError(f"cannot decode audio ({error})") from None
    if stop is not None and audio.shape[0] < stop - start - rate // 100:
        LOG.warning("%s: segment ends past the recording (%.2fs)", item.where(), item.end_s)
    if channel >= audio.shape[1]:
        raise DecodeError(f"--channel {channel}, but the audio has {audio.shape[1]} channel(s)")
    mono = audio.mean(axis=1) if channel < 0 else audio[:, channel]
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)
