"""Bad input at the import entry points: the import API, the importer (what the Celery import task runs) and
video listings. See tests/integration/bad_input/common.py for what every case asserts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.integration import badfiles
from tests.integration.bad_input.common import (
    Snapshot,
    _client,
    _detail,
    cases,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


# ------------------------------------------------------------------------------------- import API
def _write_manifest(directory: Path, rows: list[dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest


def _row(path: str, **extra) -> dict:
    return {"id": path, "path": path, "label": "real", "split": "train", **extra}


IMPORT_API = {
    # case id: (source builder(media, outside) -> source, format, status, fragment)
    "imp-src-dotdot": (lambda m, o: "../../etc/passwd", "manifest", 400, "'..' is not allowed"),
    "imp-src-absolute": (lambda m, o: "/etc/hostname", "manifest", 400, "outside the allowed import roots"),
    "imp-src-nul": (lambda m, o: "data\x00/manifest.jsonl", "manifest", 400, "Null characters are not allowed"),
    "imp-src-symlink": (
        lambda m, o: (m / "linked.jsonl").symlink_to(o / "manifest.jsonl") or "linked.jsonl",
        "manifest", 400, "outside the allowed import roots",
    ),
    "imp-src-long": (lambda m, o: "a/" * 3000 + "m.jsonl", "manifest", 400, "cannot be read"),
    "imp-src-missing": (lambda m, o: "nowhere/manifest.jsonl", "manifest", 400, "does not exist"),
    "imp-src-pickle": (
        lambda m, o: (m / "pickled").mkdir(exist_ok=True)
        or (m / "pickled" / "data.pkl").write_bytes(badfiles.pickle_payload(o / "x"))
        and "pickled/data.pkl",
        "manifest", 400, ".jsonl or .csv",
    ),
    "imp-src-dir": (lambda m, o: (m / "adir").mkdir(exist_ok=True) or "adir", "manifest", 400, "must be a file"),
    "imp-format": (lambda m, o: "whatever.jsonl", "tarball", 400, "format"),
}  # fmt: skip


@pytest.mark.parametrize("case_id", cases("import-api"))
def test_import_api_refuses_bad_sources(case_id, media, outside, admin):
    from catalog.models import Dataset

    build, fmt, status, fragment = IMPORT_API[case_id]
    dataset = Dataset.objects.create(name=f"api-{case_id}")
    source = build(media, outside)
    snapshot = Snapshot(media)
    response = _client(admin).post(
        f"/api/v1/datasets/{dataset.pk}/imports/", {"source": source, "format": fmt}, format="json"
    )
    assert response.status_code == status, response.content
    assert fragment in _detail(response)
    snapshot.check()


# --------------------------------------------------------------------------------------- importer
def _imp_row_symlink_file(d: Path, o: Path) -> str:
    (d / "images").mkdir(parents=True)
    (d / "images" / "link.png").symlink_to(o / "secret.png")
    return _write_manifest(d, [_row("images/link.png")]).name


def _imp_row_symlink_dir(d: Path, o: Path) -> str:
    d.mkdir(parents=True)
    (d / "images").symlink_to(o)
    return _write_manifest(d, [_row("images/secret.png")]).name


def _imp_ff_symlink_dir(d: Path, o: Path) -> str:
    frames = d / "original_sequences" / "youtube" / "c23" / "frames"
    frames.mkdir(parents=True)
    (frames / "000").symlink_to(o)
    return "."


def _imp_row_symlink_loop(d: Path, o: Path) -> str:
    (d / "images").mkdir(parents=True)
    (d / "images" / "loop.png").symlink_to("loop.png")
    return _write_manifest(d, [_row("images/loop.png")]).name


def _one_file(name: str, data: bytes, **extra):
    def build(d: Path, o: Path) -> str:
        (d / "images").mkdir(parents=True)
        (d / "images" / name).write_bytes(data() if callable(data) else data)
        return _write_manifest(d, [_row(f"images/{name}", **extra)]).name

    return build


def _imp_mask_wrong_size(d: Path, o: Path) -> str:
    (d / "images").mkdir(parents=True)
    (d / "images" / "a.png").write_bytes(badfiles.noise_png(32, 32))
    (d / "images" / "m.png").write_bytes(badfiles.png_bytes(np.zeros((30, 32), np.uint8)))
    row = _row("images/a.png", label="fake", mask_path="images/m.png")
    return _write_manifest(d, [row]).name


def _imp_nul_fields(d: Path, o: Path) -> str:
    (d / "images").mkdir(parents=True)
    rows = []
    for index, extra in enumerate(
        ({"id": "a\x00b"}, {"identity": "x\x00"}, {"params": {"note": "p\x00q"}}, {"video": "\x00"})
    ):
        (d / "images" / f"{index}.png").write_bytes(badfiles.noise_png(seed=index))
        rows.append({**_row(f"images/{index}.png"), **extra})
    return _write_manifest(d, rows).name


def _imp_bad_json_line(d: Path, o: Path) -> str:
    (d / "images").mkdir(parents=True)
    (d / "images" / "a.png").write_bytes(badfiles.noise_png())
    manifest = _write_manifest(d, [_row("images/a.png")])
    with open(manifest, "ab") as handle:
        handle.write(badfiles.pickle_payload(o / "never") + b"\n")
    return manifest.name


def _imp_csv_extra_values(d: Path, o: Path) -> str:
    (d / "images").mkdir(parents=True)
    (d / "images" / "a.png").write_bytes(badfiles.noise_png())
    (d / "images" / "b.png").write_bytes(badfiles.noise_png(seed=1))
    (d / "manifest.csv").write_text(
        "path,label,colour\nimages/a.png,real,red,EXTRA,MORE\nimages/b.png,real\n"
    )
    return "manifest.csv"


def _imp_long_line(d: Path, o: Path) -> str:
    (d / "images").mkdir(parents=True)
    (d / "images" / "a.png").write_bytes(badfiles.noise_png())
    return _write_manifest(d, [_row("images/a.png", params={"pad": "x" * (2 << 20)})]).name


def _imp_csv_huge_field(d: Path, o: Path) -> str:
    (d / "images").mkdir(parents=True)
    (d / "images" / "a.png").write_bytes(badfiles.noise_png())
    (d / "manifest.csv").write_text(f"path,label,identity\nimages/a.png,real,{'x' * 200_000}\n")
    return "manifest.csv"


def _imp_too_many_rows(d: Path, o: Path) -> str:
    (d / "images").mkdir(parents=True)
    rows = []
    for index in range(3):
        (d / "images" / f"{index}.png").write_bytes(badfiles.noise_png(seed=index))
        rows.append(_row(f"images/{index}.png"))
    return _write_manifest(d, rows).name


def _imp_bad_label(d: Path, o: Path) -> str:
    (d / "images").mkdir(parents=True)
    (d / "images" / "a.png").write_bytes(badfiles.noise_png())
    (d / "images" / "b.png").write_bytes(badfiles.noise_png(seed=1))
    rows = [
        _row("images/a.png", label="maybe"),
        _row("images/b.png", region_targets=[2, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    ]
    return _write_manifest(d, rows).name


IMPORTER = {
    # case id: (builder(dataset dir, outside) -> source relative to the dir, format, expected (field, fragment))
    "imp-row-dotdot": (lambda d, o: _write_manifest(d, [_row("../outside.png")]).name, "manifest",
                       [("path", "'..' is not allowed")]),
    "imp-row-absolute": (lambda d, o: _write_manifest(d, [_row(str(o / "secret.png"))]).name, "manifest",
                         [("path", "absolute paths are not allowed")]),
    "imp-row-nul": (lambda d, o: _write_manifest(d, [_row("images/a\x00.png")]).name, "manifest",
                    [("path", "forbidden character")]),
    "imp-row-symlink-file": (_imp_row_symlink_file, "manifest", [("path", "escapes the dataset directory")]),
    "imp-row-symlink-dir": (_imp_row_symlink_dir, "manifest", [("path", "symlinked directory")]),
    "imp-ff-symlink-dir": (_imp_ff_symlink_dir, "faceforensics", [("path", "symlinked directory")]),
    "imp-row-symlink-loop": (_imp_row_symlink_loop, "manifest", [("path", "unreadable symlink")]),
    "imp-row-long-path": (lambda d, o: _write_manifest(d, [_row("a/" * 3000 + "x.png")]).name, "manifest",
                          [("path", "unreadable path")]),
    "imp-truncated-png": (_one_file("half.png", badfiles.truncated_png), "manifest",
                          [("path", "not a decodable image")]),
    "imp-truncated-jpeg": (_one_file("cut.jpg", lambda: badfiles.jpeg_bytes(truncate=True)), "manifest",
                           [("path", "truncated JPEG")]),
    "imp-text-as-jpeg": (_one_file("text.jpg", badfiles.TEXT), "manifest", [("path", "not a decodable image")]),
    "imp-bomb-header": (_one_file("bomb.png", badfiles.bomb_header_png), "manifest",
                        [("path", "decompression bomb refused")]),
    "imp-deflate-bomb": (_one_file("zeros.png", badfiles.deflate_bomb_png), "manifest",
                         [("path", "decompression bomb guard")]),
    "imp-text-bomb": (_one_file("ztxt.png", badfiles.text_bomb_png), "manifest",
                      [("path", "Decompressed data too large")]),
    "imp-gif": (_one_file("anim.gif", badfiles.gif_bytes), "manifest", [("path", "unsupported image format")]),
    "imp-oversized-file": (_one_file("big.png", lambda: badfiles.noise_png(64, 64)), "manifest",
                           [("path", "over the limit")]),
    "imp-mask-wrong-size": (_imp_mask_wrong_size, "manifest", [("mask_path", "mask size differs")]),
    "imp-nul-text-field": (_imp_nul_fields, "manifest",
                           [("id", "NUL"), ("identity", "NUL"), ("params", "NUL"), ("video", "NUL")]),
    "imp-bad-json-line": (_imp_bad_json_line, "manifest", [("row", "invalid JSON")]),
    "imp-csv-extra-values": (_imp_csv_extra_values, "manifest", [("row", "more values than the header")]),
    "imp-long-line": (_imp_long_line, "manifest", [("row", "line longer than")]),
    "imp-csv-huge-field": (_imp_csv_huge_field, "manifest", [("source", "field larger than field limit")]),
    "imp-too-many-rows": (_imp_too_many_rows, "manifest", [("source", "exceed the limit")]),
    "imp-bad-label": (_imp_bad_label, "manifest", [("label", "unknown label"), ("region_targets", "expected 10")]),
}  # fmt: skip


@pytest.mark.parametrize("case_id", cases("importer"))
def test_importer_rejects_bad_rows_and_writes_nothing(case_id, media, outside, admin, settings):
    from catalog.models import Dataset, ImportJob
    from catalog.services import import_job_run

    settings.IMPORT_MAX_IMAGE_BYTES = (
        4096 if case_id == "imp-oversized-file" else settings.IMPORT_MAX_IMAGE_BYTES
    )
    settings.IMPORT_MAX_ROWS = 2 if case_id == "imp-too-many-rows" else settings.IMPORT_MAX_ROWS
    build, fmt, expected = IMPORTER[case_id]
    directory = media / "importer" / case_id
    source = (directory / build(directory, outside)).relative_to(media).as_posix()
    dataset = Dataset.objects.create(name=f"imp-{case_id}")
    snapshot = Snapshot(media)
    client = _client(admin)
    response = client.post(
        f"/api/v1/datasets/{dataset.pk}/imports/", {"source": source, "format": fmt}, format="json"
    )
    assert response.status_code == 202, response.content
    import_job_run(job_id=response.json()["id"])  # what the Celery import task runs
    job = client.get(f"/api/v1/imports/{response.json()['id']}/").json()
    assert job["status"] == ImportJob.Status.FAILED and job["inserted_rows"] == 0, job
    for field, fragment in expected:
        assert any(e["field"] == field and fragment in e["message"] for e in job["errors"]), (field, job)
    assert "nothing was imported" in job["message"] or job["error_count"] == 1, job
    snapshot.check(ImportJob=1)  # the failed job (with its report) is the only record


def test_a_good_import_still_works_after_the_bad_ones(media, admin):
    """The control: the same path accepts a clean dataset (so the refusals above are not blanket)."""
    from catalog.models import Dataset, Sample
    from catalog.services import import_job_run
    from tests.conftest import write_manifest_dataset

    write_manifest_dataset(media / "importer" / "good", count=4)
    dataset = Dataset.objects.create(name="imp-good")
    response = _client(admin).post(
        f"/api/v1/datasets/{dataset.pk}/imports/", {"source": "importer/good/manifest.jsonl"}, format="json"
    )
    assert response.status_code == 202, response.content
    job = import_job_run(job_id=response.json()["id"])
    assert job.status == "succeeded", job.errors
    assert Sample.objects.filter(dataset=dataset).count() == 4


# ---------------------------------------------------------------------------------- video imports
def _vid_symlink(d: Path, o: Path) -> str:
    (o / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (d / "clip.mp4").symlink_to(o / "clip.mp4")
    return "clip.mp4,fake,id1\n"


def _vid_symlink_loop(d: Path, o: Path) -> str:
    (d / "loop.mp4").symlink_to("loop.mp4")
    return "loop.mp4,fake,id1\n"


def _vid_file(row: str, name: str = "clip.mp4"):
    def build(d: Path, o: Path) -> str:
        (d / name).write_bytes(b"\x00\x00\x00\x18ftypmp42")
        return row

    return build


VIDEO = {
    # case id: (builder(dataset dir, outside) -> labels.csv rows, fragment of the entry's error)
    "vid-dotdot": (lambda d, o: "../clip.mp4,fake,id1\n", "'..' is not allowed"),
    "vid-absolute": (lambda d, o: f"{o}/clip.mp4,real,id1\n", "absolute paths are not allowed"),
    "vid-symlink": (_vid_symlink, "leaves the dataset folder"),
    "vid-symlink-loop": (_vid_symlink_loop, "unreadable file"),
    "vid-nul-field": (_vid_file("clip.mp4,fake,id\x001\n"), "NUL"),
    "vid-not-video": (_vid_file("notes.txt,real,id1\n", "notes.txt"), "not a video file"),
    "vid-bad-label": (_vid_file("clip.mp4,maybe,id1\n"), "unknown label"),
}


@pytest.mark.parametrize("case_id", cases("video"))
def test_video_listing_rejects_bad_entries(case_id, media, outside, admin):
    from catalog.models import Dataset, ImportJob
    from catalog.video_import import video_import_list, video_options

    build, fragment = VIDEO[case_id]
    directory = media / "videos" / case_id
    directory.mkdir(parents=True)
    (directory / "labels.csv").write_text("path,label,identity\n" + build(directory, outside))
    dataset = Dataset.objects.create(name=f"vid-{case_id}")
    snapshot = Snapshot(media)
    client = _client(admin)
    response = client.post(
        f"/api/v1/datasets/{dataset.pk}/imports/",
        {"source": directory.relative_to(media).as_posix(), "format": "video-folder"},
        format="json",
    )
    assert response.status_code == 202, response.content
    video_import_list(job_id=response.json()["id"], options=video_options())  # the task's first step
    job = client.get(f"/api/v1/imports/{response.json()['id']}/").json()
    assert job["status"] == ImportJob.Status.FAILED and "no importable video" in job["message"], job
    assert any(fragment in e["message"] for e in job["errors"]), job["errors"]
    snapshot.check(ImportJob=1)
