"""``manage.py import_dataset NAME SOURCE [--format manifest|faceforensics]``: import synchronously.

Same service as the API's Celery task; prints the per-row error report and exits non-zero on failure.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from catalog.models import ImportJob
from catalog.services import dataset_get_or_create, import_job_create, import_job_run
from forgery_site.errors import DomainError


class Command(BaseCommand):
    help = "Import a manifest (JSONL/CSV) or a FaceForensics++ frames folder into a dataset (created if new)."

    def add_arguments(self, parser):
        parser.add_argument("dataset", help="dataset name (slug); created when it does not exist")
        parser.add_argument("source", help="manifest file or FF++ root, absolute or relative to MEDIA_ROOT")
        parser.add_argument("--format", default="manifest", choices=ImportJob.Format.values)

    def handle(self, *args, **opts):
        try:
            dataset = dataset_get_or_create(name=opts["dataset"])
            job = import_job_create(dataset=dataset, source=opts["source"], format=opts["format"])
            job = import_job_run(job_id=job.pk)
        except DomainError as exc:
            raise CommandError(f"{exc.message} {exc.errors or ''}".strip()) from exc
        for error in job.errors[:50]:
            self.stderr.write(f"row {error['row']}: {error['field']}: {error['message']}")
        if job.status != ImportJob.Status.SUCCEEDED:
            raise CommandError(f"import {job.pk} failed: {job.message}")
        self.stdout.write(f"import {job.pk} of dataset {dataset.name} (id {dataset.pk}): {job.message}")
