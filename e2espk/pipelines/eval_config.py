"""The options of eval.py, read by its pipeline (``e2espk.pipelines.evaluation``) and by the
trial scoring it runs (``e2espk.pipelines.trial_scoring``)."""

from __future__ import annotations

import dataclasses

from e2espk.config import option
from e2espk.scoring.backends import BACKENDS, DEFAULT_BACKENDS


@dataclasses.dataclass
class EvalConfig:
    """Options of eval.py."""

    cp_path: str = option(
        "", help="checkpoint (best.pt/last.pt) from train.py; it rebuilds the model alone"
    )
    test_hdf_file: str | None = option(None, help="test corpus (e2espk HDF5)")
    test_data: list[str] = option(
        default_factory=list,
        help="test features straight from their sources instead of HDF5, as NAME=SOURCE (e.g. ptm=emb.pt mfbe=kaldi:data/test pitch=kaldi:data/test:pitch.scp)",
    )
    test_utt2spk: str | None = option(
        None,
        help="speaker map for --test-data (default: the Kaldi dir's utt2spk; else speakers are unknown)",
    )
    trials_path: str | None = option(
        None,
        help="trial list: Kaldi 'enroll test target|nontarget', VoxCeleb '1|0 enroll test', or unlabeled 'enroll test'; default: built from the test file's speakers",
    )
    out_path: str = option("scores", help="output directory: score files, results.json, plots")
    skip_missing: bool = option(
        False,
        help="drop trials naming utterances absent from the test data (reported) instead of failing",
    )
    trials_nontarget_ratio: float = option(
        3.0, help="built trials: non-target pairs per target pair"
    )
    trials_max_target: int | None = option(
        None, help="built trials: at most this many target pairs"
    )
    window_seconds: float | None = option(
        None,
        help="embed long utterances in windows of this length, averaged (default: the training validation window)",
    )
    batch_size: int = option(64, help="windows per embedding batch (caps memory)")
    embedding_cache: bool = option(
        True,
        help="keep extracted embeddings in OUT/embedding_cache/ (test and cohort): an interrupted eval resumes there, and a re-run with other trials or AS-norm settings skips extraction",
    )
    cohort_hdf_file: str | None = option(
        None, help="corpus of cohort speakers (e.g. the training file): enables AS-norm"
    )
    cohort_max_utterances: int = option(
        5000, help="cohort: at most this many utterances (seeded sample), averaged per speaker"
    )
    cohort_top_n: int = option(300, help="AS-norm: top-N cohort scores per side")
    backend_hdf_file: str | None = option(
        None,
        help="labelled corpus (typically the training file) whose embeddings fit the scoring back-ends: adds the score types cosine_mean, cosine_lda, plda",
    )
    backends: list[str] = option(
        default_factory=list,
        choices=BACKENDS.choices(),
        help=f"back-ends to fit on --backend-hdf-file (default: all, {' '.join(DEFAULT_BACKENDS)})",
    )
    backend_max_utterances: int = option(
        20000, help="back-ends: at most this many utterances of --backend-hdf-file (seeded sample)"
    )
    lda_dim: int | None = option(
        None, help="LDA back-end output dimension (default: min(150, speakers - 1, embedding dim))"
    )
    p_targets: list[float] = option(
        default_factory=lambda: [0.01, 0.05], help="P_target values of minDCF (C_miss = C_fa = 1)"
    )
    c_primary: bool = option(False, help="also report C_primary (mean minDCF at 0.01 and 0.005)")
    calibration_trials: str | None = option(
        None,
        help="held-out labelled trials (over the same test data) to fit a logistic calibration; then actDCF and Cllr are reported",
    )
    plots: bool = option(True, help="write a DET curve and score histograms (PNG)")
    seed: int = option(0, help="seed of built trials and the cohort sample")
    device: str = option("auto", help="auto, cpu, cuda, ...")
    progress: bool = option(True, help="progress bars")
