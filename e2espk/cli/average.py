"""``python -m e2espk.cli.average A.pt B.pt ... -o avg.pt``: average checkpoints' weights.

The inputs must share the architecture (e.g. epochs of one run: ``runs/x/epoch_*.pt`` with
--save-every, or ``runs/x/recent/epoch_*.pt``); the output loads in eval.py, embed.py and
``train.py --init-from`` like any checkpoint.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from e2espk.cli.common import setup_logging, user_errors_exit_cleanly
from e2espk.training.average import average_checkpoints


@user_errors_exit_cleanly
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m e2espk.cli.average", description=__doc__.splitlines()[0]
    )
    parser.add_argument("checkpoints", nargs="+", help="checkpoints to average")
    parser.add_argument("-o", "--out", required=True, help="averaged checkpoint to write")
    args = parser.parse_args(argv)
    setup_logging()
    out = average_checkpoints(args.checkpoints, args.out)
    print(f"averaged {len(args.checkpoints)} checkpoints -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(None))
