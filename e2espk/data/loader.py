"""Training batches from a corpus: P speakers x K utterances, time-aligned random crops.

Crop positions are drawn by the batch sampler (a seed per item), not inside the workers, so a
run is reproducible whatever ``--workers`` is, and resuming at an epoch boundary replays the
same batches. Each worker opens its own HDF5 handle lazily (``Corpus`` drops it on pickling).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from e2espk.data import augment as augmentation
from e2espk.data import transforms
from e2espk.data.augment import AugmentConfig
from e2espk.data.corpus import PTM_KIND, Corpus
from e2espk.data.features import InputLayout
from e2espk.data.speaker_perturb import (
    IDENTITY,
    CopyWarp,
    SpeakerPerturbation,
    shift_log_f0,
    stretch_time,
    warp_log_mel,
)
from e2espk.data.validation import require_finite
from e2espk.errors import ConfigError

CropRequest = tuple[int, int]  # (row in the corpus, seed of the crop position)


def utterance_seconds(corpus: Corpus, layout: InputLayout, row: int) -> float:
    """Duration of an utterance: the shortest of its time-axis streams."""
    spans = [
        corpus.frames(name)[row] / corpus.streams[name].frame_rate_hz
        for name in layout.streams()
        if corpus.streams[name].time_axis
    ]
    return float(min(spans)) if spans else 0.0


class CropDataset(Dataset):
    """One item = the same time span cut from every stream the model reads.

    Args:
        corpus: the training corpus (pickled to workers without its handle).
        layout: which streams and dims the model reads.
        crop_seconds: span of every crop; shorter utterances are repeat-padded.
        cmvn: per-crop normalisation of the handcrafted frames (``transforms.Normalization``,
            or a bare 'none' / 'mean' / 'meanvar' for every stream).
        augment: augmentation of the crops (``e2espk.data.augment``), drawn from the crop's
            seed; None (or all off) for plain crops.
        perturb: speaker augmentation (``e2espk.data.speaker_perturb``): rows past the corpus
            are speed-perturbed copies labelled as new speakers; None for none.
    """

    def __init__(
        self,
        corpus: Corpus,
        layout: InputLayout,
        crop_seconds: float,
        cmvn: str | transforms.Normalization = "mean",
        augment: AugmentConfig | None = None,
        perturb: SpeakerPerturbation | None = None,
    ) -> None:
        self.corpus = corpus
        self.layout = layout
        self.crop_seconds = crop_seconds
        self.normalization = transforms.as_normalization(cmvn)
        unknown = [
            name
            for name in self.normalization.skip
            if name not in corpus.streams and name not in transforms.ABSOLUTE_STREAMS
        ]
        if unknown:  # a misspelt stream would otherwise be normalised without a word
            raise ConfigError(
                f"--cmvn-skip-streams {' '.join(unknown)}: {corpus.path} has no such stream "
                f"(its streams: {', '.join(sorted(corpus.streams))})"
            )
        self.augment = augment if augment is not None and augment.enabled else None
        self.perturb = perturb or SpeakerPerturbation()
        pitch = corpus.streams["pitch"] if "pitch" in layout.handcrafted_streams else None
        self.perturb.validate(layout.handcrafted_streams, pitch.dims[0] if pitch else None)
        self.columns = transforms.concatenated_columns(
            layout.handcrafted_streams,
            [corpus.streams[name].dims[0] for name in layout.handcrafted_streams],
        )

    def __len__(self) -> int:
        return len(self.corpus) * self.perturb.copies

    def __getitem__(self, request: CropRequest) -> dict[str, np.ndarray | int]:
        virtual_row, seed = request
        copy, row = divmod(virtual_row, len(self.corpus))
        warp = self.perturb.warp(copy)
        span = self.crop_seconds * warp.time  # stored seconds that become crop_seconds
        rng = np.random.default_rng(seed)
        slack = max(utterance_seconds(self.corpus, self.layout, row) - span, 0.0)
        start_s = float(rng.uniform(0.0, slack)) if slack > 0 else 0.0
        label = int(self.corpus.speaker_of[row]) + copy * len(self.corpus.speakers)
        item: dict[str, np.ndarray | int] = {"label": label, "row": row}
        if self.layout.uses_ptm:
            item["ptm"] = self._read(row, PTM_KIND, start_s, span)  # masked in the PtmEncoder
        if self.layout.uses_handcrafted:
            item["handcrafted"] = self._handcrafted(row, start_s, seed, warp)
        return item

    def _handcrafted(
        self, row: int, start_s: float, seed: int, warp: CopyWarp = IDENTITY
    ) -> np.ndarray:
        """The concatenated handcrafted crop ``(T, F)``: warp, mix, gain and tilt, CMN, masks."""
        span = self.crop_seconds * warp.time
        parts = [self._read(row, name, start_s, span) for name in self.layout.handcrafted_streams]
        if not warp.identity:
            parts = [
                self._perturb_values(name, part, warp)
                for name, part in zip(self.layout.handcrafted_streams, parts, strict=True)
            ]
        frames = np.concatenate(parts, axis=1).astype(np.float32, copy=False)
        aug = self.augment
        if aug is None:
            return self.normalization.apply(frames, self.columns)
        frames = self._mix(row, frames, augmentation.stage_rng(seed, augmentation.MIX))
        rng = augmentation.stage_rng(seed, augmentation.GAIN_TILT)
        frames = augmentation.level_log_mel(frames, self.columns, aug, rng)
        rng = augmentation.stage_rng(seed, augmentation.SPEC_MASKS)
        frames = self.normalization.apply(frames, self.columns)
        return augmentation.mask_spectral(frames, self.columns, aug, rng)

    def _perturb_values(self, stream: str, frames: np.ndarray, warp: CopyWarp) -> np.ndarray:
        """What a copy's warp does to a stream's values (time is done already)."""
        if stream == "mfbe" and warp.frequency != 1.0:
            return warp_log_mel(frames, warp.frequency, self.perturb.mel_hz)
        if stream == "pitch":
            return shift_log_f0(frames, warp.f0, self.perturb.log_f0_column)
        return frames

    def _mix(self, row: int, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """With --spec-mix-prob, add a random crop of another speaker's log-mel as noise."""
        assert self.augment is not None
        weight = augmentation.draw_mix_weight(rng, self.augment)
        log_mel = [n for n in self.columns if n in augmentation.LOG_MEL_STREAMS]
        offsets = self.corpus.speaker_offsets
        speaker = int(self.corpus.speaker_of[row])
        own = int(offsets[speaker + 1] - offsets[speaker])
        if weight is None or not log_mel or own == len(self.corpus):
            return frames
        other = int(rng.integers(len(self.corpus) - own))  # a row of another speaker
        other += own if other >= offsets[speaker] else 0
        slack = max(utterance_seconds(self.corpus, self.layout, other) - self.crop_seconds, 0.0)
        start_s = float(rng.uniform(0.0, slack)) if slack > 0 else 0.0
        for name in log_mel:
            noise = self._read(other, name, start_s)
            frames = augmentation.mix_log_mel(frames, noise, weight, self.columns[name])
        return frames

    def _read(
        self, row: int, stream: str, start_s: float, span_s: float | None = None
    ) -> np.ndarray:
        """``span_s`` stored seconds from ``start_s`` (default the crop), as a crop-length array."""
        spec = self.corpus.streams[stream]
        utterance = str(self.corpus.utterances[row])
        if not spec.time_axis:
            return require_finite(
                self.corpus.read(row, stream), self.corpus.path, utterance, stream
            )
        rate = spec.frame_rate_hz or 1.0
        length = max(1, round(self.crop_seconds * rate))
        stored = max(1, round((span_s or self.crop_seconds) * rate))
        start = min(int(start_s * rate), max(int(self.corpus.frames(stream)[row]) - stored, 0))
        crop = self.corpus.read(row, stream, start, start + stored)
        crop = require_finite(crop, self.corpus.path, utterance, stream, start)
        return stretch_time(transforms.repeat_pad(crop, stored), length)


class SpeakerBatchSampler(Sampler[list[CropRequest]]):
    """Batches of P speakers x K utterances, so every batch holds same-speaker pairs.

    An epoch has ceil(utterances / batch_size) batches: speakers are visited in shuffled
    rounds and each speaker's utterances in a shuffled queue, so an epoch covers the corpus
    about once. Speakers with fewer than K utterances repeat some (with other crops).

    Hard speaker groups (``set_neighbours``, hard prototype mining as in Thienpondt et al.,
    IDLab VoxSRC-20): each batch is then made of groups of ``group_size`` speakers, an anchor
    from the shuffled round and ``group_size - 1`` speakers drawn from the anchor's most
    similar ones, so the margin loss and the pair loss meet the confusable speakers together
    instead of a random few of hundreds. Neighbours are given per epoch (from the model), so
    a run resumed at an epoch boundary replays the same batches.
    """

    def __init__(
        self, speaker_offsets: np.ndarray, batch_size: int, utts_per_speaker: int, seed: int = 0
    ) -> None:
        n_speakers = len(speaker_offsets) - 1
        if utts_per_speaker < 2:
            raise ConfigError(
                "--utts-per-speaker must be >= 2 so that batches hold same-speaker pairs"
            )
        if batch_size % utts_per_speaker:
            raise ConfigError(
                f"--batch-size {batch_size} must be a multiple of --utts-per-speaker {utts_per_speaker}"
            )
        self.speakers_per_batch = batch_size // utts_per_speaker
        if not 2 <= self.speakers_per_batch <= n_speakers:
            raise ConfigError(
                f"a batch of {batch_size} with {utts_per_speaker} utterances per speaker takes "
                f"{self.speakers_per_batch} speakers; it must be between 2 and the {n_speakers} speakers in the corpus"
            )
        self.offsets = np.asarray(speaker_offsets)
        self.batch_size = batch_size
        self.utts_per_speaker = utts_per_speaker
        self.seed = seed
        self.epoch = 0
        self.neighbours: np.ndarray | None = None  # (speakers, pool) most similar first
        self.group_size = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_neighbours(self, neighbours: np.ndarray | None, group_size: int) -> None:
        """Draw batches as groups of similar speakers (None or ``group_size`` 1: random)."""
        n_speakers = len(self.offsets) - 1
        if neighbours is not None and (neighbours.ndim != 2 or len(neighbours) != n_speakers):
            raise ValueError(f"neighbours must be ({n_speakers}, pool), got {neighbours.shape}")
        self.neighbours, self.group_size = neighbours, max(1, int(group_size))

    def _grouped(self, anchors: list[int], rng: np.random.Generator) -> tuple[list[int], int]:
        """Up to ``speakers_per_batch`` distinct speakers, each anchor with similar speakers,
        and how many anchors that used."""
        assert self.neighbours is not None
        chosen: list[int] = []
        taken: set[int] = set()
        used = 0
        for anchor in anchors:
            if len(chosen) == self.speakers_per_batch:
                break
            used += 1
            if anchor in taken:
                continue
            group = [anchor]
            pool = [int(n) for n in self.neighbours[anchor] if n not in taken and n != anchor]
            room = min(self.group_size, self.speakers_per_batch - len(chosen)) - 1
            if pool and room > 0:
                group += rng.choice(pool, min(room, len(pool)), replace=False).tolist()
            chosen += group
            taken.update(group)
        return chosen, used

    def __len__(self) -> int:
        return math.ceil(int(self.offsets[-1]) / self.batch_size)

    def __iter__(self) -> Iterator[list[CropRequest]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n_speakers = len(self.offsets) - 1
        queues: dict[int, list[int]] = {}
        speaker_order: list[int] = []
        for _ in range(len(self)):
            while len(speaker_order) < self.speakers_per_batch:
                speaker_order.extend(rng.permutation(n_speakers).tolist())
            if self.neighbours is not None and self.group_size > 1:
                chosen, used = self._grouped(speaker_order, rng)
                speaker_order = speaker_order[used:]
                if len(chosen) < self.speakers_per_batch:  # the round ran dry: fill at random
                    rest = np.setdiff1d(np.arange(n_speakers), chosen)
                    need = self.speakers_per_batch - len(chosen)
                    chosen += rng.choice(rest, need, replace=False).tolist()
            else:
                chosen, speaker_order = (
                    speaker_order[: self.speakers_per_batch],
                    speaker_order[self.speakers_per_batch :],
                )
            if len(set(chosen)) < len(
                chosen
            ):  # a round boundary repeated a speaker: redraw distinct ones
                chosen = rng.choice(n_speakers, self.speakers_per_batch, replace=False).tolist()
            batch = []
            for speaker in chosen:
                for _ in range(self.utts_per_speaker):
                    queue = queues.get(speaker)
                    if not queue:
                        first, stop = int(self.offsets[speaker]), int(self.offsets[speaker + 1])
                        queue = queues[speaker] = (first + rng.permutation(stop - first)).tolist()
                    batch.append((queue.pop(), int(rng.integers(2**31))))
            yield batch


def collate(items: list[dict[str, np.ndarray | int]]) -> dict[str, torch.Tensor]:
    """Stack items; PTM stays in its stored dtype (float16) until it reaches the device."""
    batch: dict[str, torch.Tensor] = {
        key: torch.from_numpy(np.stack([item[key] for item in items]))
        for key in ("ptm", "handcrafted")
        if key in items[0]
    }
    batch["label"] = torch.tensor([item["label"] for item in items], dtype=torch.long)
    batch["row"] = torch.tensor([item["row"] for item in items], dtype=torch.long)
    return batch


def _open_in_worker(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    if info is not None:
        info.dataset.corpus.close()  # type: ignore[attr-defined]  # never share a parent's handle


def training_loader(
    dataset: CropDataset,
    sampler: SpeakerBatchSampler,
    workers: int,
    pin_memory: bool = False,
    batches: Sampler[list[CropRequest]] | None = None,
) -> DataLoader:
    """A DataLoader over ``dataset`` driven by ``sampler``, one lazily opened handle per worker.

    ``batches``: what the loader loads of ``sampler``'s batches (default: all of them; with
    several ranks, this rank's slice of each, ``e2espk.distributed.sharding.RankSlice``).

    The loader draws its worker base seed from its own generator, not from torch's global RNG:
    with persistent workers that draw happens only in the first epoch, so a run resumed later
    would otherwise consume one number fewer than an uninterrupted one, and dropout diverges.
    (Crops are seeded by the sampler, so the worker seeds matter to nothing else.)
    """
    return DataLoader(
        dataset,
        batch_sampler=sampler if batches is None else batches,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        worker_init_fn=_open_in_worker if workers > 0 else None,
        prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator().manual_seed(sampler.seed),
    )
