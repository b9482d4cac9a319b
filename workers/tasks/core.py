"""Core tasks: the worker health check and the dataset import."""

from __future__ import annotations

import logging
import os
import socket

from django.db import connection

from workers.celery_app import app

logger = logging.getLogger(__name__)


@app.task(name="workers.tasks.core.health")
def health() -> dict:
    """Round trip through the broker; proves the worker can reach PostgreSQL too."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        database = cursor.fetchone()[0]
    return {"ok": True, "hostname": socket.gethostname(), "pid": os.getpid(), "database": database}


@app.task(name="workers.tasks.core.dataset_import_task", bind=True)
def dataset_import_task(self, job_id: int) -> dict:
    from catalog.services import import_job_mark_failed, import_job_run

    try:
        job = import_job_run(job_id=job_id)
    except Exception as exc:
        # Transient errors are retried by PlatformTask; record the last one so the API shows it.
        if self.request.retries >= self.max_retries or not isinstance(exc, self.autoretry_for):
            import_job_mark_failed(job_id=job_id, message=f"{exc.__class__.__name__}: {exc}")
        raise
    return {"job": job.pk, "status": job.status, "inserted": job.inserted_rows}
