"""Bad input at the model entry points: inference uploads, pickled checkpoints (predict, export, CLI) and
export bundles."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from tests.integration import badfiles
from tests.integration.bad_input.common import (
    TINY_LAE,
    Snapshot,
    _client,
    _detail,
    _upload,
    cases,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


# -------------------------------------------------------------------------------------- inference
def _crop() -> bytes:
    return badfiles.noise_png(32, 32, seed=3)


INFERENCE = {
    # case id: (form builder(marker) -> dict, settings, status, fragment)
    "inf-text-as-png": (lambda m: {"images": [_upload("a.png", badfiles.TEXT)]}, {}, 400, "not a decodable image"),
    "inf-truncated-png": (lambda m: {"images": [_upload("half.png", badfiles.truncated_png())]}, {}, 400,
                          "not a decodable image"),
    "inf-bomb-header": (lambda m: {"images": [_upload("bomb.png", badfiles.bomb_header_png())]}, {}, 400,
                        "decompression bomb"),
    "inf-deflate-bomb": (lambda m: {"images": [_upload("zeros.png", badfiles.deflate_bomb_png())]}, {}, 400,
                         "decompression bomb"),
    "inf-gif": (lambda m: {"images": [_upload("a.gif", badfiles.gif_bytes(), "image/gif")]}, {}, 400,
                "unsupported image format"),
    "inf-pickle": (lambda m: {"images": [_upload("face.png", badfiles.pickle_payload(m))]}, {}, 400,
                   "not a decodable image"),
    "inf-oversized": (lambda m: {"images": [_upload("a.png", badfiles.noise_png(64, 64))]},
                      {"INFERENCE_MAX_IMAGE_BYTES": 4096}, 413, "too_large"),
    "inf-json-body": (None, {}, 415, "Unsupported media type"),
    "inf-too-many": (lambda m: {"images": [_upload(f"{i}.png", _crop()) for i in range(3)]},
                     {"INFERENCE_MAX_FILES": 2}, 400, "at most 2"),
    "inf-unknown-field": (lambda m: {"images": [_upload("a.png", _crop())], "colour": "red"}, {}, 400, "colour"),
}  # fmt: skip


@pytest.mark.parametrize("case_id", cases("inference"))
def test_inference_refuses_bad_uploads_and_stores_nothing(case_id, admin, version, media, marker, settings):
    build, overrides, status, fragment = INFERENCE[case_id]
    for key, value in overrides.items():
        setattr(settings, key, value)
    snapshot = Snapshot(media)
    url = f"/api/v1/detectors/{version.tag}/predict/"
    if build is None:
        response = _client(admin).post(url, {"images": ["aGVsbG8="], "mode": "crop"}, format="json")
    else:
        response = _client(admin).post(url, {**build(marker), "mode": "crop"}, format="multipart")
    assert response.status_code == status, response.content
    assert fragment in _detail(response)
    snapshot.check()
    assert not marker.exists()


def test_inference_control_a_good_crop_is_scored(admin, version):
    response = _client(admin).post(
        f"/api/v1/detectors/{version.tag}/predict/",
        {"images": [_upload("c.png", _crop())], "mode": "crop"},
        format="multipart",
    )
    assert response.status_code == 200, response.content
    assert 0.0 <= response.json()["results"][0]["faces"][0]["prob_fake"] <= 1.0


# ------------------------------------------------------------------------------------- checkpoints
@pytest.fixture
def evil_versions(media, marker):
    """Versions whose checkpoint files (.pt, .pth, .ckpt) are torch pickles carrying a payload."""
    from modelhub.services import detector_version_register

    made = []
    for suffix in ("pt", "pth", "ckpt"):
        relative = f"models/evil-{suffix}.{suffix}"
        (media / relative).parent.mkdir(parents=True, exist_ok=True)
        (media / relative).write_bytes(badfiles.torch_pickle_checkpoint(marker))
        made.append(detector_version_register(kind="lae", tag=f"evil-{suffix}", checkpoint=relative))
    return made


def test_ckpt_pickle_predict(admin, evil_versions, media, marker, settings):
    settings.INFERENCE_BACKEND = "torch"
    snapshot = Snapshot(media)
    for version in evil_versions:
        response = _client(admin).post(
            f"/api/v1/detectors/{version.tag}/predict/",
            {"images": [_upload("c.png", _crop())], "mode": "crop"},
            format="multipart",
        )
        assert response.status_code == 409, response.content
        assert "not a loadable detector checkpoint" in _detail(response)
    snapshot.check()
    assert not marker.exists()


def test_ckpt_pickle_export(admin, evil_versions, media, marker):
    snapshot = Snapshot(media)
    for version in evil_versions:
        response = _client(admin).post(f"/api/v1/detectors/{version.tag}/export/")
        assert response.status_code == 409, response.content
        assert "not a loadable detector checkpoint" in _detail(response)
    snapshot.check()
    assert not (media / "exports").exists() or not any((media / "exports").glob("evil-*"))
    assert not marker.exists()


def test_ckpt_pickle_cli(tmp_path, marker, capsys):
    from ml.export.__main__ import main

    for suffix in ("pt", "pth", "ckpt"):
        evil = tmp_path / f"evil.{suffix}"
        evil.write_bytes(badfiles.torch_pickle_checkpoint(marker))
        out = tmp_path / f"bundle-{suffix}.zip"
        assert main(["--version", str(evil), "--out", str(out)]) == 2
        assert "error:" in capsys.readouterr().err
        assert not out.exists()
    weights = tmp_path / "evil.safetensors"
    weights.write_bytes(badfiles.pickle_payload(marker))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"kind": "lae", "config": TINY_LAE}))
    assert main(["--version", str(weights), "--config", str(spec), "--out", str(tmp_path / "w.zip")]) == 2
    assert "error:" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "w.zip").exists()


def _bundle(path: Path, files: dict[str, bytes], extra_entries: dict[str, bytes] | None = None) -> Path:
    manifest = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in files.items())
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in {**files, "MANIFEST.sha256": manifest.encode(), **(extra_entries or {})}.items():
            archive.writestr(name, data)
    return path


def _bundle_files(weights: bytes) -> dict[str, bytes]:
    from ml.export.bundle import FORMAT

    config = {"format": FORMAT, "kind": "lae", "config": TINY_LAE, "outputs": ["prob"], "metadata": {}}
    return {
        "weights.safetensors": weights,
        "config.json": json.dumps(config).encode(),
        "preprocessing.json": b"{}",
        "verification.json": b"{}",
    }


def test_bundle_pickle_weights(tmp_path, marker):
    from ml.export.bundle import load_bundle
    from ml.export.standalone import BundleError

    bundle = _bundle(tmp_path / "evil.zip", _bundle_files(badfiles.pickle_payload(marker)))
    with pytest.raises(BundleError, match="not safetensors"):
        load_bundle(bundle)
    assert not marker.exists()


def test_bundle_traversal(tmp_path):
    from ml.export.standalone import BundleError, read_bundle

    bundle = _bundle(tmp_path / "dots.zip", {"config.json": b"{}"}, {"../escape.txt": b"x"})
    with pytest.raises(BundleError, match="unexpected entry"):
        read_bundle(bundle)
    assert not (tmp_path.parent / "escape.txt").exists()
