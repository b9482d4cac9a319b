"""Dataset expansion on the cpu queue (``catalog.expansion``: SJEDD's landmark-guided region swaps)."""

from __future__ import annotations

from workers.celery_app import app


@app.task(name="workers.tasks.expansion.expand_dataset_task", bind=True)
def expand_dataset_task(self, job_id: int, options: dict) -> dict:
    from django.utils import timezone

    from catalog.expansion import expansion_run
    from catalog.models import ImportJob

    try:
        job = expansion_run(job_id=job_id, options=options)
    except Exception as exc:
        if self.request.retries >= self.max_retries or not isinstance(exc, self.autoretry_for):
            ImportJob.objects.filter(pk=job_id).exclude(status="succeeded").update(
                status="failed", message=f"{exc.__class__.__name__}: {exc}"[:2000], finished_at=timezone.now()
            )
        raise
    return {"job": job.pk, "status": job.status, "inserted": job.inserted_rows}
