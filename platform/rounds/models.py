"""Rounds (a state machine stored in PostgreSQL, DESIGN §3), selections and annotation tasks."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Round(models.Model):
    class State(models.TextChoices):
        CREATED = "created"
        TRAINING = "training"
        SCORING = "scoring"
        SELECTING = "selecting"
        ANNOTATING = "annotating"
        RETRAINING = "retraining"
        EVALUATING = "evaluating"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    dataset = models.ForeignKey("catalog.Dataset", on_delete=models.CASCADE, related_name="rounds")
    number = models.PositiveIntegerField(help_text="1, 2, ... within the dataset")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    state = models.CharField(max_length=12, choices=State.choices, default=State.CREATED, db_index=True)
    config = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Written by the workflow (rounds.workflow): phase, epoch, step, loss, ETA, per-phase timings,
    # per-detector metrics and model paths. Kept apart from ``config`` (the admin's validated input).
    progress = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["dataset", "number"], name="round_unique_number")]

    def __str__(self) -> str:
        return f"round {self.dataset_id}#{self.number} ({self.state})"


# Legal transitions of the round state machine; failed/cancelled are reachable from any live state.
_LIVE = ("created", "training", "scoring", "selecting", "annotating", "retraining", "evaluating")
ROUND_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "created": ("training",),
    "training": ("scoring",),
    "scoring": ("selecting",),
    "selecting": ("annotating",),
    "annotating": ("retraining",),
    "retraining": ("evaluating",),
    "evaluating": ("done",),
    "done": (),
    "failed": (),
    "cancelled": (),
}
for _state in _LIVE:
    ROUND_TRANSITIONS[_state] = (*ROUND_TRANSITIONS[_state], "failed", "cancelled")


class Selection(models.Model):
    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="selections")
    sample = models.ForeignKey("catalog.Sample", on_delete=models.CASCADE, related_name="selections")
    scores = models.JSONField(default=dict, help_text="per-strategy scores, e.g. {'entropy': 0.69}")
    score = models.FloatField(help_text="the combined score the rank was taken from")
    rank = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["round", "sample"], name="selection_unique_sample")]
        indexes = [models.Index(fields=["round", "rank"], name="selection_rank_idx")]

    def __str__(self) -> str:
        return f"selection {self.round_id}:{self.sample_id} #{self.rank}"


class AnnotationTask(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        CREATED = "created"
        ANNOTATED = "annotated"
        SKIPPED = "skipped"
        FAILED = "failed"

    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="annotation_tasks")
    sample = models.ForeignKey("catalog.Sample", on_delete=models.CASCADE, related_name="annotation_tasks")
    ls_project_id = models.BigIntegerField(null=True, blank=True)
    ls_task_id = models.BigIntegerField(null=True, blank=True, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["round", "sample"], name="annotation_task_unique_sample")
        ]

    def __str__(self) -> str:
        return f"task {self.round_id}:{self.sample_id} ({self.status})"
