"""ExtractConfig: the options of ``data_prep.py extract`` (the field help is the documentation).

The output options (split, file names, compression, chunking) are packing's own part,
:class:`e2espk.data.pack_config.OutputOptions`: the same flags, checks and splitters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from e2espk.config import config_to_dict, from_flat, option, option_names, part
from e2espk.data.corpus import PTM_KIND
from e2espk.data.pack_config import OutputOptions
from e2espk.errors import ConfigError
from e2espk.extract.handcrafted import HANDCRAFTED
from e2espk.slurm_resources import ArrayTaskResources


@dataclasses.dataclass
class SlurmArrayOptions:
    """Where the shards of ``--slurm-array`` run: one Slurm array task per shard (submitit).

    The resource names are those of ``hp_search_slurm.py`` (same meaning, same checks against
    ``sinfo``); each task is one single-task job, so ``--gpus-per-node`` is its GPUs.
    """

    slurm_array: int = option(
        0,
        help="shard the utterances into N Slurm array tasks, then join the shard corpora into the usual output (0: extract here)",
    )
    resources: ArrayTaskResources = part(
        ArrayTaskResources, "Slurm resources of each array task (one task per job)"
    )
    slurm_retries: int = option(
        2,
        help="resubmissions of a failed shard task (alone, as a new job that continues the shard) before the command fails",
    )
    poll_seconds: float = option(10.0, help="seconds between checks of the array tasks")

    def check(self) -> None:
        if self.slurm_array < 0 or self.slurm_retries < 0 or self.resources.max_requeues < 0:
            raise ConfigError("--slurm-array, --slurm-retries and --max-requeues must be >= 0")
        default = config_to_dict(SlurmArrayOptions())
        given = [
            "--" + name.replace("_", "-")
            for name, value in config_to_dict(self).items()
            if value != default[name]
        ]
        if given and not self.slurm_array:
            raise ConfigError(f"{', '.join(given)}: only with --slurm-array N (Slurm array tasks)")


VOLATILE_FIELDS = (
    "overwrite", "progress", "restart", "device", "skip_bad", "workers",
    *option_names(SlurmArrayOptions),
)  # fmt: skip  # same corpus


def stream_names() -> list[str]:
    return [PTM_KIND, *HANDCRAFTED.names()]


@dataclasses.dataclass
class ExtractConfig:
    """Options of ``data_prep.py extract``: audio -> features -> an e2espk corpus."""

    # audio input: a Kaldi wav.scp (optionally with segments) or a directory tree
    wav_scp: str | None = option(
        None, help="Kaldi wav.scp: '<recording> <path>' or '<recording> <command> |' lines"
    )
    segments: str | None = option(
        None, help="Kaldi segments file '<utt> <recording> <start> <end>' over --wav-scp"
    )
    audio_dir: str | None = option(
        None,
        help="directory tree of .wav/.flac files; utterance id = relative path without suffix",
    )
    utt2spk: list[str] = option(
        default_factory=list,
        help="speaker maps (utt2spk, spk2utt or .pt dict); default: the utt2spk beside --wav-scp",
    )
    speaker_from_id: str | None = option(
        None,
        help="take the speaker as the part of the id before this separator (default '/' with --audio-dir)",
    )
    unknown_speakers: bool = option(
        False, help="utterances without a speaker get speaker 'unknown' (blind test data)"
    )
    channel: int = option(-1, help="audio channel to use; -1 averages all channels")
    # features
    streams: list[str] = option(
        default_factory=lambda: ["mfbe", "pitch"],
        choices=stream_names(),
        help="streams to extract: ptm (model hidden states), mfbe (80 log-mel), mfcc (40 hires), pitch (log F0 + voicing)",
    )
    ptm_model: str | None = option(
        None,
        help="PTM for the ptm stream: a local directory or a model id in the local HF cache (never downloaded)",
    )
    ptm_layers: str | None = option(
        None, help="hidden states to keep, e.g. '0-12' or '0,6,12' (default: all)"
    )
    ptm_dtype: str = option(
        "float16", choices=["float16", "float32"], help="stored dtype of the PTM stream"
    )
    ptm_batch_seconds: float | None = option(
        None,
        help="padded audio seconds per PTM batch; 0: one utterance at a time. Default: 120 on CUDA (lower it when memory runs out), 0 on CPU, where padded batches measured 1.5x slower (benchmarks/bench_extract.py)",
    )
    bucket_window: int = option(
        256, help="utterances read at a time and sorted by length into PTM batches"
    )
    workers: int = option(
        0,
        help="processes that decode audio and compute the handcrafted streams (0: the main one); use them on a GPU, where the CPU work sets the pace",
    )
    device: str = option(
        "auto", help="torch device of the PTM: auto (cuda if present), cpu, cuda:N"
    )
    output: OutputOptions = part(
        OutputOptions, "where the corpus is written, as in packing: split, files, HDF5 layout"
    )
    skip_bad: bool = option(
        False,
        help="skip undecodable or too short utterances (listed in the report) instead of failing",
    )
    restart: bool = option(
        False, help="discard the partial files of an interrupted run instead of continuing it"
    )
    progress: bool = option(True, help="show a progress bar")
    slurm: SlurmArrayOptions = part(
        SlurmArrayOptions,
        "scale-out: shards as a Slurm job array, joined into the same corpus as a serial run",
    )

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> ExtractConfig:
        """An ExtractConfig from flat ``option: value`` pairs (flag names, config-file keys),
        the output and Slurm options included; options left out keep their defaults."""
        return from_flat(cls, values)

    def __post_init__(self) -> None:
        for name in self.streams:
            if name not in stream_names():
                raise ConfigError(
                    f"unknown stream {name!r}; choose from: {', '.join(stream_names())}"
                )
        if len(set(self.streams)) != len(self.streams):
            raise ConfigError(f"--streams lists a stream twice: {self.streams}")

    def check(self) -> None:
        """Option combinations, before any audio is read."""
        if (self.wav_scp is None) == (self.audio_dir is None):
            raise ConfigError("give exactly one audio input: --wav-scp or --audio-dir")
        if self.segments and not self.wav_scp:
            raise ConfigError("--segments needs --wav-scp")
        if PTM_KIND in self.streams and not self.ptm_model:
            raise ConfigError("--streams ptm needs --ptm-model (a local model directory)")
        if self.ptm_model and PTM_KIND not in self.streams:
            raise ConfigError("--ptm-model given but 'ptm' is not in --streams")
        if (self.ptm_batch_seconds or 0) < 0 or self.bucket_window < 1 or self.workers < 0:
            raise ConfigError(
                "--ptm-batch-seconds must be >= 0, --bucket-window >= 1 and --workers >= 0"
            )
        self.slurm.check()
        self.output.check_layout()

    def handcrafted(self) -> list[str]:
        return [name for name in self.streams if name != PTM_KIND]
