"""Atomic file writes: a reader never sees a half-written file under its final name.

Temporary files are named ``.NAME.XXXXXXXX.PID@HOST.partial`` beside ``NAME``. A process
killed outright (SIGKILL, a node failure) cannot remove its own; the next write of ``NAME``
removes those whose writer, by pid, is no longer running on this host, and leaves those of
live writers and of other hosts alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from e2espk import interrupts

LOG = logging.getLogger(__name__)


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


def _host() -> str:
    return socket.gethostname().replace("/", "_") or "localhost"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # a killed process its parent has not reaped yet is a zombie: dead for us
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale_partials(final: str | os.PathLike[str]) -> list[Path]:
    """Remove the temp files of ``final`` left by dead writers on this host; return them.

    Temp files of older e2espk versions carry no pid: they are named in a warning, not removed.
    """
    final = Path(final)
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.[a-z0-9_]+\.(\d+)@(.+)\.partial$")
    legacy = re.compile(rf"^\.{re.escape(final.name)}\.[a-z0-9_]{{8}}\.partial$")
    removed: list[Path] = []
    try:
        candidates = [p for p in final.parent.iterdir() if p.name.endswith(".partial")]
    except OSError:
        return removed
    for path in candidates:
        match = pattern.match(path.name)
        if match is None:
            if legacy.match(path.name):
                LOG.warning(
                    "%s: temp file of an earlier run, writer unknown; delete it if nothing is "
                    "writing %s",
                    path,
                    final,
                )
            continue
        pid, host = int(match.group(1)), match.group(2)
        if host != _host() or pid == os.getpid() or _pid_alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
            LOG.warning("removed %s, left by process %d (no longer running)", path, pid)
    return removed


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; move it into place only if the block succeeds.

    The temporary file lives in the same directory so that ``os.replace`` is atomic. If the
    block raises (or the process is killed), ``final`` keeps its previous content; nor is the
    file moved into place once a stop signal arrived (``interrupts``). The file gets the mode of
    the one it replaces, else the umask's (:func:`new_file_mode`).

    Args:
        final: where the file must end up.
        overwrite: if False, refuse to replace an existing file (FileExistsError).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and final.exists():
        raise FileExistsError(final)
    remove_stale_partials(final)
    tmp: Path | None = None
    try:
        # a stop signal landing between mkstemp and the assignment would leave the temp file
        # behind: record it instead, and raise it (at the region's end) once ``tmp`` is known
        with interrupts.deferred():
            fd, tmp_name = tempfile.mkstemp(
                prefix=f".{final.name}.",
                suffix=f".{os.getpid()}@{_host()}.partial",
                dir=final.parent,
            )
            tmp = Path(tmp_name)
            os.close(fd)
        yield tmp
        interrupts.check()  # a stop asked for while writing: the file may be cut short
        if tmp.exists():  # mkstemp makes 0600 files; keep the mode of what we replace
            os.chmod(tmp, final.stat().st_mode & 0o777 if final.exists() else new_file_mode())
        os.replace(tmp, final)
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def made_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Create ``path`` (and parents) for the block; if the block fails, remove those of them
    it created that are still empty, so a failed command leaves no empty output directory."""
    path = Path(path)
    missing = [p for p in [path, *path.parents] if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        for directory in missing:  # deepest first
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")
