"""A command's own log file in its output directory (train.log, eval.log), and its units.

The log is an output of the run like ``config.yaml``: it is written wherever the run is
started from (train.py, a search trial in a Slurm job, a Python caller), so it is attached by
the code that creates the run directory, once the inputs have been checked.

Units: in logs and on the console EER is a percentage, always printed with ``%``
(:func:`format_metric`); minDCF, Cllr and losses are plain numbers. history.json,
results.json and TensorBoard keep EER as a fraction (0.0235 = 2.35 %), as the metric
functions return it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from e2espk import interrupts
from e2espk.errors import E2eSpkError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def log_to_file(path: str | os.PathLike[str]) -> Iterator[logging.Handler]:
    """Append e2espk's INFO (and everything's WARNING) records to ``path`` during the block."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.INFO)
    package = logging.getLogger("e2espk")
    previous_level = package.level
    if package.getEffectiveLevel() > logging.INFO:  # e.g. a Slurm job that configured nothing
        package.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    except BaseException as error:  # the reason the run ended, in its log (stderr has it too)
        user_error = isinstance(error, (E2eSpkError, interrupts.Interrupted, KeyboardInterrupt))
        handler.handle(
            logging.LogRecord(
                "e2espk", logging.ERROR, __file__, 0, "stopped: %s: %s",
                (type(error).__name__, error), None if user_error else (type(error), error, error.__traceback__),
            )
        )  # fmt: skip
        raise
    finally:
        root.removeHandler(handler)
        handler.close()
        package.setLevel(previous_level)


def format_metric(key: str, value: float) -> str:
    """``valid/fused/eer`` 0.0235 -> ``2.35%``; any other metric -> ``0.1234``."""
    if key.rsplit("/", 1)[-1] == "eer":
        return f"{100 * value:.2f}%"
    return f"{value:.4g}"
