"""Dataset import end to end: API -> Celery worker process -> PostgreSQL, and the bad-input paths."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from tests.conftest import write_manifest_dataset, write_png

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def admin_client():
    from accounts.services import user_create, user_token

    user = user_create(username="importer", password="importer-pass-1", role="admin")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user_token(user=user)}")
    return client


def _dataset(client: APIClient, name: str) -> int:
    response = client.post("/api/v1/datasets/", {"name": name}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _import_and_wait(client: APIClient, dataset_id: int, source: str, fmt: str = "manifest") -> dict:
    response = client.post(
        f"/api/v1/datasets/{dataset_id}/imports/", {"source": source, "format": fmt}, format="json"
    )
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/imports/{job_id}/").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"import {job_id} did not finish: {job}")


def test_import_through_the_worker_is_idempotent(celery_worker_proc, admin_client):
    manifest = write_manifest_dataset(celery_worker_proc.media_root / "ds_ok", count=6)
    dataset_id = _dataset(admin_client, "ok")

    job = _import_and_wait(admin_client, dataset_id, "ds_ok/manifest.jsonl")
    assert job["status"] == "succeeded", job
    assert (job["inserted_rows"], job["existing_rows"], job["progress"]) == (6, 0, 1.0)

    samples = admin_client.get(f"/api/v1/samples/?dataset={dataset_id}&label=fake").json()
    assert samples["count"] == 3
    first = samples["results"][0]
    assert "gt_mask_path" not in first and first["region_targets"] == [1, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    media = admin_client.get(first["media_url"])
    assert media.status_code == 200 and media["Content-Type"] == "image/png"
    assert b"".join(media.streaming_content) == (manifest.parent / "images/0001.png").read_bytes()
    assert APIClient().get(first["media_url"]).status_code == 401

    again = _import_and_wait(admin_client, dataset_id, str(manifest))  # absolute path, same files
    assert (again["status"], again["inserted_rows"], again["existing_rows"]) == ("succeeded", 0, 6)
    assert admin_client.get(f"/api/v1/datasets/{dataset_id}/").json()["sample_count"] == 6

    from catalog.models import Sample

    fake = Sample.objects.get(dataset_id=dataset_id, external_id="s0001")
    assert fake.gt_mask_path == "ds_ok/masks/0001.png"  # stored, kept apart from the API


def test_bad_rows_reject_the_whole_import(celery_worker_proc, admin_client, tmp_path):
    directory = celery_worker_proc.media_root / "ds_bad"
    manifest = write_manifest_dataset(directory, count=4)
    data = (directory / "images/0000.png").read_bytes()
    (directory / "images/trunc.png").write_bytes(data[: len(data) // 3])
    from PIL import Image

    Image.new("L", (5000, 5000)).save(directory / "images/bomb.png")  # 25 Mpx > the 16.7 Mpx limit
    lines = manifest.read_text().splitlines()
    lines += [
        '{"id": "t", "path": "images/trunc.png", "label": "real"}',
        '{"id": "b", "path": "images/bomb.png", "label": "fake"}',
        '{"id": "e", "path": "../ds_ok/images/0000.png", "label": "real"}',
        '{"id": "l", "path": "images/0000.png", "label": "unsure"}',
        "{not json",
    ]
    manifest.write_text("\n".join(lines) + "\n")
    dataset_id = _dataset(admin_client, "bad")

    job = _import_and_wait(admin_client, dataset_id, "ds_bad/manifest.jsonl")
    assert job["status"] == "failed" and job["inserted_rows"] == 0
    by_row = {error["row"]: error for error in job["errors"]}
    assert set(by_row) == {5, 6, 7, 8, 9}
    assert by_row[6]["field"] == "path" and "decompression bomb" in by_row[6]["message"]
    assert by_row[7]["field"] == "path" and "'..'" in by_row[7]["message"]
    assert by_row[8]["field"] == "label"
    from catalog.models import Sample

    assert not Sample.objects.filter(dataset_id=dataset_id).exists()


def test_import_source_must_be_inside_the_import_roots(admin_client, platform_media_root, tmp_path):
    manifest = write_manifest_dataset(tmp_path / "outside", count=1)
    dataset_id = _dataset(admin_client, "outside")
    for source in (str(manifest), "../outside/manifest.jsonl", "nope/manifest.jsonl"):
        response = admin_client.post(
            f"/api/v1/datasets/{dataset_id}/imports/", {"source": source}, format="json"
        )
        assert response.status_code == 400 and "source" in response.json()["errors"], response.content
    unknown = admin_client.post(
        f"/api/v1/datasets/{dataset_id}/imports/", {"source": "x", "dry_run": True}, format="json"
    )
    assert unknown.status_code == 400 and unknown.json() == {"dry_run": ["Unknown field."]}


def test_faceforensics_layout_via_the_management_command(platform_media_root, capsys):
    from django.core.management import call_command

    root: Path = platform_media_root / "ffpp"
    for video in ("000", "003"):
        for frame in range(2):
            write_png(root / f"original_sequences/youtube/c23/frames/{video}/{frame:04d}.png", seed=frame)
    for frame in range(2):
        write_png(root / f"manipulated_sequences/Face2Face/c23/frames/000_003/{frame:04d}.png", seed=9)
        write_png(root / f"manipulated_sequences/Face2Face/masks/frames/000_003/{frame:04d}.png", mode="L")
    call_command("import_dataset", "ffpp", "ffpp", "--format", "faceforensics")
    assert "6 new samples" in capsys.readouterr().out
    from catalog.models import Sample

    fakes = Sample.objects.filter(dataset__name="ffpp", label="fake")
    assert fakes.count() == 2 and all(s.gt_mask_path.startswith("ffpp/manipulated_sequences/") for s in fakes)
    call_command("import_dataset", "ffpp", "ffpp", "--format", "faceforensics")
    assert "0 new samples, 6 already present" in capsys.readouterr().out
