"""``train.py``: train a speaker embedding model and its verification network."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from e2espk.cli.common import setup_logging, user_errors_exit_cleanly
from e2espk.config import parse_config
from e2espk.distributed.process_group import env_rank
from e2espk.logfile import format_metric
from e2espk.training.config import TrainConfig
from e2espk.training.trainer import train


@user_errors_exit_cleanly
def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    if env_rank() > 0:  # under torchrun, rank 0 speaks for the run; the others only warn
        logging.getLogger("e2espk").setLevel(logging.WARNING)
    config = parse_config(TrainConfig, argv, description=__doc__, prog="train.py").validate()
    result = train(config)  # writes RUN/train.log once the inputs have been checked
    if env_rank() > 0:
        return 0
    last = result.history[-1] if result.history else {}
    print(f"run directory: {result.run_dir}")
    scores = [
        key.split("/")[1] for key in last if key.startswith("valid/") and key.endswith("/eer")
    ]
    for score in scores:  # cosine, learned, side scores, fused
        if f"valid/{score}/eer" in last:
            print(
                f"validation EER ({score}): {100 * last[f'valid/{score}/eer']:.2f}%  minDCF@0.01: {last[f'valid/{score}/min_dcf@0.01']:.3f}"
            )
    if result.best_metric is not None:
        print(
            f"best {config.select_metric}: {format_metric(config.select_metric, result.best_metric)} at epoch {result.best_epoch} -> {result.run_dir / 'best.pt'}"
        )
    averaged = result.exported.get("averaged") or {}
    if f"valid/{config.select_metric}" in averaged:
        print(
            f"averaged epochs {averaged['epochs']}: {config.select_metric} {format_metric(config.select_metric, averaged[f'valid/{config.select_metric}'])} -> {averaged['checkpoint']}"
        )
    final = result.exported.get("final") or {}
    if final:
        print(f"final.pt = {final['source']} -> {result.run_dir / 'final.pt'}")
    refitted = [key for key in ("fused/eer", "fused_asnorm/eer") if f"valid/{key}" in final]
    if refitted:  # --fusion-backends / --fusion-asnorm refitted its fusions at export
        figures = ", ".join(
            f"{key} {format_metric(key, final[f'valid/{key}'])}" for key in refitted
        )
        print(f"final.pt, score fusions refitted at export: {figures}")
    return 0
