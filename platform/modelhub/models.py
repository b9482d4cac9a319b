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


class PretrainedWeights(models.Model):
    """A CLIP weights file the SJEDD towers can start from, registered once by an admin
    (``manage.py weights_add`` or ``POST /api/v1/weights/``) and named in round configs
    (``detector_config.sjedd.weights``). The file lives under ``MEDIA_ROOT/weights/``; its sha256 is
    checked again at every launch that names it."""

    name = models.SlugField(max_length=64, unique=True)
    model = models.CharField(max_length=64, help_text="open_clip model config, e.g. ViT-B-16-quickgelu")
    path = models.CharField(max_length=512, help_text="relative to MEDIA_ROOT, under weights/")
    sha256 = models.CharField(max_length=64)
    size_bytes = models.BigIntegerField()
    image_size = models.PositiveIntegerField(help_text="the tower's input size")
    quick_gelu = models.BooleanField(help_text="the model config uses QuickGELU (OpenAI's weights need it)")
    openai_format = models.BooleanField(default=False, help_text="an OpenAI TorchScript checkpoint")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.model})"
