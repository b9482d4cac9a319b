"""Writing files under MEDIA_ROOT: atomically, and with a clear error when the volume cannot take them.

Every writer of media files (masks, drafts, oracle masks, export bundles, checkpoints) follows one rule:
the file is written to a temporary name in the *same directory*, flushed and fsynced, then renamed over
the target with ``os.replace`` (atomic on POSIX), and the directory entry is fsynced. On any error the
temporary file is removed, so a full or read-only volume never leaves a half-written file behind and a
reader sees either the old file or the complete new one.

``OSError`` with a storage errno (ENOSPC, EDQUOT, EROFS, EACCES, EPERM) becomes
``forgery_site.errors.StorageUnavailable`` (HTTP 507 through the API handler; Celery tasks retry it).
Database rows that point at a file are written *after* the file, inside the caller's transaction; a
caller that writes several files under one transaction registers them with ``undo_on_error`` so a
rollback also removes files that were renamed into place but are no longer referenced.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from forgery_site.errors import StorageUnavailable
from ml.atomic import atomic_write_file
from ml.digest import sha256

STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})

_UNDO: contextvars.ContextVar[list[Path] | None] = contextvars.ContextVar("media_undo", default=None)


def is_storage_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


@contextlib.contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Turn a storage ``OSError`` raised inside the block into ``StorageUnavailable``."""
    try:
        yield
    except OSError as exc:
        if is_storage_error(exc):
            raise StorageUnavailable.from_oserror(exc, what) from exc
        raise


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems do not support fsync on directories
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], None], *, what: str | None = None) -> Path:
    """Write ``path`` through ``write(fileobj)`` atomically (temp file + fsync + ``os.replace``).

    Raises ``StorageUnavailable`` when the volume is full, read-only or not writable; nothing is left.
    """
    path = Path(path)
    label = what or path.name
    with storage_errors(label):
        atomic_write_file(path, write)
        _fsync_dir(path.parent)
    undo = _UNDO.get()
    if undo is not None:
        undo.append(path)
    return path


def atomic_write_bytes(path: Path, data: bytes, *, what: str | None = None) -> str:
    """``atomic_write`` of a bytes payload; returns its sha256."""
    atomic_write(path, lambda handle: handle.write(data), what=what)
    return sha256(data)


def atomic_copy(source: Path, target: Path, *, what: str | None = None) -> Path:
    """Copy ``source`` to ``target`` atomically."""
    import shutil

    def copy(handle: BinaryIO) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, handle, 1024 * 1024)

    return atomic_write(target, copy, what=what)


def register_written(path: Path) -> None:
    """Record a file written by another atomic writer so ``undo_on_error`` removes it on failure."""
    undo = _UNDO.get()
    if undo is not None:
        undo.append(Path(path))


@contextlib.contextmanager
def undo_on_error() -> Iterator[list[Path]]:
    """Files written inside the block (``atomic_write``/``register_written``) are removed if it raises.

    Wrap the ``transaction.atomic()`` block that stores rows pointing at those files: when the
    transaction rolls back, the files it would have referenced go too (no orphans, no dangling rows).
    """
    parent = _UNDO.get()
    written: list[Path] = []
    token = _UNDO.set(written)
    try:
        yield written
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    finally:
        _UNDO.reset(token)
    if parent is not None:  # nested: the outer block decides in the end
        parent.extend(written)
