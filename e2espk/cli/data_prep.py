"""``data_prep.py``: pack features into an e2espk corpus (or ``inspect`` / ``demo`` subcommands)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from e2espk.cli.common import setup_logging, user_errors_exit_cleanly
from e2espk.config import parse_config
from e2espk.data.packing import PackConfig, pack_corpus

LOG = logging.getLogger("e2espk.data_prep")
SUBCOMMANDS = ("inspect", "demo", "extract")


@user_errors_exit_cleanly
def main(argv: Sequence[str] | None = None) -> int:
    """Pack precomputed PTM and handcrafted features into HDF5 corpus files."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        from e2espk.cli import demo_corpus, extract, inspect

        commands = {"inspect": inspect.main, "demo": demo_corpus.main, "extract": extract.main}
        return commands[args[0]](args[1:])
    setup_logging()
    config = parse_config(
        PackConfig,
        args,
        description=__doc__ + " Subcommands: 'inspect FILE', 'demo', 'extract' (from audio).",
        prog="data_prep.py",
    )
    report = pack_corpus(config)
    for part, path in report.outputs.items():
        print(
            f"{part}: {path}: {report.speakers[part]} speakers, {report.utterances[part]} utterances"
        )
    if report.dropped_incomplete:
        print(f"dropped {report.dropped_incomplete} utterances missing from some stream")
    if report.dropped_min_recordings:
        print(
            f"dropped {report.dropped_min_recordings} utterances of speakers below --min-recordings"
        )
    if report.skipped_bad:
        print(f"skipped {len(report.skipped_bad)} bad utterances (listed in the report JSON)")
    return 0
