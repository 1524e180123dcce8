"""Peer-toolkit row of the dev benchmark: SpeechBrain's own ECAPA-TDNN with its own AAM loss.

Trains ``speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN`` (C channels, 192-dim embeddings) and
its ``Classifier`` with ``LogSoftmaxWrapper(AdditiveAngularMargin(margin=0.2, scale=30))`` on the
``mfbe`` stream (80 log-mel, 100 Hz) of an e2espk HDF5 training corpus, read with e2espk's
``Corpus`` reader, then embeds every test utterance at full length and scores the trials with
cosine; EER and minDCF(p_target=0.01) come from ``e2espk.scoring.metrics``. Nothing of
SpeechBrain is copied here: it is imported at run time.

What is SpeechBrain's and what is ours (the SB VoxCeleb recipe ``train_ecapa_tdnn.yaml`` as the
reference; see benchmarks/devbench/PEER.md):

- model, classifier, loss, input normalisation (``InputNormalization(norm_type="sentence",
  std_norm=False)``: per-crop / per-utterance mean subtraction) and LR schedule
  (``CyclicLRScheduler``, triangular, stepped after every batch) are SpeechBrain's classes;
- Adam, weight decay 2e-6 and max LR 1e-3 as in the recipe; the recipe's 65,000-step half cycle
  is scaled to this run: one triangle over the whole run (base LR 1e-8 -> ``--lr`` at half
  way -> back to 1e-8 at the last step), so training ends at a low LR as the recipe's schedule
  does at each cycle's end;
- each epoch visits every training utterance once in a shuffled order with one random crop of
  ``--crop-seconds`` (the recipe: 3 s random chunks); shorter utterances are zero-padded and
  passed with SB's relative lengths, which mask the padding in the normalisation and pooling;
- no augmentation (the recipe adds noise, reverb, speed and drop on the waveform; our features
  are precomputed), no score normalisation.

Install (CPU; keeps the system torch 2.13.0+cpu: the venv sees it through system site-packages;
``benchmarks/devbench/setup_peer_venv.sh`` runs exactly these lines)::

    python -m venv --system-site-packages $HOME/.venvs/e2espk-peer
    $HOME/.venvs/e2espk-peer/bin/pip install --no-deps speechbrain==1.1.2 torchaudio==2.11.1
    $HOME/.venvs/e2espk-peer/bin/pip install hyperpyyaml sentencepiece huggingface_hub
    rm -f $HOME/.venvs/e2espk-peer/lib/python3.11/site-packages/torchaudio/lib/*.so

SpeechBrain imports torchaudio at module level (``speechbrain.nnet.CNN``, its audio-backend
check) but the modules used here never call into it. PyPI's torchaudio wheels are CUDA builds
whose compiled extension fails to load beside a CPU torch (``libc10_cuda.so`` missing), and
``import torchaudio`` raises; without the extension files torchaudio takes its own
"extension not found" path and imports as pure Python.

Run::

    $HOME/.venvs/e2espk-peer/bin/python benchmarks/devbench/peer_speechbrain.py \\
        --train-hdf dev_train.hdf --test-hdf dev_test.hdf --trials trials/test.txt \\
        --out peer_speechbrain.json [--epochs 20 --channels 128 --batch-size 64 \\
        --crop-seconds 2 --lr 0.001 --threads 2 --seed 0]

Without ``--trials`` the trials are built from the test corpus's speakers as ``eval.py`` builds
them (all target pairs, 3 non-target pairs per target pair, ``--seed``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # this checkout's e2espk, whatever is pip-installed

from e2espk.data.corpus import Corpus  # noqa: E402
from e2espk.scoring.metrics import compute_eer, compute_min_dcf  # noqa: E402
from e2espk.scoring.trials import Trials, build_trials, read_trials  # noqa: E402

STREAM = "mfbe"
BASE_LR = 1e-8  # CyclicLRScheduler base_lr of the SB recipe
WEIGHT_DECAY = 2e-6  # Adam weight_decay of the SB recipe


def import_speechbrain() -> dict[str, Any]:
    """SpeechBrain's classes used here; a clear message when the venv is not set up."""
    try:
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
        from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
        from speechbrain.nnet.schedulers import CyclicLRScheduler
        from speechbrain.processing.features import InputNormalization
    except ImportError as error:
        sys.exit(
            f"cannot import speechbrain ({error}); set up the venv described in "
            "benchmarks/devbench/PEER.md (bash benchmarks/devbench/setup_peer_venv.sh) "
            "and run this script with its python"
        )
    return {
        "ECAPA_TDNN": ECAPA_TDNN,
        "Classifier": Classifier,
        "AdditiveAngularMargin": AdditiveAngularMargin,
        "LogSoftmaxWrapper": LogSoftmaxWrapper,
        "CyclicLRScheduler": CyclicLRScheduler,
        "InputNormalization": InputNormalization,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-hdf", required=True, type=Path)
    parser.add_argument("--test-hdf", required=True, type=Path)
    parser.add_argument("--trials", type=Path, help="Kaldi/VoxCeleb trial list (default: built)")
    parser.add_argument("--out", required=True, type=Path, help="result JSON")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--channels", type=int, default=128, help="C: channels [C,C,C,C,3C]")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--crop-seconds", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=0.001, help="max LR of the cyclic schedule")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads; 1 is several times faster while other jobs load the 2 cores (PEER.md)",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def read_crops(
    corpus: Corpus, rows: np.ndarray, crop: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random ``crop``-frame mfbe crops and SB relative lengths (1.0 = full crop)."""
    frames = corpus.frames(STREAM)
    dims = corpus.streams[STREAM].dims[0]
    batch = np.zeros((len(rows), crop, dims), dtype=np.float32)
    lengths = np.ones(len(rows), dtype=np.float32)
    for i, row in enumerate(rows.tolist()):
        total = int(frames[row])
        if total > crop:
            start = int(rng.integers(0, total - crop + 1))
            batch[i] = corpus.read(row, STREAM, start, start + crop)
        else:
            batch[i, :total] = corpus.read(row, STREAM)
            lengths[i] = total / crop
    return torch.from_numpy(batch), torch.from_numpy(lengths)


def resolve_trials(args: argparse.Namespace, corpus: Corpus) -> Trials:
    if args.trials is None:
        speakers = corpus.speakers[corpus.speaker_of].tolist()
        return build_trials(corpus.utterances.tolist(), speakers, 3.0, None, args.seed)
    trials = read_trials(args.trials)
    if trials.labels is None:
        sys.exit(f"{args.trials}: unlabelled trials; EER needs target/nontarget labels")
    missing = trials.utterances() - set(corpus.utterances.tolist())
    if missing:
        sys.exit(f"{len(missing)} trial utterances are not in {args.test_hdf}, e.g. {min(missing)}")
    return trials


def versions(sb: dict[str, Any]) -> dict[str, str]:
    import speechbrain

    import e2espk

    try:
        import torchaudio

        torchaudio_version = torchaudio.__version__
    except ImportError:
        torchaudio_version = "absent"
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "speechbrain": speechbrain.__version__,
        "torch": torch.__version__,
        "torchaudio": torchaudio_version,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "e2espk": e2espk.__version__,
        "e2espk_commit": commit,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sb = import_speechbrain()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()

    train = Corpus(args.train_hdf)
    spec = train.require_stream(STREAM)
    n_mels = spec.dims[0]
    crop = round(args.crop_seconds * (spec.frame_rate_hz or 100.0))
    labels = torch.from_numpy(train.speaker_of.astype(np.int64))
    n_speakers = len(train.speakers)
    n_utts = len(train)

    channels = [args.channels] * 4 + [3 * args.channels]
    model = sb["ECAPA_TDNN"](n_mels, channels=channels, lin_neurons=192)
    classifier = sb["Classifier"](input_size=192, out_neurons=n_speakers)
    normalize = sb["InputNormalization"](norm_type="sentence", std_norm=False)
    loss_fn = sb["LogSoftmaxWrapper"](sb["AdditiveAngularMargin"](margin=0.2, scale=30))
    params = list(model.parameters()) + list(classifier.parameters())
    optimizer = torch.optim.Adam(params, lr=BASE_LR, weight_decay=WEIGHT_DECAY)
    batches_per_epoch = sum(
        1 for s in range(0, n_utts, args.batch_size) if min(args.batch_size, n_utts - s) >= 2
    )
    total_steps = batches_per_epoch * args.epochs
    scheduler = sb["CyclicLRScheduler"](
        base_lr=BASE_LR, max_lr=args.lr, step_size=max(1, total_steps / 2)
    )
    n_params = sum(p.numel() for p in model.parameters())
    n_params_cls = sum(p.numel() for p in classifier.parameters())
    print(
        f"train {args.train_hdf}: {n_utts} utterances, {n_speakers} speakers, crops {crop} frames; "
        f"SB ECAPA_TDNN C={args.channels}: {n_params:,} params (+{n_params_cls:,} classifier); "
        f"{batches_per_epoch} batches/epoch x {args.epochs} epochs",
        flush=True,
    )

    history = []
    train_started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        classifier.train()
        t0 = time.perf_counter()
        order = rng.permutation(n_utts)
        loss_sum, correct, seen = 0.0, 0, 0
        for start in range(0, n_utts, args.batch_size):
            rows = order[start : start + args.batch_size]
            if len(rows) < 2:  # BatchNorm over the pooled statistics needs 2 examples
                continue
            feats, lengths = read_crops(train, rows, crop, rng)
            feats = normalize(feats, lengths)
            embeddings = model(feats, lengths)
            outputs = classifier(embeddings)  # [B, 1, speakers] cosines
            targets = labels[torch.from_numpy(rows)].unsqueeze(1)
            loss = loss_fn(outputs, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.on_batch_end(optimizer)
            loss_sum += float(loss.detach()) * len(rows)
            correct += int((outputs.squeeze(1).argmax(1) == targets.squeeze(1)).sum())
            seen += len(rows)
        seconds = time.perf_counter() - t0
        record = {
            "epoch": epoch,
            "loss": loss_sum / seen,
            "train_acc": correct / seen,
            "lr_end": optimizer.param_groups[0]["lr"],
            "seconds": seconds,
            "load_1min": os.getloadavg()[0],  # > threads: other jobs shared the CPUs
        }
        history.append(record)
        print(
            f"epoch {epoch:3d}  loss {record['loss']:.3f}  acc {record['train_acc']:.3f}  "
            f"lr {record['lr_end']:.2e}  {seconds:.1f} s  (load {record['load_1min']:.1f})",
            flush=True,
        )
    train_seconds = time.perf_counter() - train_started

    test = Corpus(args.test_hdf)
    test.require_stream(STREAM)
    trials = resolve_trials(args, test)
    assert trials.labels is not None
    model.eval()
    t0 = time.perf_counter()
    needed = sorted(trials.utterances())
    embeddings: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for utt in needed:
            feats = torch.from_numpy(test.read(test.utterance_row(utt), STREAM)).float()[None]
            lengths = torch.ones(1)
            emb = model(normalize(feats, lengths), lengths).reshape(-1)
            embeddings[utt] = torch.nn.functional.normalize(emb, dim=0).numpy()
    scores = np.array(
        [
            float(embeddings[a] @ embeddings[b])
            for a, b in zip(trials.enroll, trials.test, strict=True)
        ]
    )
    embed_seconds = time.perf_counter() - t0
    eer = compute_eer(scores, trials.labels)
    min_dcf = compute_min_dcf(scores, trials.labels, p_target=0.01)

    epoch_seconds = [r["seconds"] for r in history]
    result = {
        "system": "speechbrain ECAPA_TDNN + Classifier + LogSoftmaxWrapper(AAM m=0.2 s=30)",
        "eer": eer,
        "min_dcf_p0.01": min_dcf,
        "n_trials": len(trials),
        "n_target": int(trials.labels.sum()),
        "n_test_utterances": len(needed),
        "params_embedding": n_params,
        "params_classifier": n_params_cls,
        "epochs": args.epochs,
        "seconds_total": time.perf_counter() - started,
        "seconds_train": train_seconds,
        "seconds_per_epoch_median": float(np.median(epoch_seconds)) if epoch_seconds else None,
        "seconds_embed_score": embed_seconds,
        "config": {
            "train_hdf": str(args.train_hdf),
            "test_hdf": str(args.test_hdf),
            "trials": str(args.trials) if args.trials else "built from test speakers (3:1, seed)",
            "stream": STREAM,
            "channels": channels,
            "lin_neurons": 192,
            "batch_size": args.batch_size,
            "crop_frames": crop,
            "optimizer": f"Adam weight_decay={WEIGHT_DECAY}",
            "lr_schedule": (
                f"speechbrain CyclicLRScheduler triangular base_lr={BASE_LR} max_lr={args.lr} "
                f"step_size={max(1, total_steps / 2)} (one cycle over {total_steps} steps)"
            ),
            "input_norm": "speechbrain InputNormalization(sentence, std_norm=False)",
            "threads": args.threads,
            "seed": args.seed,
            "n_train_utterances": n_utts,
            "n_train_speakers": n_speakers,
        },
        "history": history,
        "versions": versions(sb),
        "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"peer speechbrain ECAPA C={args.channels} ({n_params / 1e6:.2f} M params): "
        f"EER {100 * eer:.2f} %  minDCF@0.01 {min_dcf:.3f}  on {len(trials)} trials; "
        f"{args.epochs} epochs, {np.median(epoch_seconds) if epoch_seconds else math.nan:.1f} "
        f"s/epoch, {time.perf_counter() - started:.0f} s total -> {args.out}",
        flush=True,
    )


if __name__ == "__main__":
    main()
