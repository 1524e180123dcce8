"""eval.py's pipeline: embed every test utterance once, score the trials, report metrics and plots.

Score types: ``cosine``, ``learned`` (the verification network's logit) and ``fused`` (the
checkpoint's fitted logistic fusion of the two; the mean of their z-normalised scores for
checkpoints without one); with a back-end corpus, ``cosine_mean``, ``cosine_lda`` and ``plda``
(``e2espk.scoring.backends``); with a cohort, ``*_asnorm`` versions of each. Score files hold
one line per trial, ``enroll test score [target|nontarget]``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2espk import __version__
from e2espk.data.corpus import Corpus
from e2espk.data.features import InputLayout, check_compatible
from e2espk.data.pack_config import PackConfig
from e2espk.data.packing import input_signature, pack_corpus
from e2espk.device import resolve_device
from e2espk.errors import ConfigError, InputDataError, preview
from e2espk.fileio import atomic_path, made_dir, write_json_atomic
from e2espk.inference.system import EmbeddingSystem, load_embedding_system
from e2espk.logfile import format_metric, log_to_file
from e2espk.pipelines.eval_config import EvalConfig
from e2espk.pipelines.trial_scoring import score_trials
from e2espk.scoring.calibration import LogisticCalibration
from e2espk.scoring.metrics import summarize
from e2espk.scoring.plots import plot_det, plot_score_histograms
from e2espk.scoring.trials import Trials, build_trials, match_utterances, read_trials

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class EvalReport:
    metrics: dict[str, dict[str, float]]
    score_files: dict[str, str]
    plots: dict[str, str]
    trials: int
    skipped_trials: int
    out_path: str


def test_corpus(
    config: EvalConfig, out: Path, layout: InputLayout, side_streams: tuple[str, ...] = ()
) -> Corpus:
    """The test corpus: --test-hdf-file, or --test-data packed into OUT/test_data.hdf. A
    corpus packed by an earlier run from the same options and unchanged input files (sizes
    and modification times) is reused, so re-runs neither re-pack nor re-embed. The streams
    the model reads are checked against the sources before packing (packing a test set takes
    long), only those are packed (PTM as float16, as data_prep stores it), and a packing the
    model cannot read is removed."""
    if config.test_hdf_file:
        corpus = Corpus(config.test_hdf_file)
        check_compatible(layout, corpus)
        return corpus
    if not config.test_data:
        raise ConfigError("give --test-hdf-file or --test-data")
    pack = PackConfig.from_flat(
        dict(
            stream=needed_test_streams(config.test_data, layout, side_streams),
            utt2spk=[config.test_utt2spk] if config.test_utt2spk else [],
            out_path=str(out),
            out_name="test_data",
            overwrite=True,
            progress=config.progress,
            unknown_speakers=config.test_utt2spk is None,
        )
    )
    packed, record = out / "test_data.hdf", out / "test_data.inputs.json"
    signature = json.loads(json.dumps(input_signature(pack)))  # as it reads back from JSON
    if packed.is_file() and _read_record(record) == signature:
        LOG.info("reusing %s: packed from the same, unchanged inputs", packed)
        return Corpus(packed)
    record.unlink(missing_ok=True)  # stale until the new packing has finished
    try:
        pack_corpus(pack)
        corpus = Corpus(packed)
        try:
            check_compatible(layout, corpus)
        except BaseException:
            corpus.close()
            raise
    except BaseException:
        for leftover in (packed, out / "test_data.report.json"):
            leftover.unlink(missing_ok=True)
        raise
    write_json_atomic(record, signature)
    return corpus


def needed_test_streams(
    test_data: list[str], layout: InputLayout, side_streams: tuple[str, ...] = ()
) -> list[str]:
    """The --test-data items (NAME=SOURCE) of the streams the model and its side scores read;
    a missing one is an error naming it, raised before any source is read."""
    named: dict[str, list[str]] = {}
    for item in test_data:
        name, sep, source = item.partition("=")
        if not sep or not name or not source:
            raise ConfigError(f"--test-data expects NAME=SOURCE, got {item!r}")
        named.setdefault(name, []).append(item)
    needed = list(dict.fromkeys([*layout.streams(), *side_streams]))
    missing = [name for name in needed if name not in named]
    if missing:
        what = f"mode {layout.mode}" + (
            f", feature mode {layout.feature_mode}" if layout.uses_handcrafted else ""
        )
        if side_streams:
            what += f", side scores: {', '.join(side_streams)}"
        raise ConfigError(
            f"--test-data lacks stream {', '.join(map(repr, missing))} that the model reads "
            f"({what}: {', '.join(needed)}); add {' '.join(f'{m}=SOURCE' for m in missing)}"
        )
    unused = sorted(set(named) - set(needed))
    if unused:
        LOG.info("--test-data: not packing %s (the model does not read it)", ", ".join(unused))
    return [item for name in needed for item in named[name]]


def _read_record(path: Path) -> Any:
    """A JSON record, or None when it is missing or unreadable (then it is simply redone)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def resolve_trials(
    config: EvalConfig, corpus: Corpus, path: str | None
) -> tuple[Trials, Trials, int]:
    """Trials over ``corpus`` (read or built): ``(in corpus ids, as the list names them,
    how many were skipped as missing)``. Scores are computed on the first and written with the
    second, so score files keep the user's ids."""
    if path is None:
        speakers = corpus.speakers[corpus.speaker_of].tolist()
        built = build_trials(
            corpus.utterances.tolist(),
            speakers,
            config.trials_nontarget_ratio,
            config.trials_max_target,
            config.seed,
        )
        return built, built, 0
    trials = read_trials(path)
    mapping = match_utterances(trials.utterances(), corpus.utterances.tolist(), path)
    renamed = {u: c for u, c in mapping.items() if u != c}
    if renamed:
        example = next(iter(sorted(renamed.items())))
        LOG.info(
            "%d trial ids matched without extension or '/': e.g. %r -> %r", len(renamed), *example
        )
    missing = trials.utterances() - mapping.keys()
    if not missing:
        return trials.renamed(mapping), trials, 0
    if not config.skip_missing:
        raise InputDataError(
            path,
            f"{preview(missing)} utterance(s) are not in the test data {corpus.path}; pass --skip-missing to drop those trials",
        )
    keep = np.array(
        [a in mapping and b in mapping for a, b in zip(trials.enroll, trials.test, strict=True)]
    )
    if not keep.any():
        raise InputDataError(path, "no trial has both utterances in the test data")
    LOG.warning("skipping %d trials naming %d missing utterances", int((~keep).sum()), len(missing))
    given = trials.subset(keep)
    return given.renamed(mapping), given, int((~keep).sum())


def require_finite_scores(scores: dict[str, np.ndarray], trials: Trials, where: object) -> None:
    """Fail naming the score type and trial before any score file is written: a NaN in a
    score file surfaces later as a metric error that names neither."""
    for name, values in scores.items():
        bad = ~np.isfinite(values)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise InputDataError(
                where,
                f"{name} scores: {int(bad.sum())} NaN/inf value(s), the first for trial "
                f"{trials.enroll[first]!r} {trials.test[first]!r}; no score file written",
            )


def write_scores(path: Path, trials: Trials, scores: np.ndarray) -> Path:
    labels = (
        [""] * len(trials)
        if trials.labels is None
        else [" target" if x else " nontarget" for x in trials.labels]
    )
    with atomic_path(path) as tmp:
        tmp.write_text(
            "".join(
                f"{a} {b} {s:.6f}{lab}\n"
                for a, b, s, lab in zip(
                    trials.enroll, trials.test, scores.tolist(), labels, strict=True
                )
            )
        )
    return path


def check_input_files(config: EvalConfig) -> None:
    """Every named input exists, before anything is written."""
    named = {
        "--cp-path": config.cp_path, "--test-hdf-file": config.test_hdf_file,
        "--trials-path": config.trials_path, "--cohort-hdf-file": config.cohort_hdf_file,
        "--backend-hdf-file": config.backend_hdf_file,
        "--calibration-trials": config.calibration_trials,
    }  # fmt: skip
    for flag, path in named.items():
        if path and not Path(path).is_file():
            raise InputDataError(path, f"{flag}: file not found")


def evaluation_inputs(config: EvalConfig, corpus: Corpus) -> dict[str, str | None]:
    """The files a result came from, as absolute paths, for results.json and eval.log."""

    def absolute(path: str | os.PathLike[str] | None) -> str | None:
        return str(Path(path).resolve()) if path else None

    return {
        "checkpoint": absolute(config.cp_path),
        "test_file": absolute(corpus.path),
        "test_data": " ".join(config.test_data) or None,
        "trials": absolute(config.trials_path),  # None: built from the test file's speakers
        "cohort_file": absolute(config.cohort_hdf_file),
        "backend_file": absolute(config.backend_hdf_file),
        "calibration_trials": absolute(config.calibration_trials),
    }


def run_evaluation(config: EvalConfig) -> EvalReport:
    """Score the trials and write score files, results.json, eval.log and plots under
    ``out_path``. Inputs are checked before the directory is created."""
    if not config.cp_path:
        raise ConfigError("--cp-path is required")
    if config.backends and not config.backend_hdf_file:
        raise ConfigError("--backends needs --backend-hdf-file (the corpus that fits them)")
    if not config.test_hdf_file and not config.test_data:
        raise ConfigError("give --test-hdf-file or --test-data")
    check_input_files(config)
    device = resolve_device(config.device)
    out = Path(config.out_path)
    system = load_embedding_system(config.cp_path, device)
    resolved = None
    if config.test_hdf_file:  # else packed into OUT first
        resolved = _resolve_inputs(config, Corpus(config.test_hdf_file), system)
    with made_dir(out), log_to_file(out / "eval.log"):
        LOG.info("e2espk %s: eval.py %s", __version__, " ".join(sys.argv[1:]))
        LOG.info("checkpoint %s (epoch %s), device %s", config.cp_path, system.epoch, device)
        if resolved is None:
            resolved = _resolve_inputs(
                config, test_corpus(config, out, system.layout, system.side_streams), system
            )
        return _evaluate(config, system, device, out, resolved)


@dataclasses.dataclass
class EvalInputs:
    """The test corpus and the trial sets over it, resolved before anything is scored."""

    corpus: Corpus
    trials: Trials  # in corpus ids: what is scored
    given: Trials  # the same trials with the list's own ids: what score files are written with
    skipped: int  # trials dropped for naming missing utterances (--skip-missing)
    trial_sets: list[Trials]  # ``trials``, then the calibration trials if any


def _resolve_inputs(config: EvalConfig, corpus: Corpus, system: EmbeddingSystem) -> EvalInputs:
    check_compatible(system.layout, corpus)
    trials, given, skipped = resolve_trials(config, corpus, config.trials_path)
    trial_sets = [trials]
    if config.calibration_trials:
        calibration, _, _ = resolve_trials(config, corpus, config.calibration_trials)
        if calibration.labels is None:
            raise InputDataError(config.calibration_trials, "calibration trials need labels")
        trial_sets.append(calibration)
    return EvalInputs(corpus, trials, given, skipped, trial_sets)


def _evaluate(
    config: EvalConfig,
    system: EmbeddingSystem,
    device: torch.device,
    out: Path,
    resolved: EvalInputs,
) -> EvalReport:
    corpus, trials, given = resolved.corpus, resolved.trials, resolved.given
    skipped, trial_sets = resolved.skipped, resolved.trial_sets
    inputs = evaluation_inputs(config, corpus)
    LOG.info(
        "test %s (%d speakers, %d utterances); trials %s (%d, %d skipped); cohort %s; back-end %s",
        inputs["test_file"], len(corpus.speakers), len(corpus), inputs["trials"] or "built",
        len(trials), skipped, inputs["cohort_file"], inputs["backend_file"],
    )  # fmt: skip
    all_scores = score_trials(config, system, corpus, trial_sets, device)
    scores = all_scores[0]
    require_finite_scores(scores, given, corpus.path)
    files = {
        name: str(write_scores(out / f"scores_{name}.txt", given, values))
        for name, values in scores.items()
    }
    metrics: dict[str, dict[str, float]] = {}
    plots: dict[str, str] = {}
    if trials.labels is not None:
        for name, values in scores.items():
            metrics[name] = summarize(
                values, trials.labels, p_targets=tuple(config.p_targets), c_primary=config.c_primary
            )
        if config.calibration_trials:
            fitted: dict[str, Any] = {}
            for name, values in scores.items():
                calibrator = LogisticCalibration().fit(all_scores[1][name], trial_sets[1].labels)  # type: ignore[arg-type]
                llr = calibrator.transform(values)
                metrics[name] |= {
                    k: v
                    for k, v in summarize(
                        llr, trials.labels, p_targets=tuple(config.p_targets), llr=True
                    ).items()
                    if k.startswith(("act_dcf", "cllr", "min_cllr"))
                }
                fitted[name] = calibrator.to_dict()
            write_json_atomic(out / "calibration.json", fitted)
        if config.plots:
            pairs = {name: (values, trials.labels) for name, values in scores.items()}
            plots["det"] = str(plot_det(pairs, out / "det.png", p_target=config.p_targets[0]))
            plots["histograms"] = str(plot_score_histograms(pairs, out / "score_histograms.png"))
    report = EvalReport(metrics, files, plots, len(trials), skipped, str(out))
    for name, row in metrics.items():
        LOG.info("%s: %s", name, ", ".join(f"{k}={format_metric(k, v)}" for k, v in row.items()))
    write_json_atomic(
        out / "results.json",
        dataclasses.asdict(report)
        | {"checkpoint": config.cp_path, "checkpoint_epoch": system.epoch, "inputs": inputs},
    )
    return report
