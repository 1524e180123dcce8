#!/usr/bin/env python
"""Accuracy of e2espk on the demo corpus: trained systems vs mean-pooled raw-feature cosine.

    python benchmarks/demo_accuracy.py [--epochs N] [--out benchmarks/results/demo_accuracy.json]

Needs the demo corpus packed as scripts/demo.sh does, in /tmp/bench_demo/hdf (see
benchmarks/README.md). Trains with ``train(TrainConfig(...))`` -- one shared recipe -- the
modes ptm, handcrafted (mfbe_pitch) and fusion (concat, cross_attention, gating), and reports
validation EER / minDCF@0.01 of the cosine, learned-distance and fused scores at the best epoch
(picked by ``select_metric`` fused/eer, as train() does) and at the last epoch.

Baseline: cosine scoring of time-averaged raw features on exactly the trials train() builds
(``build_trials(utts, speakers, 3.0, 20000, seed)`` over the valid corpus), with the embeddings
mean-subtracted over the valid set: (a) log-mel, (b) log-mel + pitch, (c) all PTM layers
concatenated, (d) the best single PTM layer (chosen on the valid trials: optimistic).

Two diagnostic runs follow (``--no-diagnostic`` skips them): ptm with a 30x lr on the PTM
layer logits, and handcrafted with the default ``cmvn="mean"``. Findings: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without pip install -e
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from _bench_util import DEMO_HDF, REPO, environment, pct, setup_logging, table

from e2espk.data.corpus import Corpus
from e2espk.fileio import write_json_atomic
from e2espk.scoring.metrics import summarize
from e2espk.scoring.scores import cosine_scores
from e2espk.scoring.trials import build_trials
from e2espk.training import run_setup
from e2espk.training.config import TrainConfig
from e2espk.training.optim import LRSchedule
from e2espk.training.trainer import train

LOG = logging.getLogger("bench.demo_accuracy")
SCORES = ("cosine", "learned", "fused")
METRICS = ("eer", "min_dcf@0.01")
# name -> TrainConfig fields that differ between the systems; everything else is the recipe
SYSTEMS: dict[str, dict[str, Any]] = {
    "ptm": {"mode": "ptm"},
    "handcrafted": {"mode": "handcrafted", "feature_mode": "mfbe_pitch"},
    "fusion-concat": {"mode": "fusion", "feature_mode": "mfbe_pitch", "fusion": "concat"},
    "fusion-cross_attention": {
        "mode": "fusion",
        "feature_mode": "mfbe_pitch",
        "fusion": "cross_attention",
    },
    "fusion-gating": {"mode": "fusion", "feature_mode": "mfbe_pitch", "fusion": "gating"},
}


# ----------------------------------------------------------------------------- baseline
def valid_trials(corpus: Corpus, seed: int, ratio: float, max_target: int) -> Any:
    """The trial list train() builds over the valid corpus (same call, same arguments)."""
    utterances = corpus.utterances.tolist()
    speakers = corpus.speakers[corpus.speaker_of].tolist()
    return build_trials(utterances, speakers, ratio, max_target, seed)


def mean_pooled(corpus: Corpus, stream: str) -> np.ndarray:
    """(N, ...) time average of each utterance's stream, float64."""
    return np.stack(
        [corpus.read(row, stream).astype(np.float64).mean(axis=0) for row in range(len(corpus))]
    )


def cosine_metrics(
    embeddings: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """Cosine scoring after subtracting the valid-set mean embedding."""
    centred = embeddings - embeddings.mean(axis=0, keepdims=True)
    scores = cosine_scores(centred.astype(np.float32), idx_a, idx_b)
    return summarize(scores, labels, p_targets=(0.01, 0.05))


def run_baselines(valid_path: Path, seed: int) -> dict[str, Any]:
    corpus = Corpus(valid_path)
    trials = valid_trials(corpus, seed, 3.0, 20000)
    idx_a = np.array([corpus.utterance_row(u) for u in trials.enroll])
    idx_b = np.array([corpus.utterance_row(u) for u in trials.test])
    labels = np.asarray(trials.labels, dtype=bool)
    mfbe = mean_pooled(corpus, "mfbe")  # (N, 80)
    pitch = mean_pooled(corpus, "pitch")  # (N, 1) log-F0
    ptm = mean_pooled(corpus, "ptm")  # (N, 13, 64)
    per_layer = [
        cosine_metrics(ptm[:, layer], idx_a, idx_b, labels) for layer in range(ptm.shape[1])
    ]
    best_layer = int(np.argmin([m["eer"] for m in per_layer]))
    systems = {
        "baseline mfbe": cosine_metrics(mfbe, idx_a, idx_b, labels),
        "baseline mfbe+pitch": cosine_metrics(
            np.concatenate([mfbe, pitch], 1), idx_a, idx_b, labels
        ),
        "baseline PTM all layers": cosine_metrics(ptm.reshape(len(ptm), -1), idx_a, idx_b, labels),
        f"baseline PTM best layer ({best_layer})": per_layer[best_layer],
    }
    corpus.close()
    return {
        "trials": {
            "n": int(labels.size),
            "target": int(labels.sum()),
            "nontarget": int((~labels).sum()),
        },
        "utterances": len(corpus),
        "speakers": len(corpus.speakers),
        "systems": systems,
        "per_ptm_layer": per_layer,
        "best_ptm_layer": best_layer,
    }


# ----------------------------------------------------------------------------- training
def recipe(args: argparse.Namespace) -> dict[str, Any]:
    """The one recipe shared by every trained system (TrainConfig fields)."""
    return {
        "backbone": "ecapa_tdnn_tiny",
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "lr": args.lr,
        "warmup": args.warmup,
        "dropout_prob": args.dropout,
        "cmvn": args.cmvn,
        "seed": args.seed,
        "workers": 0,
        "progress": False,
        "select_metric": "fused/eer",
    }


def pick(entry: dict[str, Any]) -> dict[str, float]:
    return {f"{s}/{m}": entry[f"valid/{s}/{m}"] for s in SCORES for m in METRICS}


def train_system(
    name: str, overrides: dict[str, Any], shared: dict[str, Any], work: Path
) -> dict[str, Any]:
    config = TrainConfig.from_flat(
        {
            "train_hdf_file": str(DEMO_HDF / "demo_train.hdf"),
            "valid_hdf_file": str(DEMO_HDF / "demo_valid.hdf"),
            "checkpoint_path": str(work / name.replace(" ", "_").replace(",", "").replace(":", "")),
            **(shared | overrides),
        }
    )
    begin = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - begin
    history = result.history
    fused = [entry["valid/fused/eer"] for entry in history]
    best = int(np.argmin(fused))  # first minimum, as train() keeps it (strict <)
    if result.best_epoch != history[best]["epoch"]:
        LOG.warning("%s: train() best epoch %s != argmin %s", name, result.best_epoch, best)
    weights = result.model.ptm_layer_weights()
    gate = result.model.gate_statistics()
    out = {
        "config": {
            k: v for k, v in dataclasses.asdict(config).items() if k in {*shared, *overrides}
        },
        "train_seconds": seconds,
        "epochs_run": len(history),
        "steps": history[-1]["step"],
        "best_epoch": history[best]["epoch"],
        "best": pick(history[best]),
        "last": pick(history[-1]),
        "ptm_layer_weights": None if weights is None else [round(float(w), 4) for w in weights],
        "gate_statistics": gate,
        "curve": [
            {"epoch": e["epoch"], "train/loss": e.get("train/loss"), **pick(e)} for e in history
        ],
    }
    LOG.info(
        "%s: %.0f s, best epoch %d fused EER %s %%, last fused EER %s %%",
        name,
        seconds,
        out["best_epoch"],
        pct(out["best"]["fused/eer"]),
        pct(out["last"]["fused/eer"]),
    )
    return out


# ----------------------------------------------------------------------------- diagnostic
DIAGNOSTIC_LR_SCALE = 30.0


@contextlib.contextmanager
def layer_logit_lr(scale: float) -> Iterator[None]:
    """Diagnostic only, not a recipe: train() with the PTM layer logits in their own Adam
    param group at ``scale`` x the lr (no weight decay), by patching what training/run_setup.py calls.

    With one lr for everything, Adam moves each logit by at most ~lr per step, so in the ~320
    steps of a demo run the softmax layer weights stay near uniform; this shows what the
    change proposed in benchmarks/README.md would buy.
    """
    built: list[Any] = []
    build_model, optimizers, apply = (
        run_setup.build_speaker_model,
        run_setup.OPTIMIZERS,
        LRSchedule.apply,
    )

    def build(config: Any) -> Any:
        built.append(build_model(config))
        return built[-1]

    class Optimizers:
        def build(self, name: str, params: Any, **kwargs: Any) -> torch.optim.Optimizer:
            logits = {id(m.ptm_encoder.layer_logits) for m in built if m.ptm_encoder is not None}
            params = list(params)
            rest = [p for p in params if id(p) not in logits]
            optimizer = optimizers.build(name, params=rest, **kwargs)
            group = {"params": [p for p in params if id(p) in logits], "lr_scale": scale}
            optimizer.add_param_group(group | {"weight_decay": 0.0})
            return optimizer

    def scaled_apply(self: LRSchedule, step: int) -> float:
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    run_setup.build_speaker_model, run_setup.OPTIMIZERS = build, Optimizers()  # type: ignore[assignment]
    LRSchedule.apply = scaled_apply  # type: ignore[method-assign]
    try:
        yield
    finally:
        run_setup.build_speaker_model, run_setup.OPTIMIZERS = build_model, optimizers
        LRSchedule.apply = apply  # type: ignore[method-assign]


# name -> (TrainConfig overrides on top of the recipe, context to train in); not recipes
DIAGNOSTICS: dict[str, tuple[dict[str, Any], Any]] = {
    f"diag: ptm, layer-logit lr x{DIAGNOSTIC_LR_SCALE:g}": (
        SYSTEMS["ptm"],
        lambda: layer_logit_lr(DIAGNOSTIC_LR_SCALE),
    ),
    "diag: handcrafted, cmvn mean": (
        SYSTEMS["handcrafted"] | {"cmvn": "mean"},
        contextlib.nullcontext,
    ),
}


# ----------------------------------------------------------------------------- report
def markdown(results: dict[str, Any]) -> str:
    header = ["system", "epoch"] + [
        f"{s} {'EER %' if m == 'eer' else 'minDCF@0.01'}" for s in SCORES for m in METRICS
    ]
    rows = []
    for name, res in results["trained"].items():
        for which in ("best", "last"):
            epoch = res["best_epoch"] if which == "best" else res["epochs_run"] - 1
            values = res[which]
            rows.append(
                [f"{name} ({which})", str(epoch)]
                + [
                    pct(values[f"{s}/{m}"]) if m == "eer" else f"{values[f'{s}/{m}']:.3f}"
                    for s in SCORES
                    for m in METRICS
                ]
            )
    for name, metrics in results["baseline"]["systems"].items():
        rows.append(
            [name, "-", pct(metrics["eer"]), f"{metrics['min_dcf@0.01']:.3f}", "", "", "", ""]
        )
    trials = results["baseline"]["trials"]
    note = (
        f"\n\nValid: {results['baseline']['speakers']} speakers, {results['baseline']['utterances']} utterances, "
        f"{trials['n']} trials ({trials['target']} target). Baselines: cosine of time-averaged raw "
        "features, mean-subtracted over the valid set; the best PTM layer is picked on these very "
        "trials (optimistic for the baseline). One target trial is "
        f"{100 / trials['target']:.2f} % of the miss rate: EER differences of about a point are "
        "within the noise of this small trial list."
    )
    return table(header, rows) + note


def bar_chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, values, colours = [], [], []
    palette = {"cosine": "#4c72b0", "learned": "#dd8452", "fused": "#55a868"}
    for name, res in results["trained"].items():
        for score in SCORES:
            names.append(f"{name}\n{score}")
            values.append(100 * res["best"][f"{score}/eer"])
            colours.append(palette[score])
    for name, metrics in results["baseline"]["systems"].items():
        names.append(name.replace("baseline ", "baseline\n"))
        values.append(100 * metrics["eer"])
        colours.append("#8c8c8c")
    fig, ax = plt.subplots(figsize=(max(8.0, 0.55 * len(names)), 4.8))
    bars = ax.bar(range(len(names)), values, color=colours)
    ax.bar_label(bars, fmt="%.1f", fontsize=7)
    best_baseline = min(m["eer"] for m in results["baseline"]["systems"].values())
    ax.axhline(100 * best_baseline, color="#8c8c8c", linestyle="--", linewidth=0.8)
    ax.set_xticks(range(len(names)), names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("valid EER (%)  - lower is better")
    ax.set_title(
        f"e2espk demo corpus: best-epoch EER (ecapa_tdnn_tiny, {results['recipe']['epochs']} epochs) vs raw-feature cosine"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=40, help="epochs of every trained system")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak lr (TrainConfig default 1e-3)")
    parser.add_argument(
        "--warmup", type=int, default=20, help="warmup steps (TrainConfig default 100)"
    )
    parser.add_argument(
        "--dropout", type=float, default=0.1, help="dropout_prob (TrainConfig default 0)"
    )
    parser.add_argument(
        "--cmvn",
        default="none",
        help="per-crop normalisation of handcrafted frames (TrainConfig default 'mean')",
    )
    parser.add_argument(
        "--no-diagnostic",
        action="store_true",
        help="skip the diagnostic runs (ptm with 30x lr on the layer logits; handcrafted with cmvn mean)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (0: torch's default); 1 is faster when the CPUs are shared",
    )
    parser.add_argument(
        "--systems", nargs="+", choices=sorted(SYSTEMS), help="train only these (default all)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "benchmarks" / "results" / "demo_accuracy.json",
        help="results JSON; the PNG goes next to it",
    )
    parser.add_argument(
        "--keep-runs", type=Path, help="keep run directories here (default: a temp dir, deleted)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    logging.getLogger("e2espk").setLevel(logging.WARNING)
    args = parse_args(argv)
    for name in ("demo_train.hdf", "demo_valid.hdf"):
        if not (DEMO_HDF / name).exists():
            print(
                f"missing {DEMO_HDF / name}: build the demo corpus first (benchmarks/README.md)",
                file=sys.stderr,
            )
            return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    shared = recipe(args)
    begin = time.perf_counter()
    results: dict[str, Any] = {
        "command": " ".join(
            ["python benchmarks/demo_accuracy.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(),
        "recipe": shared,
        "torch_threads": torch.get_num_threads(),
        "baseline": run_baselines(DEMO_HDF / "demo_valid.hdf", args.seed),
        "trained": {},
    }
    work = args.keep_runs or Path(tempfile.mkdtemp(prefix="e2espk-demo-accuracy-"))
    try:
        for name in args.systems or list(SYSTEMS):
            results["trained"][name] = train_system(name, SYSTEMS[name], shared, work)
        if not args.no_diagnostic:
            for name, (overrides, context) in DIAGNOSTICS.items():
                with context():
                    results["trained"][name] = train_system(name, overrides, shared, work)
    finally:
        if args.keep_runs is None:
            shutil.rmtree(work, ignore_errors=True)
    results["wall_s"] = time.perf_counter() - begin
    results["markdown"] = markdown(results)
    write_json_atomic(args.out, results)
    bar_chart(results, args.out.with_suffix(".png"))
    print(results["markdown"])
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')} ({results['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
