"""Catalog reads. Training and annotation code never sees ``gt_mask_path`` through these."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from catalog.models import Dataset, ImportJob, Sample
from forgery_site.errors import NotFound


def dataset_list() -> QuerySet:
    return Dataset.objects.annotate(sample_count=Count("samples")).order_by("id")


def dataset_get(*, dataset_id: int) -> Dataset:
    dataset = dataset_list().filter(pk=dataset_id).first()
    if dataset is None:
        raise NotFound(f"Dataset {dataset_id} does not exist.")
    return dataset


def import_job_get(*, job_id: int) -> ImportJob:
    job = ImportJob.objects.filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"Import job {job_id} does not exist.")
    return job


def import_job_list(*, dataset: Dataset) -> QuerySet:
    return ImportJob.objects.filter(dataset=dataset).order_by("-id")


def sample_list(*, filters: dict | None = None) -> QuerySet:
    filters = filters or {}
    qs = Sample.objects.defer("gt_mask_path", "landmarks").order_by("id")
    for field in ("dataset", "split", "label", "manipulation", "has_mask", "video", "identity"):
        if filters.get(field) not in (None, ""):
            qs = qs.filter(**{field: filters[field]})
    return qs


def sample_get(*, sample_id: int) -> Sample:
    sample = Sample.objects.filter(pk=sample_id).first()
    if sample is None:
        raise NotFound(f"Sample {sample_id} does not exist.")
    return sample
