"""What a search shows: trials.jsonl, a summary table, the best config, HParams, a plot."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from e2espk.fileio import atomic_path, write_text_atomic


def write_records(search_dir: Path, records: list[dict[str, Any]]) -> Path:
    """Every finished trial, one JSON object per line, rewritten atomically."""
    return write_text_atomic(
        search_dir / "trials.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    )


def best_record(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [r for r in records if r["status"] == "ok"]
    return min(ok, key=lambda r: r["value"]) if ok else None


def log_hparams(search_dir: Path, record: dict[str, Any], objective: str) -> None:
    """One TensorBoard run per trial with its hyperparameters and metrics (HParams dashboard)."""
    from torch.utils.tensorboard import SummaryWriter

    hparams = {
        key: value if isinstance(value, (int, float, str, bool)) else str(value)
        for key, value in record["hyperparameters"].items()
    }
    metrics = {
        f"hparam/{objective}": record["value"] if record["value"] is not None else float("nan")
    }
    metrics |= {
        f"hparam/{key.removeprefix('valid/')}": value
        for key, value in record.get("metrics", {}).items()
        if key.endswith("eer")
    }
    with SummaryWriter(log_dir=str(search_dir / "tb" / f"trial_{record['trial']:03d}")) as writer:
        writer.add_hparams(hparams, metrics, run_name=".")


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b.*")


def failure_reason(error: str, limit: int = 300) -> str:
    """The one line that says why a trial failed, from its recorded error.

    Errors of Slurm/local jobs carry the job's whole traceback (submitit's ``FailedJobError``);
    its last exception line is the reason. Other errors are their first line.
    """
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    raised = [line for line in lines if EXCEPTION_LINE.match(line)]
    reason = raised[-1] if raised and len(lines) > 1 else (lines[0] if lines else "unknown error")
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def failure_line(record: dict[str, Any]) -> str | None:
    """``trial 3 failed: <reason>`` for a failed trial, None for one that succeeded."""
    if record["status"] == "ok":
        return None
    status = "" if record["status"] == "failed" else f" ({record['status']})"
    return f"trial {record['trial']} failed{status}: {failure_reason(record.get('error') or '')}"


def summary_table(records: list[dict[str, Any]], objective: str) -> str:
    """Trials sorted by objective (failures last), one row each."""
    names = sorted({key for r in records for key in r["hyperparameters"]})
    header = ["trial", "status", objective, "min", *names]
    rows = []
    for r in sorted(records, key=lambda r: (r["value"] is None, r["value"] or 0.0, r["trial"])):
        value = "-" if r["value"] is None else f"{r['value']:.4f}"
        minutes = f"{r.get('duration_s', 0) / 60:.1f}"
        cells = [_short(r["hyperparameters"].get(name)) for name in names]
        rows.append([str(r["trial"]), r["status"], value, minutes, *cells])
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False))
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write_best(
    search_dir: Path, records: list[dict[str, Any]], base_config: dict[str, Any]
) -> tuple[Path, str] | None:
    """The best trial as a ready-to-run train.py config file and command."""
    best = best_record(records)
    if best is None:
        return None
    config = (
        base_config
        | best["hyperparameters"]
        | {"checkpoint_path": str(search_dir / "best_retrain"), "resume": False}
    )
    path = search_dir / "best_config.yaml"
    write_text_atomic(
        path,
        f"# best trial {best['trial']}: {best['value']:.6f}\n"
        + yaml.safe_dump(config, sort_keys=False),
    )
    command = f"python train.py --config {path}"
    write_text_atomic(search_dir / "best_command.txt", command + "\n")
    return path, command


def plot_objective(
    search_dir: Path, records: list[dict[str, Any]], objective: str, penalty: float
) -> Path:
    """Objective per trial (failures marked at the penalty) with the running best."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ordered = sorted(records, key=lambda r: r["trial"])
    trials = np.array([r["trial"] for r in ordered])
    values = np.array([penalty if r["value"] is None else r["value"] for r in ordered], dtype=float)
    failed = np.array([r["value"] is None for r in ordered])
    figure = Figure(figsize=(7, 4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.scatter(trials[~failed], values[~failed], label="trial", color="tab:blue")
    if failed.any():
        axes.scatter(
            trials[failed], values[failed], marker="x", color="tab:red", label="failed (penalty)"
        )
    if (~failed).any():
        running = np.minimum.accumulate(np.where(failed, np.inf, values))
        axes.step(trials, running, where="post", color="tab:green", label="best so far")
    axes.set_xlabel("trial")
    axes.set_ylabel(objective)
    axes.grid(alpha=0.3)
    axes.legend()
    path = search_dir / "objective.png"
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return path
