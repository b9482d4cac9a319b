"""Video import orchestration tasks (cpu queue): list + dispatch, the chord's callback, its errback.

``extract_videos`` (``workers/tasks/video.py``) does the per-video work; these tasks only move rows
and dispatch shards (see ``catalog.video_import``).
"""

from __future__ import annotations

import logging

from workers.celery_app import app
from workers.tasks.video import extract_videos

logger = logging.getLogger(__name__)


def _send_extraction(job, options: dict) -> int:
    """The job's pending videos as a chord: ``extract_videos(ids, options)`` per shard, then
    ``finalize_video_import(job_id)`` (its errback ``video_import_chord_failed`` when a shard task itself
    crashes). Queues come from ``workers.routing``. Returns the number of shards."""
    from celery import chord

    from catalog.video_import import video_import_plan, video_import_sent

    plan = video_import_plan(job=job, options=options)
    if plan is None:
        return 0
    shards, extract = plan
    header = [extract_videos.si(shard, extract) for shard in shards]
    finalize = finalize_video_import.si(job.pk)
    finalize.on_error(video_import_chord_failed.s(job_id=job.pk))
    if header:
        video_import_sent(job=job, task_id=chord(header, app=app)(finalize).id)  # the handle is not kept
    else:
        finalize.apply_async()  # nothing to extract (everything was imported already)
    return len(header)


@app.task(name="workers.tasks.video_import.video_import_task", bind=True)
def video_import_task(self, job_id: int, options: dict) -> dict:
    """List the layout into Video rows and send the extraction shards."""
    from catalog.models import ImportJob
    from catalog.video_import import video_import_list, video_import_mark_failed

    try:
        job = video_import_list(job_id=job_id, options=options)
        if job.status == ImportJob.Status.VALIDATING:
            _send_extraction(job, options)
    except Exception as exc:
        if self.request.retries >= self.max_retries or not isinstance(exc, self.autoretry_for):
            video_import_mark_failed(job_id=job_id, message=f"{exc.__class__.__name__}: {exc}")
        raise
    return {"job": job.pk, "status": job.status, "videos": job.total_rows}


@app.task(name="workers.tasks.video_import.finalize_video_import")
def finalize_video_import(job_id: int) -> dict:
    """The chord's callback: every shard has finished; write the summary and the final status."""
    from catalog.video_import import video_import_finalize

    job = video_import_finalize(job_id=job_id)
    return {"job": job.pk, "status": job.status, "message": job.message}


@app.task(name="workers.tasks.video_import.video_import_chord_failed")
def video_import_chord_failed(request, exc, traceback, job_id: int) -> None:
    """Errback of the chord: a shard task itself crashed, so the callback will not run."""
    from catalog.video_import import video_import_mark_failed

    message = f"an extraction shard failed ({exc.__class__.__name__}: {exc}); post the same source again to retry the videos left pending"
    logger.warning("video import shard failed", extra={"job": job_id, "error": str(exc)})
    video_import_mark_failed(job_id=job_id, message=message)
