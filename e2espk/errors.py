"""Errors a user can act on.

Library code raises these with a message that names the file, the item and what is wrong; the
CLIs print the message (no traceback) and exit with status 2.
"""

from __future__ import annotations


class E2eSpkError(Exception):
    """Base class for every error caused by the user's input or configuration."""


class ConfigError(E2eSpkError):
    """A flag, a config file or a combination of options is invalid."""


class InputDataError(E2eSpkError):
    """Input data is missing, malformed or inconsistent.

    Args:
        path: the file (or directory) the problem was found in.
        problem: what is wrong, naming the item (utterance, speaker, line) concerned.
    """

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class JobError(E2eSpkError):
    """A cluster job failed for good (past its retries); the message names it and its log."""


def preview(items: list[str] | tuple[str, ...] | set[str], limit: int = 5) -> str:
    """Format a count and the first few items, for messages about many bad items."""
    ordered = sorted(items)
    shown = ", ".join(repr(item) for item in ordered[:limit])
    more = f", ... ({len(ordered) - limit} more)" if len(ordered) > limit else ""
    return f"{len(ordered)} ({shown}{more})"
