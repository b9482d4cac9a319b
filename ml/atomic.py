"""The one atomic file writer: a unique temp file in the target's directory, fsynced, then ``os.replace``d.

A full or read-only volume, a crash or a concurrent writer never leaves a half-written file under the
final name nor a stray temp file; readers see the old file or the new one. Used by checkpoints, export
bundles, encoded videos and (through ``catalog.storage``, which adds storage errors -> 507, directory
fsync and transaction undo) the platform. Files get mode 0644 (``mkstemp`` would leave 0600), as a
plain ``open()`` would give them: media are read by other processes (web, Label Studio).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

FILE_MODE = 0o644


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp path beside ``path`` for a writer that needs a file name (an encoder, say); when the
    block ends without error the temp file is fsynced and renamed onto ``path``, otherwise removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_file(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` through ``write(fileobj)``; on any error the temp file is removed and re-raised."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
    return path
