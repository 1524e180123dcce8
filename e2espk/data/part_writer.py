"""The writing half of packing: every utterance into its part's corpus file, all or nothing."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from e2espk import interrupts
from e2espk.data import validation
from e2espk.data.corpus import CorpusWriter
from e2espk.data.pack_config import OutputPlan, PackConfig, PackReport
from e2espk.errors import InputDataError
from e2espk.progress import progress_bar


def write_parts(
    config: PackConfig,
    plan: OutputPlan,
    reader: validation.UtteranceReader,
    checker: validation.UtteranceChecker,
    first: Mapping[str, np.ndarray],
    report: PackReport,
) -> None:
    """Stream every utterance of ``plan`` into its part's file (``first``: the first one,
    already read); on any error or stop, no file is kept.

    The loop is a deferred region (``interrupts``): a signal stops it between utterances, so
    it never lands inside h5py, where it would be swallowed.
    """
    writers: dict[str, CorpusWriter] = {}
    try:
        bar = progress_bar(plan.ordered, enabled=config.progress, desc="packing", unit="utt")
        with interrupts.deferred(), bar:
            for part, path in plan.names.items():
                writers[part] = CorpusWriter(
                    path,
                    list(checker.specs.values()),
                    compression=config.output.compression,
                    compression_level=config.output.compression_level,
                    overwrite=config.output.overwrite,
                )
            for utterance in interrupts.checked(bar):
                arrays = first if utterance == plan.ordered[0] else reader.load(utterance)
                problem = checker.problem(arrays)
                if problem:
                    if not config.skip_bad:
                        raise InputDataError(
                            reader.where(utterance, problem.stream),
                            f"utterance {utterance!r}: {problem.message}. Pass --skip-bad to skip such utterances",
                        )
                    report.skipped_bad[utterance] = f"{problem.stream}: {problem.message}"
                    continue
                writers[plan.assignment[utterance]].add(plan.speakers[utterance], utterance, arrays)
        close_parts(writers, plan.names, report)
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise


def close_parts(
    writers: Mapping[str, CorpusWriter], names: Mapping[str, Path], report: PackReport
) -> None:
    """Count every part into ``report``, then close them all; a part that every utterance
    skipped is an error naming its file (the caller aborts the writers)."""
    for part, writer in writers.items():
        report.utterances[part] = writer.n_utterances
        report.speakers[part] = writer.n_speakers
        if not writer.n_utterances:
            raise InputDataError(names[part], "no utterance left to write after skipping bad ones")
    for writer in writers.values():
        writer.close()
