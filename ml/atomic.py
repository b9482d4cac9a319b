"""Atomic file writes: a unique temp file in the target's directory, fsynced, then ``os.replace``d.

A full or read-only volume, a crash or a concurrent writer never leaves a half-written file under the
final name nor a stray temp file; readers see the old file or the new one. Used by checkpoints, export
bundles and (through ``catalog.storage``, which adds storage errors and transaction undo) the platform.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write_file(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` through ``write(fileobj)``; on any error the temp file is removed and re-raised."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
