"""Detector registry API on real PostgreSQL: list/detail/compare, lineage, production alias, export + download
(role checks), inference on a real photo, and bad input refused with a reason and nothing stored."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zipfile
import zlib

import numpy as np
import pytest
from rest_framework.test import APIClient

pytestmark = [pytest.mark.integration, pytest.mark.django_db]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_LAE = {"image_size": 32, "depth": 2, "width": 4, "latent_channels": 16}


def _client(user=None) -> APIClient:
    from rest_framework.authtoken.models import Token

    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get(user=user).key}")
    return client


@pytest.fixture(autouse=True)
def _fresh_throttle_cache():
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def admin():
    from accounts.services import user_create

    return user_create(username="alice", password="admin-pass-123", role="admin")


@pytest.fixture
def annotator():
    from accounts.services import user_create

    return user_create(username="bob", password="annotator-pass-123", role="annotator")


@pytest.fixture
def versions(platform_media_root):
    """Two LAE versions, round 1 and its child round 2, registered through the service."""
    import torch

    from catalog.models import Dataset
    from ml.detectors import create
    from ml.training.checkpoint import save_detector
    from modelhub.services import detector_version_register
    from rounds.models import Round

    dataset = Dataset.objects.create(name="faces")
    r1 = Round.objects.create(dataset=dataset, number=1, config={"protocol": "in_domain"})
    r2 = Round.objects.create(dataset=dataset, number=2, parent=r1, config={"protocol": "in_domain"})
    made = []
    for index, round_ in enumerate((r1, r2)):
        torch.manual_seed(index)
        relative = f"models/test-lae-{index}.pt"
        save_detector(create("lae", **TINY_LAE), platform_media_root / relative)
        made.append(
            detector_version_register(
                kind="lae",
                tag=f"lae-r{round_.number}",
                checkpoint=relative,
                round_id=round_.id,
                parent=made[-1] if made else None,
                metrics={
                    "seen": {"auc": 0.6 + 0.1 * index},
                    "unseen": {"auc": 0.55},
                    "masks_used": 3 * index,
                },
            )
        )
    return made


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _upload(name: str, data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="image/png")


@pytest.fixture(scope="module")
def astronaut_png() -> bytes:
    from skimage import data

    return _png(data.astronaut())


def _bomb_png() -> bytes:
    """A tiny PNG whose header claims 30000 x 30000 pixels (CRC fixed so the header itself is valid)."""
    raw = bytearray(_png(np.zeros((8, 8, 3), np.uint8)))
    raw[16:24] = struct.pack(">II", 30000, 30000)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])) & 0xFFFFFFFF)
    return bytes(raw)


def _media_files(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------------------- registry
def test_list_detail_lineage_and_compare(annotator, versions):
    client = _client(annotator)
    listed = client.get("/api/v1/detectors/").json()
    assert [v["tag"] for v in listed["results"]] == ["lae-r2", "lae-r1"]
    assert client.get("/api/v1/detectors/?kind=sjedd").json()["count"] == 0
    assert client.get("/api/v1/detectors/?colour=red").status_code == 400

    detail = client.get("/api/v1/detectors/lae-r2/").json()
    assert detail["parent"] == "lae-r1" and detail["round"] == 2 and detail["dataset"] == "faces"
    assert detail["lineage"]["parents"] == [{"tag": "lae-r1", "kind": "lae", "round": 1}]
    assert detail["lineage"]["masks_used"] == 3 and detail["artifacts"] == ["checkpoint"]
    assert client.get("/api/v1/detectors/nope/").status_code == 404

    compared = client.get("/api/v1/detectors/compare/?tags=lae-r1,lae-r2").json()
    assert [v["tag"] for v in compared["versions"]] == ["lae-r1", "lae-r2"]
    rows = {row["metric"]: row["values"] for row in compared["metrics"]}
    assert rows["seen.auc"] == pytest.approx([0.6, 0.7]) and rows["masks_used"] == [0, 3]
    assert client.get("/api/v1/detectors/compare/?tags=lae-r1").status_code == 400


def test_production_alias_admin_moves_it(admin, annotator, versions):
    assert (
        _client().put("/api/v1/detectors/aliases/production/", {"tag": "lae-r1"}, format="json").status_code
        == 401
    )
    denied = _client(annotator).put("/api/v1/detectors/aliases/production/", {"tag": "lae-r1"}, format="json")
    assert denied.status_code == 403
    client = _client(admin)
    assert client.get("/api/v1/detectors/production/").status_code == 404
    moved = client.put("/api/v1/detectors/aliases/production/", {"tag": "lae-r1"}, format="json")
    assert (
        moved.status_code == 200 and moved.json()["tag"] == "lae-r1" and moved.json()["moved_by"] == "alice"
    )
    assert client.get("/api/v1/detectors/production/").json()["tag"] == "lae-r1"
    client.put("/api/v1/detectors/aliases/production/", {"tag": "lae-r2"}, format="json")
    assert _client(annotator).get("/api/v1/detectors/production/").json()["tag"] == "lae-r2"
    assert client.get("/api/v1/detectors/lae-r2/").json()["aliases"] == ["production"]
    bad = client.put("/api/v1/detectors/aliases/production/", {"tag": "nope", "x": 1}, format="json")
    assert bad.status_code == 400 and "x" in bad.json()
    assert (
        client.put("/api/v1/detectors/aliases/production/", {"tag": "nope"}, format="json").status_code == 404
    )


# --------------------------------------------------------------------------------------------- export
def test_export_roles_download_and_load(admin, annotator, versions, platform_media_root):
    from ml.export.bundle import load_bundle

    assert _client().post("/api/v1/detectors/lae-r2/export/").status_code == 401
    assert _client(annotator).post("/api/v1/detectors/lae-r2/export/").status_code == 403
    assert _client(annotator).get("/api/v1/detectors/lae-r2/bundle/").status_code == 404  # not exported yet

    created = _client(admin).post("/api/v1/detectors/lae-r2/export/")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["onnx_max_abs_diff"] < 1e-4 and "MODEL_CARD.md" in body["files"]

    assert _client().get(body["download"]).status_code == 401
    response = _client(annotator).get(body["download"])
    assert response.status_code == 200
    data = b"".join(response.streaming_content)
    assert response["X-Checksum-SHA256"] == body["sha256"] == hashlib.sha256(data).hexdigest()
    path = platform_media_root / "dl.zip"
    path.write_bytes(data)
    loaded = load_bundle(path)
    assert loaded.metadata["tag"] == "lae-r2"
    assert loaded.metadata["lineage"]["parents"][0]["tag"] == "lae-r1"
    assert loaded.metadata["metrics"]["in_domain"]["seen"]["auc"] == pytest.approx(0.7)
    card = zipfile.ZipFile(path).read("MODEL_CARD.md").decode()
    assert "round 1" in card and "round 2" in card and "300-W" in card


def test_tampered_checkpoint_is_refused(admin, versions, platform_media_root):
    checkpoint = platform_media_root / "models/test-lae-1.pt"
    original = checkpoint.read_bytes()
    try:
        checkpoint.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        response = _client(admin).post("/api/v1/detectors/lae-r2/export/")
        assert response.status_code == 409 and "checksum" in response.json()["detail"]
    finally:
        checkpoint.write_bytes(original)


# ------------------------------------------------------------------------------------------ inference
def test_inference_on_astronaut_one_face_heatmap_of_image_size(annotator, versions, astronaut_png):
    from modelhub.inference import decode_png

    response = _client(annotator).post(
        "/api/v1/detectors/lae-r2/predict/",
        {"images": [_upload("astronaut.png", astronaut_png)], "draft_mask": "true"},
        format="multipart",
    )
    assert response.status_code == 200, response.content
    result = response.json()["results"][0]
    assert (result["width"], result["height"]) == (512, 512)
    assert len(result["faces"]) == 1
    face = result["faces"][0]
    assert 0.0 <= face["prob_fake"] <= 1.0
    heatmap = decode_png(face["heatmap_png"])
    assert heatmap.shape == (512, 512) and heatmap.max() > 0
    assert decode_png(face["draft_mask_png"]).shape == (512, 512)
    left, top, right, bottom = face["box"]
    assert 150 < (left + right) / 2 < 300 and 50 < (top + bottom) / 2 < 200  # the astronaut's face


def test_exported_version_is_served_by_onnx_with_the_same_outputs(admin, annotator, versions):
    from modelhub.inference import decode_png

    crop = _png(np.random.default_rng(7).integers(0, 256, (32, 32, 3), dtype=np.uint8))

    def predict():
        response = _client(annotator).post(
            "/api/v1/detectors/lae-r1/predict/",
            {"images": [_upload("c.png", crop)], "mode": "crop"},
            format="multipart",
        )
        assert response.status_code == 200, response.content
        return response.json()

    before = predict()
    assert before["backend"] == "torch"
    assert _client(admin).post("/api/v1/detectors/lae-r1/export/").status_code == 201
    after = predict()
    assert after["backend"] == "onnx"
    a, b = before["results"][0]["faces"][0], after["results"][0]["faces"][0]
    assert a["prob_fake"] == pytest.approx(b["prob_fake"], abs=1e-4)
    heat_a, heat_b = decode_png(a["heatmap_png"]).astype(int), decode_png(b["heatmap_png"]).astype(int)
    assert np.abs(heat_a - heat_b).max() <= 1  # 8-bit PNG: at most one rounding step apart


def test_inference_crop_mode_batch(annotator, versions):
    crops = [np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8) for i in range(3)]
    response = _client(annotator).post(
        "/api/v1/detectors/lae-r1/predict/",
        {"images": [_upload(f"c{i}.png", _png(c)) for i, c in enumerate(crops)], "mode": "crop"},
        format="multipart",
    )
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [len(r["faces"]) for r in results] == [1, 1, 1]
    assert results[0]["faces"][0]["node_probs"] is None  # LAE has no node probabilities


@pytest.mark.parametrize(
    "make,status,reason",
    [
        (lambda png: [("notes.txt", b"hello, not an image")], 400, "not a decodable image"),
        (lambda png: [("half.png", png[: len(png) // 2])], 400, "not a decodable image"),
        (lambda png: [("bomb.png", _bomb_png())], 400, "decompression bomb"),
        (lambda png: [("noise.png", _png(np.full((96, 96, 3), 127, np.uint8)))], 422, "no face"),
        (lambda png: [(f"{i}.png", png) for i in range(9)], 400, "at most 8"),
        (lambda png: [], 400, "no images"),
    ],
)
def test_bad_input_refused_with_reason_and_nothing_stored(
    annotator, versions, astronaut_png, platform_media_root, make, status, reason
):
    from catalog.models import Sample

    before = _media_files(platform_media_root)
    files = [_upload(name, data) for name, data in make(astronaut_png)]
    response = _client(annotator).post(
        "/api/v1/detectors/lae-r1/predict/", {"images": files}, format="multipart"
    )
    assert response.status_code == status, response.content
    assert reason in response.json()["detail"]
    assert _media_files(platform_media_root) == before and not Sample.objects.exists()


def test_oversized_upload_is_413(annotator, versions, astronaut_png, settings):
    settings.INFERENCE_MAX_IMAGE_BYTES = 1000
    response = _client(annotator).post(
        "/api/v1/detectors/lae-r1/predict/", {"images": [_upload("a.png", astronaut_png)]}, format="multipart"
    )
    assert response.status_code == 413 and response.json()["errors"]["images"][0]["reason"] == "too_large"


def test_oversized_request_body_is_refused_before_parsing(annotator, versions, astronaut_png, settings):
    settings.INFERENCE_MAX_IMAGE_BYTES = 1000
    settings.INFERENCE_MAX_FILES = 1
    files = [_upload(f"{i}.png", astronaut_png) for i in range(3)]
    response = _client(annotator).post(
        "/api/v1/detectors/lae-r1/predict/", {"images": files}, format="multipart"
    )
    assert response.status_code == 413 and "request body" in response.json()["detail"]


def test_inference_needs_auth_and_rejects_unknown_fields(annotator, versions, astronaut_png):
    upload = _upload("a.png", astronaut_png)
    assert (
        _client()
        .post("/api/v1/detectors/lae-r1/predict/", {"images": [upload]}, format="multipart")
        .status_code
        == 401
    )
    response = _client(annotator).post(
        "/api/v1/detectors/lae-r1/predict/", {"images": [upload], "colour": "red"}, format="multipart"
    )
    assert response.status_code == 400 and "colour" in response.json()


def test_inference_is_throttled_per_user(admin, annotator, versions, settings):
    settings.INFERENCE_THROTTLE_RATE = "2/min"
    crop = _png(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))

    def post(user):
        return (
            _client(user)
            .post(
                "/api/v1/detectors/lae-r1/predict/",
                {"images": [_upload("c.png", crop)], "mode": "crop"},
                format="multipart",
            )
            .status_code
        )

    assert [post(annotator) for _ in range(3)] == [200, 200, 429]
    assert post(admin) == 200  # the limit is per user


def test_web_modules_do_not_import_torch():
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, django; django.setup(); import forgery_site.urls, modelhub.apis, modelhub.services, modelhub.inference; "
        "heavy = [m for m in ('torch', 'onnxruntime', 'dlib', 'ml.export.bundle') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": f"{root / 'platform'}:{root}",
        "DJANGO_SETTINGS_MODULE": "forgery_site.settings",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_export_command_resolves_an_alias(admin, versions, tmp_path):
    from django.core.management import call_command

    from ml.export.bundle import load_bundle
    from modelhub.services import alias_move

    alias_move(ref="lae-r1", user=admin)
    out = io.StringIO()
    call_command("export_detector", "production", "--out", str(tmp_path / "p.zip"), stdout=out)
    assert json.loads(out.getvalue())["tag"] == "lae-r1"
    assert load_bundle(tmp_path / "p.zip").metadata["tag"] == "lae-r1"
