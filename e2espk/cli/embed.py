"""``embed.py``: export an embedding per utterance (and per speaker) for PLDA and other back-ends."""

from __future__ import annotations

from collections.abc import Sequence

from e2espk.cli.common import setup_logging, user_errors_exit_cleanly
from e2espk.config import parse_config
from e2espk.pipelines.embedding_export import EmbedConfig, export_embeddings, selected_rows

__all__ = ["EmbedConfig", "main", "selected_rows"]


@user_errors_exit_cleanly
def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    config = parse_config(EmbedConfig, argv, description=__doc__, prog="embed.py")
    report = export_embeddings(config)
    print(
        f"{report.utterances} embeddings of dim {report.dim} -> {report.embeddings} "
        f"({report.format}), utt2spk -> {report.utt2spk}"
    )
    if report.speaker_means is not None:
        print(f"{report.speaker_means[0]} speaker means -> {report.speaker_means[1]}")
    return 0
