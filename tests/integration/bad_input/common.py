"""The bad-input matrix: every entry point that takes outside input, fed corrupt, hostile or oversized input.

Each case (listed once in ``badfiles.CASES``, documented in ``deploy/docs/security.md``) sends its input
through the real code path on real PostgreSQL and asserts three things: the answer (a 4xx naming the
problem, or a logged rejection), that nothing was stored (row counts of every model that could receive
it unchanged, and no new file under MEDIA_ROOT), and, for pickles, that the payload never ran.

- Import API and importer: the REST call, then ``import_job_run`` (what the Celery import task runs).
- Webhook: the REST endpoint; the annotation content is then fetched by ``delivery_process`` (what the
  worker runs) from a Label Studio stand-in HTTP server serving the crafted annotation, through the real
  SDK client. A real Label Studio server is exercised by ``tests/labelstudio``.
- Inference, export and rounds: the REST endpoints; checkpoints also through ``python -m ml.export``.

This module: what the tests share (counted models, the before/after snapshot, an authenticated client,
the case list by entry point); fixtures are in this folder's conftest.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from tests.integration.badfiles import CASES

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[3]
SECURITY_DOC = ROOT / "deploy" / "docs" / "security.md"
TINY_LAE = {"image_size": 32, "depth": 2, "width": 4, "latent_channels": 16}
SECRET = "matrix-webhook-secret"
HEADER = "HTTP_X_FORGERYLAB_WEBHOOK_SECRET"
COUNTED = (
    "catalog.Dataset", "catalog.Sample", "catalog.Mask", "catalog.ImportJob", "catalog.Video", "labeling.WebhookDelivery",
    "labeling.AnnotationRecord", "modelhub.DetectorVersion", "rounds.Round",
)  # fmt: skip


def cases(entry: str) -> list:
    return [pytest.param(case.id, id=case.id) for case in CASES if case.entry == entry]


# ------------------------------------------------------------------------------------------- snapshot
def _counts() -> dict[str, int]:
    from django.apps import apps

    return {label: apps.get_model(label).objects.count() for label in COUNTED}


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


class Snapshot:
    """Row counts and the MEDIA_ROOT tree before a request; ``check`` asserts nothing changed."""

    def __init__(self, media: Path):
        self.media = media
        self.rows = _counts()
        self.files = _files(media)

    def check(self, **allowed: int) -> None:
        after = _counts()
        expected = {label: self.rows[label] + allowed.get(label.split(".")[1], 0) for label in COUNTED}
        assert after == expected, f"rows changed: before {self.rows}, after {after}, allowed {allowed}"
        files = _files(self.media)
        new = sorted(set(files) - set(self.files))
        changed = sorted(name for name in self.files if files.get(name) != self.files[name])
        assert not new and not changed, f"MEDIA_ROOT changed: new {new}, changed/removed {changed}"


def _client(user=None) -> APIClient:
    from rest_framework.authtoken.models import Token

    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get(user=user).key}")
    return client


def _detail(response) -> str:
    """The whole JSON body as text (detail and field errors), for "names the problem" assertions."""
    try:
        return json.dumps(response.json())
    except (ValueError, TypeError):
        return response.content.decode(errors="replace")


def _hook(
    body, *, secret: str | None = SECRET, content_type: str = "application/json", raw: bytes | None = None
):
    extra = {HEADER: secret} if secret is not None else {}
    data = raw if raw is not None else json.dumps(body)
    return APIClient().generic("POST", "/api/v1/labeling/webhook", data, content_type=content_type, **extra)


def _upload(name: str, data: bytes, content_type: str = "image/png"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type=content_type)
