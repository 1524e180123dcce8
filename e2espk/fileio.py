"""Atomic file writes: a reader never sees a half-written file under its final name."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file under this process's umask (0644 under 022).

    ``mkstemp`` makes 0600 files whatever the umask, so temp files that become outputs get
    this mode before they are moved into place; outputs are then as readable as any other
    file the user writes.
    """
    try:  # Linux reports the umask without changing it (os.umask would, for a moment)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; move it into place only if the block succeeds.

    The temporary file lives in the same directory so that ``os.replace`` is atomic. If the
    block raises (or the process is killed), ``final`` keeps its previous content. The file
    gets the mode of the one it replaces, else the umask's (:func:`new_file_mode`).

    Args:
        final: where the file must end up.
        overwrite: if False, refuse to replace an existing file (FileExistsError).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and final.exists():
        raise FileExistsError(final)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes 0600 files; keep the mode of what we replace
            os.chmod(tmp, final.stat().st_mode & 0o777 if final.exists() else new_file_mode())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")
