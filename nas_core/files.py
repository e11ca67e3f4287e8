"""Atomic file writes: a crash leaves the old file or the new one, never a torn one."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it: a crash leaves
    either the old file or the new one, never a torn one."""
    tmp = _complete_copy(Path(path), data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_text_exclusive(path: Path, text: str) -> None:
    """Create ``path`` holding ``text`` complete (no reader ever sees it empty or half written),
    never replacing a file: FileExistsError when ``path`` exists, also when another process
    creates it at the same moment (link(2) publishes the copy only where nothing is)."""
    tmp = _complete_copy(Path(path), text.encode())
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _complete_copy(path: Path, data: bytes) -> Path:
    """``data`` in a new temporary file beside ``path``, flushed to the disk."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from other users
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def remove_stale_temporaries(folder: Path, names: Iterable[str]) -> None:
    """Remove the temporary copies (``.NAME.XXXXXXXX.tmp``, of :func:`_complete_copy`) that writes
    of the files ``names`` left in ``folder`` when their process was killed. Only while no write
    to those files is in progress, e.g. by the one writing process of a run it resumes."""
    pattern = re.compile(r"\.(%s)\.[a-z0-9_]{8}\.tmp" % "|".join(map(re.escape, names)))
    for stale in Path(folder).glob(".*.tmp"):
        if pattern.fullmatch(stale.name) and stale.is_file():
            stale.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())
