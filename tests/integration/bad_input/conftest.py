"""Fixtures of the bad-input matrix: the media root, an outside directory, the pickle marker, an admin,
a fresh throttle cache for every test, the Label Studio stand-in, a registered detector version and a
dataset rounds can launch on."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration import badfiles
from tests.integration.bad_input.common import (
    SECRET,
    TINY_LAE,
)


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


@pytest.fixture
def admin():
    from accounts.services import user_create

    return user_create(username="matrix-admin", password="matrix-pass-123", role="admin")


@pytest.fixture(autouse=True)
def _fresh_throttle_cache():
    from django.core.cache import cache

    cache.clear()


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


@pytest.fixture
def round_dataset(media):
    from catalog.models import Dataset, Sample

    dataset = Dataset.objects.create(name="rounds-matrix")
    Sample.objects.create(
        dataset=dataset, external_id="s0", path="x.png", sha256="0" * 64, width=32, height=32,
        label="real", split="train",
    )  # fmt: skip
    return dataset


class _LabelStudioStandIn:
    """Serves ``GET /api/annotations/<id>/`` from a dict, as Label Studio's API would."""

    def __init__(self):
        annotations: dict[int, dict] = {}
        self.annotations = annotations

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # http.server's naming
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
