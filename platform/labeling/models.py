"""State the Label Studio integration keeps beside the catalog and rounds models.

- ``LabelingProject``: one Label Studio project per round (see services.py for why), with the sync
  state shown on the round ("ok" or "degraded" while Label Studio cannot be reached).
- ``WebhookDelivery``: every webhook received, stored before it is enqueued, so a delivery is never
  lost even when the broker hiccups; (annotation id, updated_at, action) is unique -> duplicates are
  recognised and answered without a second mask version.
- ``AnnotationRecord``: the platform's view of one Label Studio annotation (latest updated_at seen,
  verdict, comment, mask version it produced, deleted or not). Reconciliation diffs against it.
- ``AnnotatorAccount``: a platform annotator's Label Studio user.
- ``SampleAgreement``: pairwise IoU between annotators of one sample, the consensus and a flag.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class LabelingProject(models.Model):
    class Sync(models.TextChoices):
        OK = "ok"
        DEGRADED = "degraded"

    round = models.OneToOneField("rounds.Round", on_delete=models.CASCADE, related_name="labeling_project")
    ls_project_id = models.BigIntegerField(unique=True)
    ls_storage_id = models.BigIntegerField(null=True, blank=True)
    ls_webhook_id = models.BigIntegerField(null=True, blank=True)
    model_version = models.CharField(max_length=128, blank=True, default="")
    active = models.BooleanField(default=True, help_text="reconciled periodically while the round annotates")
    sync_state = models.CharField(max_length=10, choices=Sync.choices, default=Sync.OK)
    sync_failures = models.PositiveIntegerField(default=0)
    last_sync_at = models.DateTimeField(null=True, blank=True)
    last_sync_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"LS project {self.ls_project_id} (round {self.round_id})"


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        STORED = "stored"
        UNCHANGED = "unchanged"
        DELETED = "deleted"
        REJECTED = "rejected"

    action = models.CharField(max_length=40)
    ls_project_id = models.BigIntegerField(null=True, blank=True)
    ls_annotation_id = models.BigIntegerField(db_index=True)
    ls_updated_at = models.CharField(max_length=40, blank=True, default="")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    message = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # When a dispatcher handed the delivery to a worker task (null: not yet; see labeling.apis).
    dispatched_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["ls_annotation_id", "ls_updated_at", "action"], name="webhook_delivery_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.ls_annotation_id} ({self.status})"


class AnnotationRecord(models.Model):
    class Verdict(models.TextChoices):
        NONE = ""
        FAKE = "fake"
        REAL = "real"
        UNSURE = "unsure"

    ls_annotation_id = models.BigIntegerField(unique=True)
    ls_updated_at = models.CharField(max_length=40)
    ls_user_id = models.BigIntegerField(null=True, blank=True)
    task = models.ForeignKey("rounds.AnnotationTask", on_delete=models.CASCADE, related_name="ls_annotations")
    sample = models.ForeignKey("catalog.Sample", on_delete=models.CASCADE, related_name="ls_annotations")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    verdict = models.CharField(max_length=8, choices=Verdict.choices, blank=True, default="")
    comment = models.TextField(blank=True, default="")
    was_cancelled = models.BooleanField(default=False)
    regions = models.PositiveIntegerField(default=0)
    mask = models.ForeignKey(
        "catalog.Mask", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    deleted = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"annotation {self.ls_annotation_id}"


class AnnotatorAccount(models.Model):
    """A platform annotator's place in Label Studio (``labeling.provisioning``, "Onboarding").

    ``invited``: the annotator has the organisation's invite link (on their queue page) and the email to
    sign up with; no Label Studio user with that email exists yet. ``joined``: linked, by email, to the
    Label Studio user the annotator created with their own password (``ls_user_id``). ``removed``: the
    role was taken away or the user deactivated, and the Label Studio membership was removed.
    """

    class Status(models.TextChoices):
        INVITED = "invited"
        JOINED = "joined"
        REMOVED = "removed"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ls_account")
    ls_user_id = models.BigIntegerField(unique=True, null=True, blank=True)
    ls_email = models.EmailField(help_text="the email the annotator signs up and logs into Label Studio with")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.INVITED, db_index=True)
    is_oracle = models.BooleanField(default=False)
    joined_at = models.DateTimeField(null=True, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.user_id} -> LS user {self.ls_user_id} ({self.status})"


class SampleAgreement(models.Model):
    round = models.ForeignKey("rounds.Round", on_delete=models.CASCADE, related_name="agreements")
    sample = models.ForeignKey("catalog.Sample", on_delete=models.CASCADE, related_name="agreements")
    annotators = models.PositiveIntegerField()
    pairwise_iou = models.JSONField(default=list, help_text="[{a, b, iou}] over annotation ids")
    mean_iou = models.FloatField()
    low_agreement = models.BooleanField(default=False, db_index=True)
    consensus_mask = models.ForeignKey("catalog.Mask", null=True, blank=True, on_delete=models.SET_NULL)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["round", "sample"], name="agreement_unique_sample")]

    def __str__(self) -> str:
        return f"agreement {self.sample_id} ({self.mean_iou:.2f})"


class LabelStudioInstance(models.Model):
    """A Label Studio instance the platform has talked to, known by the marker the platform writes into
    its organisation's title at first contact (``labeling.instance``). Exactly one is ``current``: the
    one whose projects, tasks and users the platform's rows point at. When the server behind
    LABEL_STUDIO_URL answers with another marker (or none), the labeling integration is in the
    ``wrong_instance`` state until an admin re-provisions into it or points the platform back."""

    marker = models.CharField(max_length=32, unique=True)
    url = models.CharField(max_length=512)
    organization_id = models.BigIntegerField(null=True, blank=True)
    organization_created_at = models.CharField(max_length=64, blank=True, default="")
    current = models.BooleanField(default=False)
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["current"], condition=models.Q(current=True), name="one_current_label_studio"
            )
        ]

    def __str__(self) -> str:
        return f"Label Studio {self.marker}{' (current)' if self.current else ''}"
