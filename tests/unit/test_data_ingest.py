"""Ingesting a folder of real media: crops, forgeries, skip reasons, confinement; the preview sheet."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from ml.data import faces as F
from ml.data.ingest import ingest_media
from ml.data.manifest import read_manifest
from ml.labels import is_legal

pytestmark = pytest.mark.unit

pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    src = tmp_path_factory.mktemp("media")
    found = 0
    for k in range(40):  # faces dlib finds, two per person folder
        rng = np.random.default_rng([77, k])
        img, _ = F.render_face(F.sample_identity(rng), F.sample_pose(rng), 160)
        person = src / f"p{found // 2}"
        person.mkdir(exist_ok=True)
        cv2.imwrite(str(person / f"{k}.png"), img[..., ::-1])
        found += 1
        if found == 8:
            break
    cv2.imwrite(str(src / "grey.png"), np.zeros((90, 90), np.uint8))
    cv2.imwrite(str(src / "blank.png"), np.full((90, 90, 3), 200, np.uint8))
    (src / "broken.mp4").write_bytes(b"\x00" * 64)
    (src / "notes.txt").write_text("hello")
    outside = tmp_path_factory.mktemp("outside") / "secret.png"
    cv2.imwrite(str(outside), np.zeros((90, 90, 3), np.uint8))
    os.symlink(outside, src / "link.png")
    return src


def test_ingest_builds_a_valid_dataset_and_reports_bad_files(media, tmp_path):
    out = ingest_media(media, tmp_path / "ds", size=64, seed=0)
    rows = read_manifest(out)
    import json

    report = json.loads((out / "report.json").read_text())
    reasons = {s["source"]: s["reason"] for s in report["skipped"]}
    assert reasons["grey.png"] == "greyscale"
    assert reasons["blank.png"] == "no_face"
    assert reasons["broken.mp4"] == "unreadable"
    assert reasons["notes.txt"] == "unsupported_type"
    assert reasons["link.png"] == "outside_root"
    real = [r for r in rows if r["label"] == "real"]
    fake = [r for r in rows if r["label"] == "fake"]
    assert len(real) == len(fake) == report["faces"] >= 6
    split_of = {}
    for r in rows:
        assert split_of.setdefault(r["identity"], r["split"]) == r["split"]
        assert is_legal(r["region_targets"]) and len(r["landmarks"]) == 68
        assert r["identity"].startswith("p")
    for r in fake:
        mask = cv2.imread(str(out / r["mask_path"]), cv2.IMREAD_GRAYSCALE)
        assert mask.max() > 0
    again = ingest_media(media, tmp_path / "ds2", size=64, seed=0)
    assert (again / "manifest.jsonl").read_bytes() == (out / "manifest.jsonl").read_bytes()


def test_preview_sheet(media, tmp_path):
    from ml.data.generate import generate_dataset
    from ml.data.preview import contact_sheet

    ds = generate_dataset(tmp_path / "g", count=12, size=40, seed=0)
    png = contact_sheet(ds, tmp_path / "sheet.png", n=5)
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 100
