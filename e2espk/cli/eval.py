"""``eval.py``: score a trial list with a trained model (cosine, learned distance, fused; back-ends: mean, LDA, PLDA; AS-norm)."""

from __future__ import annotations

from collections.abc import Sequence

from e2espk.cli.common import setup_logging, user_errors_exit_cleanly
from e2espk.config import parse_config
from e2espk.pipelines.evaluation import EvalConfig, EvalReport, run_evaluation


def format_table(report: EvalReport) -> str:
    """Metrics as an aligned text table, one row per score type (EER in %)."""
    if not report.metrics:
        return "no labels in the trial list: scores written, no metrics"
    columns = sorted(
        {key for values in report.metrics.values() for key in values}, key=lambda k: (k != "eer", k)
    )
    width = max(16, 2 + max(map(len, report.metrics)))  # cosine_mean_asnorm is 18
    header = f"{'score':<{width}}" + "".join(f"{c:>16}" for c in columns)
    rows = [header, "-" * len(header)]
    for name, values in report.metrics.items():
        cells = "".join(
            f"{(100 * values[c] if c == 'eer' else values[c]):>16.3f}"
            if c in values
            else f"{'':>16}"
            for c in columns
        )
        rows.append(f"{name:<{width}}{cells}")
    return "\n".join(rows) + "\n(eer in %)"


@user_errors_exit_cleanly
def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    config = parse_config(EvalConfig, argv, description=__doc__, prog="eval.py")
    report = run_evaluation(config)
    print(
        f"{report.trials} trials"
        + (
            f" ({report.skipped_trials} skipped: missing utterances)"
            if report.skipped_trials
            else ""
        )
    )
    print(format_table(report))
    for name, path in report.plots.items():
        print(f"{name} plot: {path}")
    print(f"scores and results.json in {report.out_path}")
    return 0
