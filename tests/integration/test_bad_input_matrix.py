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
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from rest_framework.test import APIClient

from tests.integration import badfiles
from tests.integration.badfiles import CASES

pytestmark = [pytest.mark.integration, pytest.mark.django_db]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[2]
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


@pytest.fixture
def media(platform_media_root, settings) -> Path:
    settings.MEDIA_ROOT = platform_media_root
    settings.IMPORT_ROOTS = []
    return platform_media_root


@pytest.fixture
def outside(tmp_path) -> Path:
    """A directory outside MEDIA_ROOT (targets of symlinks and absolute paths)."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret.png").write_bytes(badfiles.noise_png(32, 32, seed=9))
    (directory / "manifest.jsonl").write_text(json.dumps({"path": "secret.png", "label": "real"}) + "\n")
    return directory


@pytest.fixture
def marker(tmp_path) -> Path:
    """The file a pickle payload would create if it ever ran."""
    return tmp_path / "PAYLOAD-RAN"


def _client(user=None) -> APIClient:
    from rest_framework.authtoken.models import Token

    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get(user=user).key}")
    return client


@pytest.fixture
def admin():
    from accounts.services import user_create

    return user_create(username="matrix-admin", password="matrix-pass-123", role="admin")


@pytest.fixture(autouse=True)
def _fresh_throttle_cache():
    from django.core.cache import cache

    cache.clear()


def _detail(response) -> str:
    """The whole JSON body as text (detail and field errors), for "names the problem" assertions."""
    try:
        return json.dumps(response.json())
    except (ValueError, TypeError):
        return response.content.decode(errors="replace")


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


# ---------------------------------------------------------------------------------------- webhook
class _LabelStudioStandIn:
    """Serves ``GET /api/annotations/<id>/`` from a dict, as Label Studio's API would."""

    def __init__(self):
        annotations: dict[int, dict] = {}
        self.annotations = annotations

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                parts = [p for p in self.path.split("?")[0].split("/") if p]
                item = None
                if len(parts) == 3 and parts[:2] == ["api", "annotations"] and parts[2].isdigit():
                    item = annotations.get(int(parts[2]))
                body = json.dumps(item if item is not None else {"detail": "Not found."}).encode()
                self.send_response(200 if item is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def label_studio():
    server = _LabelStudioStandIn()
    yield server
    server.close()


@pytest.fixture
def labeling(media, settings, label_studio):
    """A round in annotation with one 40x32 sample, its Label Studio task (id 501) and project (id 77)."""
    from catalog.models import Dataset, Sample
    from labeling.client import LabelStudioClient
    from labeling.models import LabelingProject
    from rounds.models import AnnotationTask, Round, Selection

    settings.WEBHOOK_SECRET = SECRET
    settings.LABEL_STUDIO_URL = label_studio.url
    settings.LABEL_STUDIO_TOKEN = "stand-in-token"
    dataset = Dataset.objects.create(name="webhook-matrix")
    rel = "webhook-matrix/images/0.png"
    (media / rel).parent.mkdir(parents=True, exist_ok=True)
    (media / rel).write_bytes(badfiles.noise_png(40, 32))
    sample = Sample.objects.create(
        dataset=dataset, external_id="s0", path=rel, sha256="0" * 64, width=40, height=32, label="fake",
        split="train",
    )  # fmt: skip
    round_ = Round.objects.create(dataset=dataset, number=1, state="annotating", config={})
    Selection.objects.create(round=round_, sample=sample, score=0.9, rank=1, scores={})
    AnnotationTask.objects.create(round=round_, sample=sample, ls_project_id=77, ls_task_id=501)
    LabelingProject.objects.create(round=round_, ls_project_id=77)
    client = LabelStudioClient(url=label_studio.url, token="stand-in-token")
    return {"sample": sample, "round": round_, "client": client, "server": label_studio}


def _hook(
    body, *, secret: str | None = SECRET, content_type: str = "application/json", raw: bytes | None = None
):
    extra = {HEADER: secret} if secret is not None else {}
    data = raw if raw is not None else json.dumps(body)
    return APIClient().generic("POST", "/api/v1/labeling/webhook", data, content_type=content_type, **extra)


def _event(annotation_id: int = 9001, updated_at: str = "2026-01-01T00:00:00Z") -> dict:
    return {
        "action": "ANNOTATION_CREATED",
        "project": {"id": 77},
        "annotation": {"id": annotation_id, "task": 501, "updated_at": updated_at},
    }


WEBHOOK = {
    # case id: (kwargs for _hook, settings secret, status, fragment)
    "wh-no-secret": ({"body": _event(), "secret": None}, SECRET, 401, "missing webhook secret"),
    "wh-wrong-secret": ({"body": _event(), "secret": "guess"}, SECRET, 403, "wrong webhook secret"),
    "wh-unset-secret": ({"body": _event(), "secret": ""}, "", 401, "missing webhook secret"),
    "wh-not-json": ({"body": None, "raw": b"action=ANNOTATION_CREATED", "content_type": "text/plain"}, SECRET,
                    415, "Unsupported media type"),
    "wh-invalid-json": ({"body": None, "raw": b'{"action": "ANNOTATION_CREATED",'}, SECRET, 400, "JSON parse error"),
    "wh-not-object": ({"body": [_event()]}, SECRET, 400, "must be a JSON object"),
    "wh-bad-annotation-id": ({"body": {**_event(), "annotation": {"id": "1; DROP TABLE", "task": 501}}}, SECRET,
                             400, "integer id"),
    "wh-nul-updated-at": ({"body": {**_event(), "annotation": {"id": 5, "task": 501, "updated_at": "1\x00"}}},
                          SECRET, 400, "NUL"),
    "wh-unknown-project": ({"body": {**_event(), "project": {"id": 31337}}}, SECRET, 404, "unknown Label Studio"),
    "wh-oversized": ({"body": {**_event(), "padding": "x" * (3 << 20)}}, SECRET, 413, "too large"),
}  # fmt: skip


@pytest.mark.parametrize(
    "case_id", [p for p in cases("webhook") if p.values[0] not in ("wh-replay", "wh-id-out-of-range")]
)
def test_webhook_refuses_bad_deliveries(case_id, labeling, settings, media):
    kwargs, secret, status, fragment = WEBHOOK[case_id]
    settings.WEBHOOK_SECRET = secret
    if case_id == "wh-unset-secret":  # the platform has no secret: even a (non-empty) guess is refused
        refused = _hook(_event(), secret="anything")
        assert refused.status_code == 403 and "wrong webhook secret" in _detail(refused)
    snapshot = Snapshot(media)
    response = _hook(**kwargs)
    assert response.status_code == status, response.content
    assert fragment.lower() in _detail(response).lower()
    snapshot.check()


def test_wh_id_out_of_range(labeling, media):
    snapshot = Snapshot(media)
    for value, fragment in (
        (2**70, "out of range"),
        (-5, "out of range"),
        (0, "out of range"),
        (True, "integer id"),
    ):
        response = _hook({**_event(), "annotation": {"id": value, "task": 501}})
        assert response.status_code == 400 and fragment in _detail(response), (value, response.content)
    snapshot.check()


def _annotation(result: list[dict], annotation_id: int = 9001, updated_at: str = "2026-01-01T00:00:00Z"):
    return {
        "id": annotation_id, "task": 501, "project": 77, "updated_at": updated_at, "result": result,
        "was_cancelled": False, "completed_by": 1, "lead_time": 1.0, "ground_truth": False,
    }  # fmt: skip


def _verdict(value: str = "fake") -> dict:
    return {"from_name": "verdict", "to_name": "image", "type": "choices", "value": {"choices": [value]}}


def _brush(rle, width: int = 40, height: int = 32) -> dict:
    return {
        "from_name": "mask", "to_name": "image", "type": "brushlabels", "original_width": width,
        "original_height": height, "value": {"format": "rle", "rle": rle, "brushlabels": ["forgery"]},
    }  # fmt: skip


def _good_rle(width: int = 40, height: int = 32) -> list[int]:
    from labeling.masks import encode_brush_rle

    mask = np.zeros((height, width), bool)
    mask[4:20, 6:30] = True
    return encode_brush_rle(mask)


def test_webhook_replay_stores_one_delivery_and_one_mask_version(labeling, media):
    from catalog.models import Mask
    from labeling.deliveries import delivery_process
    from labeling.ingest import annotation_ingest
    from labeling.models import WebhookDelivery

    annotation = _annotation([_verdict(), _brush(_good_rle())])
    labeling["server"].annotations[9001] = annotation
    first = _hook(_event())
    assert first.status_code == 200 and first.json() == {"accepted": 1, "duplicates": 0}
    delivery = WebhookDelivery.objects.get(ls_annotation_id=9001)
    assert delivery_process(delivery_id=delivery.pk, client=labeling["client"]) == "stored"
    assert Mask.objects.filter(sample=labeling["sample"]).count() == 1
    snapshot = Snapshot(media)
    replay = _hook(_event())
    assert replay.status_code == 200 and replay.json() == {"accepted": 0, "duplicates": 1}
    assert delivery_process(delivery_id=delivery.pk, client=labeling["client"]) == "done"
    assert annotation_ingest(annotation) == "unchanged"  # reconciliation reading the same annotation
    snapshot.check()
    assert WebhookDelivery.objects.filter(ls_annotation_id=9001).count() == 1


INGEST = {
    # case id: (annotation result, fragment of the rejection message)
    "rle-header-huge": (lambda: [_verdict(), _brush([255, 255, 255, 255] + [0] * 32)], "encodes 4294967295"),
    "rle-more-pixels": (lambda: [_verdict(), _brush(_good_rle(80, 64))], "needs 5120"),
    "rle-negative": (lambda: [_verdict(), _brush([0, 0, 20, 0, -5, 300, 7])], "ints in 0..255"),
    "rle-truncated": (lambda: [_verdict(), _brush(_good_rle()[:9])], "does not decode"),
    "rle-not-list": (lambda: [_verdict(), _brush("AAAA//8=")], "non-empty list"),
    "mask-wrong-size": (lambda: [_verdict(), _brush(_good_rle(40, 30), 40, 30)], "region drawn on a 40x30"),
    "polygon-malformed": (
        lambda: [_verdict(), {"type": "polygonlabels", "original_width": 40, "original_height": 32,
                              "value": {"points": [["a", "b"], [1, 2], [3, 4]], "polygonlabels": ["forgery"]}}],
        "malformed",
    ),
    "result-not-objects": (lambda: [1, 2], "every result item must be an object"),
    "result-value-string": (lambda: [{"type": "choices", "value": "fake"}, _brush(_good_rle())], "not an object"),
    "ann-bad-user": (lambda: [_verdict(), _brush(_good_rle())], "is not a user id"),
    "verdict-unknown": (lambda: [_verdict("definitely"), _brush(_good_rle())], "unknown verdict"),
}  # fmt: skip


@pytest.mark.parametrize("case_id", [p for p in cases("ingest") if p.values[0] in INGEST])
def test_ingest_rejects_bad_annotations_and_stores_no_mask(case_id, labeling, media):
    from labeling.deliveries import delivery_process
    from labeling.models import WebhookDelivery

    result, fragment = INGEST[case_id]
    labeling["server"].annotations[9001] = _annotation(result())
    if case_id == "ann-bad-user":
        labeling["server"].annotations[9001]["completed_by"] = "root"
    snapshot = Snapshot(media)
    response = _hook(_event())
    assert response.status_code == 200 and response.json()["accepted"] == 1
    delivery = WebhookDelivery.objects.get(ls_annotation_id=9001)
    assert delivery_process(delivery_id=delivery.pk, client=labeling["client"]) == "rejected"
    delivery.refresh_from_db()
    assert delivery.status == "rejected" and fragment in delivery.message, delivery.message
    snapshot.check(WebhookDelivery=1)  # the delivery row records the rejection; no Mask, no file


def test_ingest_choices_not_a_list_is_rejected(labeling, media):
    """The second half of ``result-value-string``: choices given as an object."""
    from labeling.ingest import AnnotationRejected, annotation_ingest

    snapshot = Snapshot(media)
    bad = _annotation([{"type": "choices", "value": {"choices": {"0": "fake"}}}, _brush(_good_rle())])
    with pytest.raises(AnnotationRejected, match="must be a list"):
        annotation_ingest(bad)
    snapshot.check()


def test_comment_nul(labeling, media):
    from catalog.models import Mask
    from labeling.deliveries import delivery_process
    from labeling.models import AnnotationRecord, WebhookDelivery

    comment = {"type": "textarea", "value": {"text": ["blend seam\x00 at the jaw"]}}
    labeling["server"].annotations[9001] = _annotation([_verdict(), comment, _brush(_good_rle())])
    assert _hook(_event()).status_code == 200
    delivery = WebhookDelivery.objects.get(ls_annotation_id=9001)
    assert delivery_process(delivery_id=delivery.pk, client=labeling["client"]) == "stored"
    assert AnnotationRecord.objects.get(ls_annotation_id=9001).comment == "blend seam at the jaw"
    assert Mask.objects.filter(sample=labeling["sample"]).count() == 1


# -------------------------------------------------------------------------------------- inference
@pytest.fixture
def version(media):
    """A tiny LAE version registered through the service (its checkpoint under MEDIA_ROOT)."""
    import torch

    from ml.detectors import create
    from ml.training.checkpoint import save_detector
    from modelhub.services import detector_version_register

    torch.manual_seed(0)
    relative = "models/matrix-lae.pt"
    if not (media / relative).exists():
        save_detector(create("lae", **TINY_LAE), media / relative)
    return detector_version_register(kind="lae", tag="matrix-lae", checkpoint=relative)


def _upload(name: str, data: bytes, content_type: str = "image/png"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type=content_type)


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


# ---------------------------------------------------------------------------------------- rounds
@pytest.fixture
def round_dataset(media):
    from catalog.models import Dataset, Sample

    dataset = Dataset.objects.create(name="rounds-matrix")
    Sample.objects.create(
        dataset=dataset, external_id="s0", path="x.png", sha256="0" * 64, width=32, height=32,
        label="real", split="train",
    )  # fmt: skip
    return dataset


ROUNDS = {
    # case id: list of (config, field that must carry an error)
    "round-budget": [({key: v}, key) for key in ("budget_fraction", "budget_total") for v in (0, 1.5, "0.1", True, -0.2)],
    "round-detector": [({"detectors": v}, "detectors") for v in (["xception"], [], "lae", [["lae"]], [{"a": 1}])],
    "round-strategy": [({"strategy": v}, "strategy") for v in ("magic", ["entropy"], None)]
                      + [({"strategy": "disagreement", "detectors": ["lae"]}, "strategy"),
                         ({"strategy": "node_entropy", "detectors": ["lae"]}, "strategy")],
    "round-epochs": [({"epochs": v}, "epochs") for v in (-1, 0, 1.5, "2", 10**9)],
    "round-config-type": [([["epochs", 2]], "config"), ("epochs=2", "config"), (7, "config")],
    "round-unknown-key": [({"epoch": 2}, "epoch"), ({"detector_config": {"xception": {}}}, "detector_config"),
                          ({"detector_config": {"lae": 3}}, "detector_config")],
    "round-active": [({"active": {"no_such_setting": 1}}, "active"), ({"active": {"shard_size": "big"}}, "active"),
                     ({"active": {"strategies": []}}, "active"), ({"active": []}, "active"),
                     ({"active": {"budget": 0}}, "active"), ({"active": {"budget": 1.5}}, "active"),
                     ({"active": {"checkpoint": "../../etc/passwd"}}, "active"),
                     ({"active": {"committee": {"sjedd": "/etc/passwd"}}}, "active")],
}  # fmt: skip


@pytest.mark.parametrize("case_id", [p for p in cases("rounds") if p.values[0] != "round-dataset"])
def test_round_launch_refuses_invalid_configs(case_id, admin, round_dataset, media):
    snapshot = Snapshot(media)
    for config, field in ROUNDS[case_id]:
        response = _client(admin).post(
            "/api/v1/rounds/", {"dataset": round_dataset.pk, "config": config}, format="json"
        )
        assert response.status_code == 400, (config, response.content)
        body = response.json()
        errors = body.get("errors") or body
        assert field in errors, (config, body)
    snapshot.check()


def test_round_dataset(admin, media):
    snapshot = Snapshot(media)
    missing = _client(admin).post("/api/v1/rounds/", {"dataset": 987654, "config": {}}, format="json")
    assert missing.status_code == 404, missing.content
    for value in ("abc", -1, None, [1]):
        response = _client(admin).post("/api/v1/rounds/", {"dataset": value}, format="json")
        assert response.status_code == 400 and "dataset" in response.json(), (value, response.content)
    snapshot.check()


# ------------------------------------------------------------------------------------ generic API
def test_api_oversized_json(admin, round_dataset, media):
    snapshot = Snapshot(media)
    body = {"dataset": round_dataset.pk, "config": {"seed": 1, "padding": "x" * (3 << 20)}}
    response = _client(admin).post("/api/v1/rounds/", body, format="json")
    assert response.status_code == 413, response.content[:300]
    assert "too large" in _detail(response).lower()
    snapshot.check()


def test_api_deep_json(admin, round_dataset, labeling, media):
    deep = "[" * 100_000 + "]" * 100_000
    snapshot = Snapshot(media)
    for url in ("/api/v1/datasets/", "/api/v1/rounds/"):
        response = _client(admin).generic("POST", url, deep, content_type="application/json")
        assert response.status_code == 400 and "nested too deeply" in _detail(response), url
    response = _hook(None, raw=deep.encode())
    assert response.status_code == 400 and "nested too deeply" in _detail(response)
    snapshot.check()


def test_api_bad_json(admin, media):
    snapshot = Snapshot(media)
    for body in (b'{"name": "x\xff"}', b'{"name": "a", "n": ' + b"9" * 5000 + b"}"):
        response = _client(admin).generic("POST", "/api/v1/datasets/", body, content_type="application/json")
        assert response.status_code == 400 and "JSON parse error" in _detail(response), body[:40]
    snapshot.check()


def test_api_too_many_parts(admin, version, media):
    url = f"/api/v1/detectors/{version.tag}/predict/"
    snapshot = Snapshot(media)
    fields = {"mode": "crop", **{f"f{i}": "x" for i in range(1200)}}
    response = _client(admin).post(url, fields, format="multipart")
    assert response.status_code == 400 and "too many form fields" in _detail(response)
    files = {"mode": "crop", "images": [_upload(f"{i}.png", b"x") for i in range(150)]}
    response = _client(admin).post(url, files, format="multipart")
    assert response.status_code == 400 and "too many form files" in _detail(response)
    snapshot.check()


def test_api_nul_filter(admin, media):
    snapshot = Snapshot(media)
    response = _client(admin).get("/api/v1/samples/", {"identity": "a\x00b"})
    assert response.status_code == 400 and "Null characters are not allowed" in _detail(response)
    snapshot.check()


def test_api_media_symlink(admin, media, outside):
    from django.test import Client

    from catalog.models import Dataset, Mask, Sample

    secret = (outside / "secret.png").read_bytes()
    (media / "swapped").mkdir(exist_ok=True)
    for name in ("img.png", "mask.png"):
        (media / "swapped" / name).unlink(missing_ok=True)
        (media / "swapped" / name).symlink_to(outside / "secret.png")
    dataset = Dataset.objects.create(name="swapped")
    sample = Sample.objects.create(
        dataset=dataset, external_id="s", path="swapped/img.png", sha256="0" * 64, width=32, height=32,
        label="fake", has_mask=True,
    )  # fmt: skip
    Mask.objects.create(sample=sample, version=1, source="annotator", path="swapped/mask.png", area=0.1)
    snapshot = Snapshot(media)
    response = _client(admin).get(f"/api/v1/samples/{sample.pk}/media/")
    assert response.status_code == 404, response.status_code
    browser = Client()
    browser.force_login(admin)
    overlay = browser.get(f"/samples/{sample.pk}/mask.png")
    assert overlay.status_code == 404, overlay.status_code
    assert secret not in response.content and secret not in overlay.content
    snapshot.check()


def test_api_nul_token(admin, media):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token abc\x00def")
    snapshot = Snapshot(media)
    response = client.get("/api/v1/datasets/")
    assert response.status_code == 401 and "Invalid token" in _detail(response)
    snapshot.check()


def test_api_nul_path(admin, version, media):
    snapshot = Snapshot(media)
    for url in ("/api/v1/detectors/a%00b/", "/api/v1/detectors/a%00b/bundle/"):
        response = _client(admin).get(url)
        assert response.status_code == 404 and "no detector version" in _detail(response), url
    snapshot.check()


def test_dash_nul_filter(admin, round_dataset, media):
    from django.test import Client

    browser = Client()
    browser.force_login(admin)
    snapshot = Snapshot(media)
    for key in ("manipulation", "split", "label"):
        response = browser.get(f"/datasets/{round_dataset.pk}/", {key: "none\x00"})
        assert response.status_code == 400, (key, response.status_code)
    assert browser.get(f"/datasets/{round_dataset.pk}/", {"manipulation": "none"}).status_code == 200
    snapshot.check()


# ------------------------------------------------------------------------------------------- docs
def test_every_case_is_run_by_a_test_in_this_module():
    """Each case id is either a parametrized id above or the name of a test function (test_<id>)."""
    import sys

    module = sys.modules[__name__]
    tables = {**IMPORT_API, **IMPORTER, **VIDEO, **WEBHOOK, **INGEST, **INFERENCE, **ROUNDS}
    functions = {name[5:].replace("_", "-") for name in dir(module) if name.startswith("test_")}
    replay = {"wh-replay"}  # test_webhook_replay_stores_one_delivery_and_one_mask_version
    missing = [c.id for c in CASES if c.id not in tables and c.id not in functions and c.id not in replay]
    assert not missing, f"cases without a test: {missing}"
    assert len({c.id for c in CASES}) == len(CASES), "duplicate case ids"


def test_security_doc_lists_every_case():
    """deploy/docs/security.md's "Bad input" table is exactly the generated one (regenerate with
    ``python tests/integration/badfiles.py``)."""
    text = SECURITY_DOC.read_text()
    assert "## Bad input" in text
    section = text.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    assert badfiles.markdown_table() in section, "the Bad input table is out of date"


def test_bad_files_are_what_they_claim():
    """The generated files really are what the cases say (so a refusal is for the right reason)."""
    from PIL import Image

    with Image.open(io.BytesIO(badfiles.deflate_bomb_png())) as image:
        assert image.size == (8192, 8192)
    assert len(badfiles.deflate_bomb_png()) < 200_000
    import struct

    assert struct.unpack(">II", badfiles.bomb_header_png()[16:24]) == (
        30000,
        30000,
    )  # Pillow refuses to open it
    assert len(badfiles.text_bomb_png()) < 200_000
    assert badfiles.jpeg_bytes().endswith(b"\xff\xd9") and not badfiles.jpeg_bytes(True).endswith(b"\xff\xd9")


def test_the_pickle_payload_is_live(tmp_path):
    """Unpickled by plain ``pickle`` the payload does create its marker: the refusals above are real."""
    import pickle

    marker = tmp_path / "ran"
    pickle.loads(badfiles.pickle_payload(marker))  # noqa: S301 - the point of this check
    assert marker.exists()
