"""The parallel phases: synthesis (per speaker), then channel + features (per utterance).

Phase 1 writes clean, speaker-perturbed 16 kHz speech to ``DIR/work/clean/<index>.npy``
(int16); phase 2 reads it (and the babble sources), applies the session channel, extracts the
four streams and writes ``DIR/work/feats/<stream>/<split>/<speaker>/<utt>.npy``: the ``files``
layout that ``data_prep.py`` reads (utterance id = relative path). Workers are plain processes
(``multiprocessing.Pool``), one torch thread each.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from . import channel as C
from . import features as F
from . import voices as V
from .plan import Plan, Utt, hash_name

STREAMS = ("ptm", "mfbe", "mfcc", "pitch")
_STATE: dict = {}


def _init(state: dict) -> None:
    import torch

    torch.set_num_threads(1)
    _STATE.clear()
    _STATE.update(state)


def run_pool(fn: Callable, items: list, jobs: int, desc: str, state: dict) -> list:
    """``fn`` over ``items`` in ``jobs`` processes (in-process for jobs=1), results in order."""
    if jobs <= 1:
        _init(state)
        return [fn(it) for it in tqdm(items, desc=desc, mininterval=5)]
    ctx = mp.get_context("fork")
    with ctx.Pool(jobs, initializer=_init, initargs=(state,)) as pool:
        it: Iterable = pool.imap(fn, items, chunksize=1)
        return list(tqdm(it, total=len(items), desc=desc, mininterval=5))


def clean_path(work: Path, index: int) -> Path:
    return work / "clean" / f"{index:06d}.npy"


def synth_speaker(args: tuple[V.Speaker, list[Utt]]) -> list[float]:
    """Phase 1 task: all utterances of one speaker; returns their durations in seconds."""
    spk, utts = args
    work: Path = _STATE["work"]
    rng = np.random.default_rng([_STATE["seed"], 4, hash_name(spk.name)])
    wavs = V.synthesize_speaker(spk, [u.text for u in utts], [u.jitter for u in utts], rng)
    for u, w in zip(utts, wavs, strict=True):
        np.save(clean_path(work, u.index), np.round(w * 32767).astype(np.int16))
    return [len(w) / V.SR for w in wavs]


def _load_clean(work: Path, index: int) -> np.ndarray:
    return np.load(clean_path(work, index)).astype(np.float32) / 32767.0


def featurize(u: Utt) -> dict:
    """Phase 2 task: channel + features of one utterance; returns sizes and sanity statistics."""
    work: Path = _STATE["work"]
    plan: Plan = _STATE["plan"]
    if "enc" not in _STATE:
        _STATE["enc"] = F.VoiceEncoderLayers.load()
    ses = plan.sessions[u.speaker][u.session]
    rng = np.random.default_rng([plan.seed, 5, u.index])
    others = [_load_clean(work, i) for i in u.babble_from] if ses.noise == "babble" else []
    wav = C.apply(_load_clean(work, u.index), ses, others, rng)
    feats, info = F.extract_all(wav, _STATE["enc"], dvector=u.split != "train")  # sanity only
    for name in STREAMS:
        path = work / "feats" / name / u.split / f"{u.id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, feats[name])
    if u.id.endswith("-u00") and _STATE.get("samples"):  # one listening sample per speaker
        out = _STATE["samples"] / u.split / f"{u.id.replace('/', '_')}.flac"
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(out, wav, F.SR)
    info["id"] = u.id
    info["seconds"] = len(wav) / F.SR
    return info


def synthesize_all(plan: Plan, work: Path, jobs: int) -> dict[str, float]:
    (work / "clean").mkdir(parents=True, exist_ok=True)
    tasks = []
    for spks in plan.speakers.values():
        for spk in spks:
            tasks.append((spk, [u for u in plan.utts if u.speaker == spk.name]))
    # longest (festival: slowest engine) first for load balance
    tasks.sort(key=lambda t: (t[0].engine != "festival", t[0].name))
    durs = run_pool(synth_speaker, tasks, jobs, "synthesis", {"work": work, "seed": plan.seed})
    return {
        u.id: d
        for (_, utts), ds in zip(tasks, durs, strict=True)
        for u, d in zip(utts, ds, strict=True)
    }


def featurize_all(plan: Plan, work: Path, jobs: int, samples: Path | None) -> list[dict]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    state = {"work": work, "plan": plan, "samples": samples}
    return run_pool(featurize, plan.utts, jobs, "channel+features", state)
