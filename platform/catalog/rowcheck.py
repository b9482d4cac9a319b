"""Validates an import's rows in parallel processes and turns the valid ones into COPY text.

The source is cut into chunks of ``CHUNK_ROWS`` rows. A chunk is read, parsed (a ``.jsonl`` manifest:
each process reads its own byte range of the file, so the parent never decodes a row), validated and
encoded as PostgreSQL COPY lines in a forked process; the parent gets the chunks back in source order
and streams their lines into COPY while the other chunks are still being checked (see
``catalog.services``). What travels between the processes is small: a chunk's byte range or index
range one way, its COPY lines, ids, paths and errors the other.

Rows whose id is already in the dataset are skipped without touching their files (an idempotent
re-import). Duplicates within the source are errors, found by the parent across chunks
(``Deduplicator``).

Fork safety: the processes are forked after every module the check needs is imported and Pillow's
plugins are registered, they touch no database connection or socket of the parent, and they leave through
``os._exit`` (multiprocessing's worker exit), so no inherited connection is ever closed by them. They
also run inside a Celery prefork child, a daemonic process (``_children_allowed``). A
small source (one chunk), ``IMPORT_WORKERS=1`` or a process with other threads running checks in the
calling process (``worker_count``).

Measured on 2 cores, 100k manifest rows (``python -m bench import``): in one process, parse 3.7 s +
check 10.1 s, then tuples + COPY 11.7 s (26.3 s, 0.31 of a raw COPY); forked and streamed, 15.8 s
(0.51). An earlier attempt that pickled parsed rows to a pool was slower than one process: here only
byte ranges and COPY text cross.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from catalog.bulk import copy_text_value, sample_tuples
from catalog.paths import Confiner
from catalog.validation import RowError, validate_row

CHUNK_ROWS = 1000


@dataclass
class Chunk:
    """What one process checks: its rows' numbers come with them."""

    byte_range: tuple[int, int] | None = None  # a .jsonl manifest: [start, end) of the file ...
    first_number: int = 1  # ... and the line number at start
    index_range: tuple[int, int] | None = None  # any other source: a slice of the parent's rows


@dataclass
class ChunkResult:
    lines: list[str] = field(default_factory=list)  # COPY text lines of the valid rows, in source order
    keys: list[tuple[int, str, str]] = field(default_factory=list)  # (row number, external id, path)
    errors: list[dict] = field(default_factory=list)
    skipped: int = 0  # rows whose id the dataset already has
    rows: int = 0  # rows read from the source


@dataclass
class _Job:
    """Everything a forked process needs, set before the fork (inherited, never pickled)."""

    base: Path
    manifest: Path | None
    rows: Sequence[tuple[int, dict]]
    skip_ids: frozenset[str]
    dataset_id: int
    created_at: str


_JOB: _Job | None = None


def _chunk_rows(job: _Job, chunk: Chunk) -> Iterator[tuple[int, dict]]:
    if chunk.byte_range is not None:
        from catalog.sources import manifest_rows

        start, end = chunk.byte_range
        yield from manifest_rows(job.manifest, start=start, end=end, first_number=chunk.first_number)
    else:
        start, end = chunk.index_range
        yield from job.rows[start:end]


def _check_chunk(chunk: Chunk) -> ChunkResult:
    job = _JOB
    confiner = Confiner(job.base)  # per chunk: its directory cache must not outlive this check
    result = ChunkResult()
    valid = []
    for number, raw in _chunk_rows(job, chunk):
        result.rows += 1
        if "__error__" not in raw and str(raw.get("id") or raw.get("path") or "") in job.skip_ids:
            result.skipped += 1
            continue
        try:
            if "__error__" in raw:
                raise RowError("row", raw["__error__"])
            row = validate_row(raw, confiner)
        except RowError as exc:
            result.errors.append({"row": number, "field": exc.field, "message": exc.message})
            continue
        valid.append(row)
        result.keys.append((number, row["external_id"], row["path"]))
    for values in sample_tuples(valid, dataset_id=job.dataset_id, created_at=job.created_at):
        result.lines.append("\t".join(map(copy_text_value, values)) + "\n")
    return result


class Deduplicator:
    """Drops (as errors) rows whose id or path an earlier row of the source already has."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.paths: set[str] = set()

    def __call__(self, result: ChunkResult) -> ChunkResult:
        lines, keys = [], []
        for line, (number, external_id, path) in zip(result.lines, result.keys, strict=True):
            if external_id in self.ids:
                result.errors.append({"row": number, "field": "id", "message": "duplicate id in this source"})
            elif path in self.paths:
                result.errors.append(
                    {"row": number, "field": "path", "message": "duplicate path in this source"}
                )
            else:
                self.ids.add(external_id)
                self.paths.add(path)
                lines.append(line)
                keys.append((number, external_id, path))
        result.lines, result.keys = lines, keys
        return result


def _prepare_fork() -> None:
    """Import and register in the parent what the children use, so no child takes an import lock."""
    from PIL import Image

    from catalog import sources  # noqa: F401 - the manifest reader used in the children

    Image.init()


@contextmanager
def _children_allowed() -> Iterator[None]:
    """Let a daemonic process start the checkers. A Celery prefork child (the ``cpu`` queue's worker in
    every deployment) is daemonic, and multiprocessing refuses children to daemons because a killed
    daemon's children would be orphaned. Here they cannot be: the pool is closed and its processes
    terminated when the ``with`` ends (an exception included), and each checker asks the kernel to kill
    it when its parent dies (``_die_with_parent``), a time-limit SIGKILL of the Celery child included."""
    process = multiprocessing.current_process()
    daemon = process._config.get("daemon")
    if daemon:
        process._config["daemon"] = False
    try:
        yield
    finally:
        if daemon:
            process._config["daemon"] = daemon


def _die_with_parent() -> None:
    """Pool initializer: SIGKILL this checker when the process that forked it exits (Linux
    ``PR_SET_PDEATHSIG``; elsewhere nothing: the pool's own shutdown still terminates it)."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)


def worker_count(chunks: int) -> int:
    """Checking processes for ``chunks`` chunks: 1 (this process) when other threads are running here, as
    in a solo-pool Celery worker with its background threads. A fork copies every lock another thread
    holds at that moment; a forked checker was seen hanging on one. Prefork worker children and the
    command line are single-threaded and fork."""
    import threading

    from django.conf import settings

    if threading.active_count() > 1:
        return 1
    wanted = int(settings.IMPORT_WORKERS) or (os.cpu_count() or 1)
    return max(1, min(wanted, chunks))


def checked_chunks(
    chunks: Sequence[Chunk],
    *,
    base: Path,
    manifest: Path | None = None,
    rows: Sequence[tuple[int, dict]] = (),
    skip_ids: frozenset[str] = frozenset(),
    dataset_id: int,
    created_at: str,
    workers: int,
) -> Iterator[ChunkResult]:
    """Check every chunk (in ``workers`` processes when more than one, see ``worker_count``) and yield
    the results in source order."""
    global _JOB
    _JOB = _Job(base, manifest, rows, skip_ids, dataset_id, created_at)
    try:
        if workers == 1:
            for chunk in chunks:
                yield _check_chunk(chunk)
            return
        _prepare_fork()
        context = multiprocessing.get_context("fork")
        with _children_allowed(), context.Pool(workers, initializer=_die_with_parent) as pool:
            yield from pool.imap(_check_chunk, chunks)
    finally:
        _JOB = None
