"""Video dataset imports end to end: API -> listing task -> extraction shards (chord) -> progress.

Layouts (FaceForensics++, Celeb-DF v2, DFDC, a generic folder) are built from the synthetic video
generator (``ml.data.synthvideo``: tiny procedural faces, 8 frames, 64-96 px), imported through the REST
API and processed by the real Celery worker process (``celery_worker_proc``, which consumes the cpu
queue). The listing and re-queueing rules are also checked directly on PostgreSQL.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from rest_framework.test import APIClient

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def admin_client():
    from accounts.services import user_create, user_token

    user = user_create(username="video-admin", password="video-admin-pass-1", role="admin")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user_token(user=user)}")
    return client


def _dataset(client: APIClient, name: str) -> int:
    response = client.post("/api/v1/datasets/", {"name": name}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _post_import(client: APIClient, dataset_id: int, source: str, fmt: str, **options) -> dict:
    response = client.post(
        f"/api/v1/datasets/{dataset_id}/imports/", {"source": source, "format": fmt, **options}, format="json"
    )
    assert response.status_code == 202, response.content
    return response.json()


def _wait(client: APIClient, job_id: int, timeout: float = 240, worker=None) -> dict:
    deadline = time.monotonic() + timeout
    job = {}
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/imports/{job_id}/").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.3)
    tail = worker.log_tail() if worker is not None else ""
    raise AssertionError(f"import {job_id} did not finish: {job}\n{tail}")


def _touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------ API input and permissions
def test_video_import_input_is_checked(admin_client, platform_media_root):
    dataset_id = _dataset(admin_client, "video-input")
    _touch(platform_media_root / "vin" / "Celeb-real" / "id0_0000.mp4")
    _touch(platform_media_root / "vin" / "file.txt", b"x")
    url = f"/api/v1/datasets/{dataset_id}/imports/"

    def post(body):
        return admin_client.post(url, body, format="json")

    def errors(response) -> dict:  # field errors (serializer) or a domain error's "errors"
        body = response.json()
        return body.get("errors", body)

    response = post({"source": "vin", "format": "manifest", "frames": 8})
    assert response.status_code == 400 and "frames" in errors(response), response.content
    response = post({"source": "vin", "format": "celebdf", "compression": ["c23"]})
    assert response.status_code == 400 and "compression" in errors(response), response.content
    response = post({"source": "vin", "format": "celebdf", "frames": 0, "size": 8, "shard_size": 5000})
    assert response.status_code == 400
    assert set(errors(response)) >= {"frames", "size", "shard_size"}
    response = post({"source": "vin/file.txt", "format": "celebdf"})
    assert response.status_code == 400 and "not a directory" in str(response.json()), response.content
    response = post({"source": "../../etc", "format": "dfdc"})
    assert response.status_code == 400, response.content
    response = post({"source": "vin", "format": "celebdf", "fps": 3})
    assert response.status_code == 400 and errors(response)["fps"] == ["Unknown field."]

    from accounts.services import user_create, user_token

    annotator = user_create(username="video-annotator", password="video-annot-pass-1", role="annotator")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user_token(user=annotator)}")
    assert client.post(url, {"source": "vin", "format": "celebdf"}, format="json").status_code == 403
    assert APIClient().post(url, {"source": "vin", "format": "celebdf"}, format="json").status_code == 401

    from catalog.models import ImportJob

    job = ImportJob.objects.create(dataset_id=dataset_id, source="x", format="celebdf")
    assert client.get(f"/api/v1/imports/{job.pk}/videos/").status_code == 403
    assert APIClient().get(f"/api/v1/imports/{job.pk}/videos/").status_code == 401
    response = admin_client.get(f"/api/v1/imports/{job.pk}/videos/?status=lost")
    assert response.status_code == 400
    assert admin_client.get("/api/v1/imports/999999/videos/").status_code == 404


# -------------------------------------------------------------------- listing rules, on PostgreSQL
def test_listing_is_idempotent_and_requeues_only_unfinished_videos(admin_client, platform_media_root):
    from catalog.models import ImportJob, Video
    from catalog.video_import import video_import_list, video_options, video_progress

    root = platform_media_root / "list-celeb"
    for name in ("id0_0000", "id1_0000", "id2_0000"):
        _touch(root / "Celeb-real" / f"{name}.mp4")
    _touch(root / "Celeb-synthesis" / "id0_id1_0000.mp4")
    (root / "List_of_testing_videos.txt").write_text("1 Celeb-real/id2_0000.mp4\n7 Celeb-real/id1_0000.mp4\n")
    dataset_id = _dataset(admin_client, "video-listing")
    options = video_options()

    def list_once():
        job = ImportJob.objects.create(dataset_id=dataset_id, source=str(root), format="celebdf")
        return video_import_list(job_id=job.pk, options=options)

    first = list_once()
    assert first.status == ImportJob.Status.VALIDATING
    assert (first.total_rows, first.existing_rows, first.error_count) == (4, 0, 1)
    assert first.errors[0]["row"] == 2 and "1 = real" in first.errors[0]["message"]
    videos = Video.objects.filter(dataset_id=dataset_id)
    assert videos.count() == 4 and set(videos.values_list("import_job", flat=True)) == {first.pk}
    assert videos.get(external_id="celebdf/Celeb-real/id2_0000").split == "test"
    fake = videos.get(external_id="celebdf/Celeb-synthesis/id0_id1_0000")
    assert (fake.label, fake.identity, fake.status) == ("fake", "id0", "pending")
    assert fake.source_path == str(root.resolve() / "Celeb-synthesis/id0_id1_0000.mp4")

    videos.filter(external_id="celebdf/Celeb-real/id0_0000").update(status="done", frames_sampled=8, faces=8)
    videos.filter(external_id="celebdf/Celeb-real/id1_0000").update(status="failed", reason="no face")
    second = list_once()
    assert (second.total_rows, second.existing_rows) == (4, 1)
    assert videos.count() == 4  # nothing added
    assert set(videos.filter(import_job=second).values_list("status", flat=True)) == {"pending"}
    assert videos.filter(import_job=second).count() == 3  # the failed one queued again, not the done one
    assert videos.get(external_id="celebdf/Celeb-real/id1_0000").reason == ""
    progress = video_progress(second)
    assert (progress["total"], progress["pending"], progress["already_imported"]) == (3, 3, 0 + 1)
    assert progress["entries_rejected"] == 1

    (root / "Celeb-synthesis" / "id9_id1_0000.mp4").symlink_to("/etc/hostname")
    third = list_once()
    assert third.total_rows == 4
    assert any("leaves the dataset folder" in e["message"] for e in third.errors)


def test_layout_errors_fail_the_job_and_write_nothing(admin_client, platform_media_root):
    from catalog.models import ImportJob, Video
    from catalog.video_import import video_import_list, video_options

    root = platform_media_root / "bad-ffpp"
    _touch(root / "original_sequences" / "youtube" / "c23" / "videos" / "000.mp4")
    (root / "splits").mkdir(parents=True)
    (root / "splits" / "train.json").write_text(json.dumps([["000", "001"]]))
    (root / "splits" / "test.json").write_text(json.dumps([["000", "002"]]))
    dataset_id = _dataset(admin_client, "video-bad-layout")
    job = ImportJob.objects.create(dataset_id=dataset_id, source=str(root), format="ffpp-video")
    job = video_import_list(job_id=job.pk, options=video_options())
    assert job.status == ImportJob.Status.FAILED and "in both train and test" in job.message
    assert not Video.objects.filter(dataset_id=dataset_id).exists()

    empty = platform_media_root / "empty-folder"
    _touch(empty / "labels.csv", b"path,label\n")
    job = ImportJob.objects.create(dataset_id=dataset_id, source=str(empty), format="video-folder")
    job = video_import_list(job_id=job.pk, options=video_options())
    assert job.status == ImportJob.Status.FAILED and "no importable video" in job.message
