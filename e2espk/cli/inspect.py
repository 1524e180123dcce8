"""``e2espk-inspect``: describe corpus files and check their integrity."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from e2espk.cli.common import user_errors_exit_cleanly
from e2espk.data.corpus import Corpus
from e2espk.data.inspection import check_integrity, summarize


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable summary of one corpus."""
    hours = summary["hours"]
    lines = [
        f"{summary['path']} (schema v{summary['schema_version']}, {summary['file_bytes'] / 2**20:.1f} MiB)",
        f"  speakers:   {summary['speakers']}",
        f"  utterances: {summary['utterances']} "
        f"(per speaker min {summary['utterances_per_speaker']['min']:.0f}, "
        f"median {summary['utterances_per_speaker']['median']:.0f}, max {summary['utterances_per_speaker']['max']:.0f})",
        f"  hours:      {hours:.3f}"
        if hours is not None
        else "  hours:      unknown (no time axis)",
    ]
    if summary["bytes_per_hour"]:
        lines.append(f"  size/hour:  {summary['bytes_per_hour'] / 2**20:.1f} MiB")
    ptm = (summary.get("extraction") or {}).get("ptm")
    if ptm:
        lines.append(
            f"  extracted:  from audio; PTM {ptm['name']} ({ptm['model_type']}, weights sha256 "
            f"{ptm['sha256'][:16]}, revision {ptm['revision'] or '-'}), layers {ptm['layers']}"
        )
    elif summary.get("extraction"):
        lines.append("  extracted:  from audio (data_prep.py extract)")
    lines.append("  streams:")
    for name, stream in summary["streams"].items():
        rate = (
            f"{stream['frame_rate_hz']:g} Hz"
            if stream["frame_rate_hz"]
            else "pooled (no time axis)"
        )
        extra = ""
        if stream["layers"] is not None:
            extra = f", layers {stream['layers']}" + (
                f" of {stream['model']}" if stream["model"] else ""
            )
        frames = stream["frames_per_utterance"]
        frames_text = (
            f", frames/utt min {frames['min']:.0f} median {frames['median']:.0f} max {frames['max']:.0f}"
            if frames
            else ""
        )
        lines.append(
            f"    {name:<8} {stream['kind']:<12} dims {tuple(stream['dims'])} {stream['dtype']} {rate}{extra}{frames_text}"
        )
    return "\n".join(lines)


@user_errors_exit_cleanly
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="e2espk-inspect", description=__doc__)
    parser.add_argument("files", nargs="+", help="e2espk corpus files")
    parser.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="read every dataset and check it against the index",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="progress bar while checking (--no-progress, as for the other commands)",
    )
    args = parser.parse_args(argv)
    status = 0
    for path in args.files:
        with Corpus(path) as corpus:
            summary = summarize(corpus)
            problems = check_integrity(corpus, progress=args.progress) if args.check else None
        if args.json:
            print(json.dumps({**summary, "problems": problems}, indent=2))
        else:
            print(format_summary(summary))
            if problems is not None:
                print(f"  integrity:  {'OK' if not problems else f'{len(problems)} problem(s)'}")
                for problem in problems[:20]:
                    print(f"    - {problem}")
        status = status or (1 if problems else 0)
    return status
