"""Catalog services: datasets and the all-or-nothing, idempotent dataset import.

An import is a job row (progress visible through the API) run by ``import_job_run``: every row is
validated first (errors collected per row); if any row fails, the job fails with the report and nothing
is written. Otherwise all rows go in with one COPY inside one transaction. Re-running a job, or
importing the same files again, adds no duplicates (unique constraints + ON CONFLICT DO NOTHING).
"""

from __future__ import annotations

import gc
import itertools
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog import rowcheck
from catalog.bulk import copy_samples
from catalog.models import Dataset, ImportJob, Sample
from catalog.paths import PathError, resolve_source
from catalog.rowcheck import Chunk, Deduplicator, checked_chunks, worker_count
from catalog.sources import SourceError, faceforensics_rows, manifest_chunks, manifest_rows
from forgery_site.errors import Conflict, InvalidInput, NotFound

logger = logging.getLogger(__name__)
MAX_REPORTED_ERRORS = 1000
PROGRESS_EVERY_S = 0.5


def dataset_create(*, name: str, description: str = "", user=None) -> Dataset:
    if Dataset.objects.filter(name=name).exists():
        raise Conflict(f"Dataset {name!r} exists.", errors={"name": ["A dataset with that name exists."]})
    return Dataset.objects.create(name=name, description=description, created_by=user)


def dataset_get_or_create(*, name: str, user=None) -> Dataset:
    dataset, _ = Dataset.objects.get_or_create(name=name, defaults={"created_by": user})
    return dataset


def import_job_create(*, dataset: Dataset, source: str, format: str, user=None) -> ImportJob:
    """Check the source (confined to the import roots, right kind of path) and record a pending job."""
    if format not in ImportJob.Format.values or format == ImportJob.Format.EXPANSION:
        raise InvalidInput(
            "Unknown format.",
            errors={"format": [f"Choose one of {[f for f in ImportJob.Format.values if f != 'expansion']}."]},
        )
    try:
        resolved = resolve_source(source)
    except PathError as exc:
        raise InvalidInput(f"Source rejected: {exc}.", errors={"source": [str(exc)]}) from None
    if format == ImportJob.Format.MANIFEST and not resolved.is_file():
        raise InvalidInput("A manifest source must be a file.", errors={"source": ["not a file"]})
    if format == ImportJob.Format.MANIFEST and resolved.suffix.lower() not in (".jsonl", ".csv"):
        # Refused before the file is opened: whatever else it is (a pickle, an archive), it is never read.
        raise InvalidInput(
            "A manifest must be a .jsonl or .csv file.", errors={"source": ["must be .jsonl or .csv"]}
        )
    if format not in (ImportJob.Format.MANIFEST, ImportJob.Format.FACEFORENSICS) and not resolved.is_dir():
        raise InvalidInput(
            "A video dataset source must be a directory.", errors={"source": ["not a directory"]}
        )
    if format == ImportJob.Format.FACEFORENSICS and not resolved.is_dir():
        raise InvalidInput(
            "A FaceForensics++ source must be a directory.", errors={"source": ["not a directory"]}
        )
    return ImportJob.objects.create(dataset=dataset, source=str(resolved), format=format, created_by=user)


@dataclass
class _Plan:
    base: Path
    chunks: list[Chunk]
    total: int
    manifest: Path | None = None
    rows: list = field(default_factory=list)


def _plan(job: ImportJob) -> _Plan:
    """The source cut into chunks. A .jsonl manifest is only scanned for line ends here: its rows are
    decoded in the processes that check them. Other sources are read here (bounded by the row limit)."""
    source = Path(job.source)
    if job.format == ImportJob.Format.MANIFEST and source.suffix.lower() == ".jsonl":
        ranges, total = manifest_chunks(source, rowcheck.CHUNK_ROWS)
        chunks = [Chunk(byte_range=(a, b), first_number=first) for a, b, first in ranges]
        return _Plan(source.parent, chunks, total, manifest=source)
    base, rows = (
        (source.parent, manifest_rows(source))
        if job.format == ImportJob.Format.MANIFEST
        else (source, faceforensics_rows(source))
    )
    rows = list(itertools.islice(rows, settings.IMPORT_MAX_ROWS + 1))  # bounded: stop past the limit
    size = rowcheck.CHUNK_ROWS
    chunks = [Chunk(index_range=(i, min(i + size, len(rows)))) for i in range(0, len(rows), size)]
    return _Plan(base, chunks, len(rows), rows=rows)


class _Invalid(Exception):
    """Some rows are invalid: the transaction that streamed the valid ones is rolled back."""


class _CopyStream:
    """A file for COPY FROM STDIN: each read is the next checked chunk's valid lines.

    Once a row is invalid no more lines are written (the transaction will be rolled back), but every
    chunk is still checked so the job reports all the errors at once."""

    def __init__(self, results, progress) -> None:
        self.results = results
        self.progress = progress
        self.dedupe = Deduplicator()
        self.errors: list[dict] = []
        self.valid = self.skipped = self.done = 0

    def read(self, size: int = -1) -> str:
        for result in self.results:
            result = self.dedupe(result)
            self.errors.extend(result.errors)
            self.skipped += result.skipped
            self.valid += len(result.lines)
            self.done += result.rows
            self.progress(self.done, len(self.errors))
            if result.lines and not self.errors:
                return "".join(result.lines)
        return ""


def _save_progress_aside(job: ImportJob, **fields) -> None:
    """Progress written on a connection of its own while this one streams the COPY (its transaction
    would hide the numbers until the end)."""
    from django.db import connection

    def save() -> None:
        try:
            ImportJob.objects.filter(pk=job.pk).update(**fields)
        finally:
            connection.close()

    thread = threading.Thread(target=save, name="import-progress")
    thread.start()
    thread.join()


def _save_progress(job: ImportJob, **fields) -> None:
    for key, value in fields.items():
        setattr(job, key, value)
    ImportJob.objects.filter(pk=job.pk).update(**fields)


def _fail(job: ImportJob, message: str, errors: list[dict], error_count: int) -> ImportJob:
    _save_progress(
        job,
        status=ImportJob.Status.FAILED,
        message=message,
        errors=errors[:MAX_REPORTED_ERRORS],
        error_count=error_count,
        finished_at=timezone.now(),
    )
    logger.info("import failed", extra={"job": job.pk, "errors": error_count, "reason": message})
    return job


@contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector while building ~100k acyclic row dicts.

    Every few hundred container allocations trigger a collection that walks all live objects, so parsing
    a 100k-row manifest spent most of its time in the collector (measured 20.5 s with vs 3.8 s without).
    The rows hold no reference cycles; reference counting frees them.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def import_job_run(*, job_id: int) -> ImportJob:
    """Validate every row, then write all of them or none. Safe to run twice."""
    with _gc_paused():
        return _import_job_run(job_id)


def _import_job_run(job_id: int) -> ImportJob:
    job = ImportJob.objects.select_related("dataset").filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"Import job {job_id} does not exist.")
    if job.status == ImportJob.Status.SUCCEEDED:
        return job  # a re-delivered task: nothing left to do
    _save_progress(job, status=ImportJob.Status.VALIDATING, started_at=timezone.now(), processed_rows=0)
    try:
        plan = _plan(job)
    except (SourceError, PathError, OSError, UnicodeDecodeError) as exc:
        return _fail(
            job, f"source unreadable: {exc}", [{"row": None, "field": "source", "message": str(exc)}], 1
        )
    if plan.total > settings.IMPORT_MAX_ROWS:
        message = f"the source's rows exceed the limit of {settings.IMPORT_MAX_ROWS}"
        return _fail(job, message, [{"row": None, "field": "source", "message": message}], 1)
    if not plan.total:
        return _fail(job, "the source has no rows", [{"row": None, "field": "source", "message": "empty"}], 1)
    _save_progress(job, total_rows=plan.total)

    # Rows whose id is already in the dataset are skipped (idempotent re-import) without re-checking files.
    existing_ids = frozenset(
        Sample.objects.filter(dataset_id=job.dataset_id).values_list("external_id", flat=True)
    )
    clock = {"last": time.monotonic()}

    def progress(done: int, error_count: int) -> None:
        if time.monotonic() - clock["last"] > PROGRESS_EVERY_S:
            job.processed_rows, job.error_count = done, error_count
            _save_progress_aside(job, processed_rows=done, error_count=error_count)
            clock["last"] = time.monotonic()

    started = time.monotonic()
    created_at = timezone.now().isoformat()
    workers = worker_count(len(plan.chunks))
    results = checked_chunks(
        plan.chunks, base=plan.base, manifest=plan.manifest, rows=plan.rows, skip_ids=existing_ids,
        dataset_id=job.dataset_id, created_at=created_at, workers=workers,
    )  # fmt: skip
    stream = _CopyStream(results, progress)
    try:
        with transaction.atomic():
            # The dataset row lock serialises imports into one dataset, so "empty" stays true until commit.
            Dataset.objects.select_for_update().filter(pk=job.dataset_id).first()
            empty = not Sample.objects.filter(dataset_id=job.dataset_id).exists()
            # Valid rows stream into COPY while later chunks are still being checked; an invalid row
            # anywhere rolls all of them back.
            inserted = copy_samples(stream, direct=empty)
            if stream.errors:
                raise _Invalid
            existing = stream.skipped + stream.valid - inserted
            _save_progress(
                job,
                status=ImportJob.Status.SUCCEEDED,
                processed_rows=plan.total,
                error_count=0,
                inserted_rows=inserted,
                existing_rows=existing,
                message=f"{inserted} new samples, {existing} already present",
                errors=[],
                finished_at=timezone.now(),
            )
    except _Invalid:
        errors = sorted(stream.errors, key=lambda error: error["row"] or 0)
        _save_progress(job, processed_rows=plan.total)
        return _fail(
            job, f"{len(errors)} of {plan.total} rows are invalid; nothing was imported", errors, len(errors)
        )
    finally:
        results.close()  # stops the checking processes if the COPY failed half way
    logger.info(
        "import succeeded",
        extra={
            "job": job.pk,
            "inserted": inserted,
            "existing": existing,
            "seconds": round(time.monotonic() - started, 3),
            "workers": workers,
        },
    )
    return job


def import_job_mark_failed(*, job_id: int, message: str) -> None:
    """Used by the task when the run itself crashed (the error is recorded, nothing was written)."""
    ImportJob.objects.filter(pk=job_id).exclude(status=ImportJob.Status.SUCCEEDED).update(
        status=ImportJob.Status.FAILED, message=message[:2000], finished_at=timezone.now()
    )
