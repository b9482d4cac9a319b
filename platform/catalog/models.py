"""Datasets, samples, masks and import jobs.

Paths are stored relative to ``MEDIA_ROOT`` (one media root, shared with Label Studio). A sample's
ground-truth mask path (``gt_mask_path``) is kept apart: no API serializer outputs it and the training
selectors do not read it; only the oracle annotator and evaluation use it.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

UNKNOWN_REGION_TARGETS = [-1] * 10  # ml.labels order, -1 = unknown


def unknown_region_targets() -> list[int]:
    return list(UNKNOWN_REGION_TARGETS)


class Dataset(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class Sample(models.Model):
    class Label(models.TextChoices):
        REAL = "real"
        FAKE = "fake"

    class Split(models.TextChoices):
        TRAIN = "train"
        VAL = "val"
        TEST = "test"
        UNASSIGNED = "unassigned"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="samples")
    external_id = models.CharField(max_length=255)
    path = models.CharField(max_length=1024, help_text="image path relative to MEDIA_ROOT")
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    label = models.CharField(max_length=4, choices=Label.choices)
    manipulation = models.CharField(max_length=64, default="none")
    params = models.JSONField(default=dict, blank=True)
    identity = models.CharField(max_length=128, blank=True, default="")
    video = models.CharField(max_length=255, blank=True, default="")
    frame = models.IntegerField(default=0)
    split = models.CharField(max_length=10, choices=Split.choices, default=Split.UNASSIGNED)
    region_targets = models.JSONField(default=unknown_region_targets)
    landmarks = models.JSONField(null=True, blank=True)
    # Ground truth, kept apart (see module docstring). Relative to MEDIA_ROOT; empty for real samples.
    gt_mask_path = models.CharField(max_length=1024, blank=True, default="")
    has_mask = models.BooleanField(default=False, help_text="an annotated mask exists (pool queries)")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["dataset", "external_id"], name="sample_unique_external_id"),
            models.UniqueConstraint(fields=["dataset", "path"], name="sample_unique_path"),
        ]
        indexes = [
            models.Index(fields=["dataset", "split", "has_mask"], name="sample_pool_idx"),
            models.Index(fields=["dataset", "label"], name="sample_label_idx"),
            models.Index(fields=["dataset", "video"], name="sample_video_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.dataset_id}:{self.external_id}"


class Mask(models.Model):
    """One version of a sample's forgery mask (binary PNG under MEDIA_ROOT)."""

    class Source(models.TextChoices):
        ANNOTATOR = "annotator"
        ORACLE = "oracle"
        MODEL_DRAFT = "model_draft"

    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="masks")
    version = models.PositiveIntegerField()
    source = models.CharField(max_length=16, choices=Source.choices)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    ls_annotation_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    path = models.CharField(max_length=1024, help_text="mask PNG relative to MEDIA_ROOT")
    area = models.FloatField(help_text="fraction of the image marked as forged, in [0, 1]")
    checksum = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["sample", "version"], name="mask_unique_version")]

    def __str__(self) -> str:
        return f"mask {self.sample_id} v{self.version}"


class ImportJob(models.Model):
    """One dataset import: validated whole, written whole (or not at all), progress visible via the API."""

    class Format(models.TextChoices):
        MANIFEST = "manifest"
        FACEFORENSICS = "faceforensics"
        FFPP_VIDEO = "ffpp-video"
        CELEBDF = "celebdf"
        DFDC = "dfdc"
        VIDEO_FOLDER = "video-folder"
        EXPANSION = "expansion"  # catalog.expansion: new fakes from the dataset's own reals

    class Status(models.TextChoices):
        PENDING = "pending"
        VALIDATING = "validating"
        WRITING = "writing"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="imports")
    source = models.CharField(max_length=1024, help_text="manifest file or FaceForensics++ root")
    format = models.CharField(max_length=16, choices=Format.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    total_rows = models.PositiveIntegerField(default=0)
    processed_rows = models.PositiveIntegerField(default=0)
    inserted_rows = models.PositiveIntegerField(default=0)
    existing_rows = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True, help_text="first errors: {row, field, message}")
    message = models.TextField(blank=True, default="")
    task_id = models.CharField(max_length=64, blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"import {self.pk} ({self.status})"


class Video(models.Model):
    """One source video of a video dataset; its sampled face crops become Samples (``Sample.video``)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="videos")
    import_job = models.ForeignKey(
        ImportJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="videos"
    )
    external_id = models.CharField(max_length=255, help_text='e.g. "ffpp/manipulated/Deepfakes/c23/000_003"')
    source_path = models.CharField(
        max_length=1024, help_text="absolute path of the video inside an import root"
    )
    mask_source_path = models.CharField(max_length=1024, blank=True, default="", help_text="FF++ mask video")
    label = models.CharField(max_length=4, choices=Sample.Label.choices)
    manipulation = models.CharField(max_length=64, default="none")
    split = models.CharField(max_length=10, choices=Sample.Split.choices, default=Sample.Split.UNASSIGNED)
    identity = models.CharField(max_length=128, blank=True, default="")
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    reason = models.TextField(blank=True, default="")
    frames_sampled = models.PositiveIntegerField(default=0)
    faces = models.PositiveIntegerField(default=0)
    samples_created = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=255, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["dataset", "external_id"], name="video_unique_external_id")
        ]
        indexes = [models.Index(fields=["import_job", "status"], name="video_job_status_idx")]

    def __str__(self) -> str:
        return f"{self.dataset_id}:{self.external_id} ({self.status})"
