"""Video imports: list a video dataset into ``Video`` rows, extract them in shards, report progress.

An ``ImportJob`` with a video format (``ffpp-video``, ``celebdf``, ``dfdc``, ``video-folder``) runs in
two steps:

1. ``video_import_list`` (the cpu task ``video_import_task``): the layout parser
   (``catalog.video_sources``) streams ``VideoItem``s; they go in by batches of ``BATCH`` with
   ``INSERT ... ON CONFLICT (dataset, external_id) DO NOTHING``, inside one transaction, so a layout
   error found half-way (too many videos, contradictory split lists) writes nothing. Videos already in
   the dataset that are *pending* or *failed* are handed to this job (and reset to pending); *done*
   ones are left alone and counted as already imported. Entries the parser rejects (unknown label,
   missing file, ...) are recorded in the job's ``errors`` with their file name; they do not stop the
   import.
2. ``video_import_plan``: the job's pending videos, read by id in chunks, are cut into shards of
   ``shard_size``; the cpu task sends them as a Celery chord (built in ``workers.tasks.video_import``): ``extract_videos(ids, options)`` per shard (cpu queue),
   then ``finalize_video_import(job_id)`` which writes the job's summary and final status. A video
   that cannot be decoded or has no face ends FAILED with its reason; the others import. The job
   fails only when the source is unreadable, when no video could be imported, or when a shard itself
   crashed (its videos stay pending; posting the same source again re-dispatches them).

Progress (``video_progress``) is aggregated from the job's Video rows (index on import job + status):
videos total / pending / running / done / failed, frames sampled, faces, samples created, and the first
failures with their reasons.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from catalog.models import ImportJob, Video
from catalog.paths import PathError
from catalog.sources import SourceError
from catalog.video_items import VideoItem, VideoProblem
from catalog.video_sources import FFPP_COMPRESSIONS, video_entries
from forgery_site.errors import InvalidInput, NotFound

logger = logging.getLogger(__name__)

VIDEO_FORMATS = (
    ImportJob.Format.FFPP_VIDEO,
    ImportJob.Format.CELEBDF,
    ImportJob.Format.DFDC,
    ImportJob.Format.VIDEO_FOLDER,
)
BATCH = 1000
ID_CHUNK = 5000
MAX_REPORTED_ENTRIES = 1000  # rejected entries kept in the job's errors (the count stays exact)
MAX_REPORTED_FAILURES = 50  # failed videos listed in the progress and the final report
# ``semantic_targets``: SJEDD targets of the fakes from their manipulation method (``ml.labels``:
# "released" = the official code's training targets, "paper" = the paper's hierarchy, "none").
DEFAULT_OPTIONS = {"frames": 32, "size": 128, "scale": 1.3, "shard_size": 16, "semantic_targets": "released"}
OPTION_LIMITS = {"frames": (1, 512), "size": (32, 1024), "shard_size": (1, 1000)}


def is_video_format(format: str) -> bool:
    return format in VIDEO_FORMATS


def video_options(**given) -> dict:
    """Defaults filled in and every option checked (the API checks too; the task trusts nothing)."""
    options = dict(DEFAULT_OPTIONS)
    for key, value in given.items():
        if value is None:
            continue
        if key in OPTION_LIMITS:
            low, high = OPTION_LIMITS[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidInput(
                    f"{key} must be an integer in [{low}, {high}].", errors={key: ["out of range"]}
                )
            options[key] = value
        elif key == "scale":
            if not isinstance(value, int | float) or not 1.0 <= float(value) <= 2.0:
                raise InvalidInput("scale must be in [1.0, 2.0].", errors={"scale": ["out of range"]})
            options[key] = float(value)
        elif key == "semantic_targets":
            from ml.labels import SEMANTIC_SCHEMES

            if value not in SEMANTIC_SCHEMES:
                raise InvalidInput(
                    f"semantic_targets must be one of {list(SEMANTIC_SCHEMES)}.",
                    errors={"semantic_targets": ["Unknown scheme."]},
                )
            options[key] = value
        elif key == "compression":
            values = [value] if isinstance(value, str) else list(value)
            unknown = sorted(set(values) - set(FFPP_COMPRESSIONS))
            if not values or unknown:
                raise InvalidInput(
                    f"compression must be among {list(FFPP_COMPRESSIONS)}.",
                    errors={"compression": [str(unknown)]},
                )
            options[key] = sorted(set(values))
        else:
            raise InvalidInput(f"Unknown video import option {key!r}.", errors={key: ["Unknown option."]})
    return options


def _entries(job: ImportJob, options: dict) -> Iterator:
    limits = {
        "max_videos": settings.IMPORT_MAX_VIDEOS,
        "max_bytes": settings.IMPORT_MAX_VIDEO_BYTES,
    }
    if options.get("compression"):
        if job.format != ImportJob.Format.FFPP_VIDEO:
            raise SourceError("the compression option applies to FaceForensics++ only")
        limits["compressions"] = tuple(options["compression"])
    return video_entries(job.format, Path(job.source), **limits)


def _batches(entries: Iterator, size: int) -> Iterator[list]:
    while True:
        batch = list(islice(entries, size))
        if not batch:
            return
        yield batch


_INSERT = """
INSERT INTO catalog_video (
    dataset_id, import_job_id, external_id, source_path, mask_source_path, label, manipulation, split,
    identity, params, status, reason, frames_sampled, faces, samples_created, attempts, worker
)
SELECT %s, %s, x.external_id, x.source_path, x.mask_source_path, x.label, x.manipulation, x.split,
       x.identity, x.params::jsonb, 'pending', '', 0, 0, 0, 0, ''
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[])
     AS x(external_id, source_path, mask_source_path, label, manipulation, split, identity, params)
ON CONFLICT (dataset_id, external_id) DO NOTHING
"""
# A join with the batch's ids (not ``= ANY(array)``, which re-scans the array for every row of the dataset).
_REQUEUE = """
UPDATE catalog_video AS v SET import_job_id = %s, status = 'pending', reason = ''
FROM unnest(%s::text[]) AS x(external_id)
WHERE v.dataset_id = %s AND v.external_id = x.external_id AND v.status IN ('pending', 'failed')
  AND v.import_job_id IS DISTINCT FROM %s
"""


def _write_batch(job: ImportJob, items: list[VideoItem]) -> tuple[int, int]:
    """Insert new videos, hand pending/failed ones to this job; returns (inserted, requeued)."""
    import orjson

    if not items:
        return 0, 0
    columns = list(
        zip(
            *(
                (
                    i.external_id,
                    i.source_path,
                    i.mask_source_path,
                    i.label,
                    i.manipulation,
                    i.split,
                    i.identity,
                    orjson.dumps(i.params).decode(),
                )  # fmt: skip
                for i in items
            ),
            strict=True,
        )
    )
    with connection.cursor() as cursor:
        cursor.execute(_INSERT, [job.dataset_id, job.pk, *map(list, columns)])
        inserted = cursor.rowcount
        requeued = 0
        if inserted < len(items):  # some were there already: hand the unfinished ones to this job
            cursor.execute(_REQUEUE, [job.pk, list(columns[0]), job.dataset_id, job.pk])
            requeued = cursor.rowcount
    return inserted, requeued


def _save(job: ImportJob, **fields) -> None:
    for key, value in fields.items():
        setattr(job, key, value)
    ImportJob.objects.filter(pk=job.pk).update(**fields)


def _fail(job: ImportJob, message: str, errors: list[dict] | None = None) -> ImportJob:
    errors = errors if errors is not None else [{"row": None, "field": "source", "message": message}]
    _save(
        job,
        status=ImportJob.Status.FAILED,
        message=message[:2000],
        errors=errors,
        error_count=max(len(errors), job.error_count),
        finished_at=timezone.now(),
    )
    logger.info("video import failed", extra={"job": job.pk, "reason": message})
    return job


def video_import_list(*, job_id: int, options: dict) -> ImportJob:
    """Step 1: stream the layout into Video rows (all or nothing); safe to run again."""
    job = ImportJob.objects.select_related("dataset").filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"Import job {job_id} does not exist.")
    if not is_video_format(job.format):
        raise InvalidInput(f"Import job {job_id} is not a video import ({job.format}).")
    if job.status != ImportJob.Status.PENDING and job.status != ImportJob.Status.VALIDATING:
        return job  # already listed and dispatched (a re-delivered task), or finished
    _save(job, status=ImportJob.Status.VALIDATING, started_at=job.started_at or timezone.now())
    listed = inserted = requeued = rejected = 0
    problems: list[dict] = []
    try:
        with transaction.atomic():
            for batch in _batches(_entries(job, options), BATCH):
                items = [e for e in batch if isinstance(e, VideoItem)]
                for problem in (e for e in batch if isinstance(e, VideoProblem)):
                    rejected += 1
                    if len(problems) < MAX_REPORTED_ENTRIES:
                        problems.append({**problem.as_error(), "kind": "entry"})
                new, again = _write_batch(job, items)
                listed += len(items)
                inserted += new
                requeued += again
    except (SourceError, PathError, OSError) as exc:
        return _fail(job, f"source unreadable: {exc}")
    if rejected > len(problems):
        more = rejected - len(problems)
        problems.append(
            {
                "row": None,
                "field": "",
                "message": f"and {more} more entries rejected",
                "kind": "entry",
                "more": more,
            }
        )
    already = listed - inserted - requeued
    _save(
        job,
        total_rows=listed,
        existing_rows=already,
        error_count=rejected,
        errors=problems,
        message=(
            f"listed {listed} videos: {inserted} new, {requeued} queued again, {already} already imported"
            + (f"; {rejected} entries rejected" if rejected else "")
        ),
    )
    logger.info(
        "video import listed",
        extra={
            "job": job.pk,
            "listed": listed,
            "inserted": inserted,
            "requeued": requeued,
            "rejected": rejected,
        },
    )
    if listed == 0:
        return _fail(
            job,
            "the source has no importable video" + (f" ({rejected} rejected)" if rejected else ""),
            problems or None,
        )
    return job


def _pending_ids(job: ImportJob) -> Iterator[int]:
    last = 0
    while True:
        chunk = list(
            Video.objects.filter(import_job=job, status=Video.Status.PENDING, pk__gt=last)
            .order_by("pk")
            .values_list("pk", flat=True)[:ID_CHUNK]
        )
        if not chunk:
            return
        yield from chunk
        last = chunk[-1]


def video_import_plan(*, job: ImportJob, options: dict) -> tuple[list[list[int]], dict] | None:
    """Step 2, the platform's part: the job's pending videos cut into shards of ``shard_size`` ids and the
    extraction options; the job moves to WRITING. None when the job is not ready for it. The cpu task
    (``workers.tasks.video_import``) sends the shards as a chord and records it (``video_import_sent``)."""
    if job.status != ImportJob.Status.VALIDATING:
        return None
    extract = {"frames": options["frames"], "size": options["size"], "scale": options["scale"],
               "semantic_targets": options.get("semantic_targets", "released")}  # fmt: skip
    ids = _pending_ids(job)
    shards = list(iter(lambda: list(islice(ids, options["shard_size"])), []))
    _save(job, status=ImportJob.Status.WRITING)
    logger.info(
        "video import planned",
        extra={"job": job.pk, "shards": len(shards), "shard_size": options["shard_size"]},
    )
    return shards, extract


def video_import_sent(*, job: ImportJob, task_id: str) -> None:
    """Record the chord that extracts the job's shards (its id, for the operations view)."""
    _save(job, task_id=task_id or "")


# ------------------------------------------------------------------------------------------ progress
def job_videos(*, job: ImportJob, status: str | None = None) -> QuerySet:
    qs = Video.objects.filter(import_job=job).order_by("id")
    return qs.filter(status=status) if status else qs


def video_progress(job: ImportJob) -> dict:
    """Live numbers from the job's Video rows (one aggregate query plus the first failures)."""
    counts = Video.objects.filter(import_job=job).aggregate(
        total=Count("id"),
        pending=Count("id", filter=Q(status=Video.Status.PENDING)),
        running=Count("id", filter=Q(status=Video.Status.RUNNING)),
        done=Count("id", filter=Q(status=Video.Status.DONE)),
        failed=Count("id", filter=Q(status=Video.Status.FAILED)),
        frames=Sum("frames_sampled", default=0),
        faces=Sum("faces", default=0),
        samples=Sum("samples_created", default=0),
    )
    failures = [
        {"video": pk, "external_id": external_id, "reason": reason}
        for pk, external_id, reason in job_videos(job=job, status=Video.Status.FAILED).values_list(
            "pk", "external_id", "reason"
        )[:MAX_REPORTED_FAILURES]
    ]
    entries = [e for e in job.errors or [] if isinstance(e, dict) and e.get("kind") == "entry"]
    rejected = sum(int(e.get("more", 1)) for e in entries)
    finished = counts["done"] + counts["failed"]
    return {
        **counts,
        "already_imported": job.existing_rows,
        "entries_rejected": rejected,
        "fraction": round(finished / counts["total"], 4)
        if counts["total"]
        else (1.0 if job.status == ImportJob.Status.SUCCEEDED else 0.0),
        "failures": failures,
    }


def video_import_finalize(*, job_id: int) -> ImportJob:
    """The chord's callback: summary and final status, written once (the job row is locked)."""
    with transaction.atomic():
        job = ImportJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            raise NotFound(f"Import job {job_id} does not exist.")
        if job.status in (ImportJob.Status.SUCCEEDED, ImportJob.Status.FAILED):
            return job
        progress = video_progress(job)
        entries = [e for e in job.errors or [] if isinstance(e, dict) and e.get("kind") == "entry"]
        failures = [
            {
                "row": None,
                "field": f["external_id"],
                "message": f["reason"],
                "kind": "video",
                "video": f["video"],
            }
            for f in progress["failures"]
        ]
        unfinished = progress["pending"] + progress["running"]
        summary = (
            f"{progress['done']} videos imported ({progress['frames']} frames, {progress['faces']} faces, "
            f"{progress['samples']} new samples), {progress['failed']} failed, "
            f"{progress['already_imported']} already imported"
        )
        if progress["entries_rejected"]:
            summary += f", {progress['entries_rejected']} entries rejected"
        if unfinished:
            parts = []
            if progress["running"]:  # claimed by another import's shard that is still working on them
                parts.append(f"{progress['running']} videos are still being extracted by another task")
            if progress["pending"]:
                parts.append(f"{progress['pending']} videos were not processed")
            status, summary = ImportJob.Status.FAILED, f"{'; '.join(parts)}; {summary}"
        elif progress["total"] and not progress["done"]:
            status, summary = ImportJob.Status.FAILED, f"no video could be imported; {summary}"
        else:
            status = ImportJob.Status.SUCCEEDED
        _save(
            job,
            status=status,
            processed_rows=progress["done"] + progress["failed"],
            inserted_rows=progress["samples"],
            error_count=progress["entries_rejected"] + progress["failed"],
            errors=entries + failures,
            message=summary,
            finished_at=timezone.now(),
        )
    logger.info("video import finished", extra={"job": job.pk, "status": status, "summary": summary})
    return job


def video_import_mark_failed(*, job_id: int, message: str) -> None:
    """A shard or the listing crashed: the job fails with the reason; unprocessed videos stay pending."""
    ImportJob.objects.filter(pk=job_id).exclude(
        status__in=(ImportJob.Status.SUCCEEDED, ImportJob.Status.FAILED)
    ).update(status=ImportJob.Status.FAILED, message=message[:2000], finished_at=timezone.now())
