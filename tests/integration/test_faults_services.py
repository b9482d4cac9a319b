"""Service faults with real services: PostgreSQL connections dropped or refused under a live gunicorn,
and a media volume that is full or read-only (a private tmpfs).

- The web process reaches the test database through a loopback relay (``bench.faults.pg_drop.PgRelay``)
  so the outage touches this test's connections only; ``pg_terminate_backend`` runs from a separate
  admin connection and is limited to the test database.
- The media volume is a private tmpfs (``mount -t tmpfs``); without root or mount rights these tests
  skip with the reason (``chmod`` cannot make a directory read-only for root).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import requests

from bench.faults import media_full, pg_drop
from bench.harness.databases import admin_connect, terminate_backends
from bench.harness.ports import free_port
from bench.harness.processes import start_web, stop_process, web_env
from bench.harness.waits import wait_until

pytestmark = [pytest.mark.integration]

MOUNT_SKIP = media_full.mount_unavailable_reason()


# ------------------------------------------------------------------------------------------ PostgreSQL
def _server_url(host: str | None = None, port: int | None = None, name: str = "postgres") -> str:
    from urllib.parse import quote

    from django.db import connection

    sd = connection.settings_dict
    auth = quote(sd.get("USER") or "postgres") + (f":{quote(sd['PASSWORD'])}" if sd.get("PASSWORD") else "")
    return (
        f"postgres://{auth}@{host or sd.get('HOST') or '127.0.0.1'}:{port or sd.get('PORT') or 5432}/{name}"
    )


@pytest.fixture
def live_web(transactional_db, tmp_path, platform_media_root):
    """gunicorn on the test database through a relay that the test can cut; yields (base url, relay, web)."""
    from django.db import connection

    settings_dict = connection.settings_dict
    relay = pg_drop.PgRelay(settings_dict.get("HOST") or "127.0.0.1", int(settings_dict.get("PORT") or 5432))
    relay.start()
    database_url = _server_url("127.0.0.1", relay.port, settings_dict["NAME"])
    port = free_port()
    env = web_env(
        database_url=database_url,
        media_root=platform_media_root,
        db_connect_timeout=pg_drop.CONNECT_TIMEOUT_S,
    )
    web = start_web(env, port, tmp_path / "web.log", args=("--timeout", "120"))
    try:
        yield f"http://127.0.0.1:{port}", relay, web
    finally:
        stop_process(web, 20)
        relay.close()


def _session_cookie(user) -> str:
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return store.session_key


def _assert_database_503(answer: requests.Response, *, html: bool = False) -> None:
    assert answer.status_code == 503, (answer.status_code, answer.text[:500])
    assert int(answer.headers["Retry-After"]) > 0
    if html:
        assert answer.headers["Content-Type"].startswith("text/html")
        assert "temporarily unavailable" in answer.text
    else:
        assert answer.headers["Content-Type"].startswith("application/json")
        assert "database" in answer.json()["detail"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_database_dropped_refused_or_silent_answers_503_and_recovers_without_restart(live_web):
    from django.db import connection

    from accounts.services import user_create, user_token
    from catalog.models import Dataset

    base, relay, web = live_web
    user = user_create(username="faults-admin", password="faults-pass-123", role="admin")
    api = requests.Session()
    api.headers["Authorization"] = f"Token {user_token(user=user)}"
    browser = requests.Session()
    browser.cookies.set("forgerylab_session", _session_cookie(user))
    dbname = connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        own_pid = cursor.fetchone()[0]

    assert requests.get(f"{base}/health", timeout=30).status_code == 200
    assert api.get(f"{base}/api/v1/datasets/", timeout=30).status_code == 200
    assert browser.get(f"{base}/", timeout=30).status_code == 200

    # 1. Every backend of the test database killed (the web holds a persistent connection): the next
    #    requests reconnect through the health check, no 500, nothing to restart.
    admin = admin_connect(_server_url())  # a separate connection, to the maintenance database
    try:
        killed = terminate_backends(admin, dbname, exclude=(own_pid,))
    finally:
        admin.close()
    assert killed >= 1
    codes = [api.post(f"{base}/api/v1/datasets/", json={"name": f"after-kill-{i}"}, timeout=30).status_code
             for i in range(3)]  # fmt: skip
    assert set(codes) <= {201, 503}, codes
    assert Dataset.objects.filter(name__startswith="after-kill-").count() == codes.count(201)

    # 2. The server refuses connections: 503 quickly, JSON for the API, a page for the dashboard,
    #    /health degraded; a write during the outage stores nothing.
    relay.set_mode("refused")
    health = requests.get(f"{base}/health", timeout=30)
    assert health.status_code == 503 and health.json()["database"].startswith("error")
    assert int(health.headers["Retry-After"]) > 0
    _assert_database_503(api.get(f"{base}/api/v1/datasets/", timeout=30))
    _assert_database_503(api.post(f"{base}/api/v1/datasets/", json={"name": "during-outage"}, timeout=30))
    _assert_database_503(browser.get(f"{base}/", timeout=30), html=True)

    # 3. The server accepts but never answers (gone from the network): 503 after the connect timeout,
    #    not a request that hangs until the client gives up (30 s here).
    relay.set_mode("silent")
    _assert_database_503(api.get(f"{base}/api/v1/datasets/", timeout=30))
    _assert_database_503(browser.get(f"{base}/", timeout=30), html=True)

    # 4. Back: the same process answers again.
    relay.set_mode("up")
    wait_until(
        lambda: requests.get(f"{base}/health", timeout=30).status_code == 200, 60, what="the web to recover"
    )
    assert api.get(f"{base}/api/v1/datasets/", timeout=30).status_code == 200
    assert api.post(f"{base}/api/v1/datasets/", json={"name": "after-outage"}, timeout=30).status_code == 201
    assert browser.get(f"{base}/", timeout=30).status_code == 200
    assert web.poll() is None, "the web process was restarted"
    assert not Dataset.objects.filter(name="during-outage").exists()
    assert Dataset.objects.filter(name="after-outage").count() == 1


# ---------------------------------------------------------------------------------------------- media
@pytest.fixture
def small_media(settings):
    if MOUNT_SKIP:
        pytest.skip(MOUNT_SKIP)
    with media_full.SmallVolume(size_kib=4096) as volume:
        settings.MEDIA_ROOT = volume.path
        yield volume


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".filler")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_masks_on_full_or_read_only_media_fail_clearly_and_leave_nothing(small_media):
    from catalog.models import Mask
    from forgery_site.errors import StorageUnavailable
    from labeling import masks
    from labeling.ingest import annotation_ingest
    from labeling.models import AnnotationRecord
    from rounds.models import AnnotationTask

    dataset, round_obj, tasks = media_full.seed_round(count=4)
    w, h = tasks[0].sample.width, tasks[0].sample.height
    expected = [media_full.mask_for(i, w, h) for i in range(4)]
    annotations = [media_full.annotation_for(t, 9000 + i, expected[i]) for i, t in enumerate(tasks)]
    assert annotation_ingest(annotations[0]) == "stored"

    small_media.fill()
    with pytest.raises(StorageUnavailable, match="volume is full"):
        annotation_ingest(annotations[1])
    small_media.free()
    small_media.read_only(True)
    try:
        with pytest.raises(StorageUnavailable, match="read-only"):
            annotation_ingest(annotations[2])
    finally:
        small_media.read_only(False)
    audit = media_full.media_audit(small_media.path, dataset)
    assert audit == {"rows": 1, "rows_missing_file": [], "orphan_files": [], "temp_files": []}
    assert AnnotationRecord.objects.filter(task__round=round_obj).count() == 1
    statuses = AnnotationTask.objects.filter(pk__in=[tasks[1].pk, tasks[2].pk]).values_list(
        "status", flat=True
    )
    assert set(statuses) == {"created"}

    # A second annotator on sample 0 while exactly one more file fits: the annotation's own mask is
    # written, the consensus mask is not -> the transaction rolls back and takes the written file with it.
    filled = small_media.fill()
    assert filled > 0
    with open(small_media.filler, "r+b") as handle:
        handle.truncate(max(0, filled - 4096))  # one page free
    second = media_full.annotation_for(tasks[0], 9100, expected[0])
    with pytest.raises(StorageUnavailable):
        annotation_ingest(second)
    audit = media_full.media_audit(small_media.path, dataset)
    assert audit == {"rows": 1, "rows_missing_file": [], "orphan_files": [], "temp_files": []}, audit
    assert not AnnotationRecord.objects.filter(ls_annotation_id=9100).exists()

    # Storage fixed: the same annotations (as reconciliation re-reads them) are stored, exactly.
    small_media.free()
    for annotation in (annotations[1], annotations[2], annotations[3], second):
        assert annotation_ingest(annotation) == "stored"
    audit = media_full.media_audit(small_media.path, dataset)
    assert not audit["rows_missing_file"] and not audit["orphan_files"] and not audit["temp_files"]
    for index, task in enumerate(tasks):
        latest = Mask.objects.filter(sample_id=task.sample_id).order_by("-version").first()
        assert np.array_equal(masks.read_mask_png(small_media.path / latest.path), expected[index])
    assert Mask.objects.filter(sample_id=tasks[0].sample_id).count() == 3  # two annotators + consensus


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_export_on_full_or_read_only_media_is_507_and_leaves_no_bundle(small_media):
    import torch
    from rest_framework.test import APIClient

    from accounts.services import user_create, user_token
    from ml.detectors import create
    from ml.training.checkpoint import save_detector
    from modelhub.models import DetectorVersion
    from modelhub.services import detector_version_register

    torch.manual_seed(0)
    save_detector(
        create("lae", image_size=32, depth=2, width=4, latent_channels=16), small_media.path / "models/lae.pt"
    )
    detector_version_register(kind="lae", tag="lae-full", checkpoint="models/lae.pt")
    admin = user_create(username="faults-exporter", password="faults-pass-123", role="admin")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user_token(user=admin)}")
    before = _files(small_media.path)

    small_media.fill()
    answer = client.post("/api/v1/detectors/lae-full/export/")
    assert answer.status_code == 507, answer.content
    assert answer.json()["code"] == "storage_unavailable" and "full" in answer.json()["detail"]
    assert _files(small_media.path) == before  # no bundle, no temp file
    assert "bundle" not in DetectorVersion.objects.get(tag="lae-full").artifacts
    assert client.get("/api/v1/detectors/lae-full/bundle/").status_code == 404

    small_media.free()
    small_media.read_only(True)
    try:
        answer = client.post("/api/v1/detectors/lae-full/export/")
    finally:
        small_media.read_only(False)
    assert answer.status_code == 507 and "read-only" in answer.json()["detail"]
    assert _files(small_media.path) == before

    answer = client.post("/api/v1/detectors/lae-full/export/")
    assert answer.status_code == 201, answer.content
    assert _files(small_media.path) == sorted([*before, "exports/lae-full.zip"])
