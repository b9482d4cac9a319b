"""A trained detector version: kind, the round that made it, config, metrics, artifacts and checksum."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class DetectorVersion(models.Model):
    kind = models.CharField(max_length=32, help_text="ml.detectors registry name: lae, sjedd, baseline")
    tag = models.CharField(max_length=128, unique=True, help_text="<detector>-r<round>-<short hash>")
    round = models.ForeignKey(
        "rounds.Round", null=True, blank=True, on_delete=models.SET_NULL, related_name="detector_versions"
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    config = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    artifacts = models.JSONField(default=dict, blank=True, help_text="name -> path relative to MEDIA_ROOT")
    checksum = models.CharField(max_length=64, blank=True, default="", help_text="sha256 of the weights")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["kind", "created_at"], name="detector_kind_idx")]

    def __str__(self) -> str:
        return self.tag


class DetectorAlias(models.Model):
    """A movable name for one version (``production``): API consumers follow the alias, admins move it."""

    name = models.SlugField(max_length=64, unique=True)
    version = models.ForeignKey(DetectorVersion, on_delete=models.PROTECT, related_name="aliases")
    moved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    moved_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} -> {self.version_id}"
