"""``train.py``: train a speaker embedding model and its verification network."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from e2espk.cli.common import setup_logging, user_errors_exit_cleanly
from e2espk.config import parse_config
from e2espk.training.config import TrainConfig
from e2espk.training.trainer import train


@user_errors_exit_cleanly
def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    config = parse_config(TrainConfig, argv, description=__doc__, prog="train.py").validate()
    run_dir = Path(config.checkpoint_path)
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    result = train(config)
    last = result.history[-1] if result.history else {}
    print(f"run directory: {result.run_dir}")
    for score in ("cosine", "learned", "fused"):
        if f"valid/{score}/eer" in last:
            print(
                f"validation EER ({score}): {100 * last[f'valid/{score}/eer']:.2f}%  minDCF@0.01: {last[f'valid/{score}/min_dcf@0.01']:.3f}"
            )
    if result.best_metric is not None:
        print(
            f"best {config.select_metric}: {result.best_metric:.4f} at epoch {result.best_epoch} -> {result.run_dir / 'best.pt'}"
        )
    averaged = result.exported.get("averaged") or {}
    if f"valid/{config.select_metric}" in averaged:
        print(
            f"averaged epochs {averaged['epochs']}: {config.select_metric} {averaged[f'valid/{config.select_metric}']:.4f} -> {averaged['checkpoint']}"
        )
    if "final" in result.exported:
        print(f"final.pt = {result.exported['final']['source']} -> {result.run_dir / 'final.pt'}")
    return 0
