"""A real Label Studio server for the session, wired to the live platform server and the real worker.

- Label Studio runs from ``.venv-ls`` (installed by ``deploy/labelstudio/ls.sh`` on first use), on port
  ``LS_TEST_PORT`` (default 8091), with its own state under ``var/labelstudio/test`` (SQLite; kept
  between runs, so only the very first run pays the ~30 s of migrations; later starts take seconds).
  Its local-files document root is the session's MEDIA_ROOT, so it is (re)started once per session
  and stopped at the end.
- The connection settings are fixed at collection time (before any worker process starts), because
  the worker inherits this process's environment: URL, admin token (the token file the script uses)
  and a per-run webhook secret.
- ``labeling_live`` points Label Studio's webhooks at pytest-django's ``live_server``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
LS_SCRIPT = ROOT / "deploy" / "labelstudio" / "ls.sh"
LS_PORT = os.environ.get("LS_TEST_PORT", "8091")
LS_HOME = ROOT / "var" / "labelstudio" / "test"
LS_URL = f"http://127.0.0.1:{LS_PORT}"


def _ensure_token() -> str:
    token_file = LS_HOME / "admin_token"
    if not token_file.is_file():
        LS_HOME.mkdir(parents=True, exist_ok=True)
        token_file.write_text(secrets.token_hex(20))
        token_file.chmod(0o600)
    return token_file.read_text().strip()


TOKEN = _ensure_token()
SECRET = secrets.token_hex(16)
os.environ.update({"LABEL_STUDIO_URL": LS_URL, "LABEL_STUDIO_TOKEN": TOKEN, "WEBHOOK_SECRET": SECRET})
settings.LABEL_STUDIO_URL, settings.LABEL_STUDIO_TOKEN, settings.WEBHOOK_SECRET = LS_URL, TOKEN, SECRET


def ls_script(command: str, media_root: Path | None = None, timeout: float = 600) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}  # the test server uses SQLite
    env.update({"LS_PORT": LS_PORT, "LS_HOME": str(LS_HOME)})
    if media_root is not None:
        env["MEDIA_ROOT"] = str(media_root)
    subprocess.run(["bash", str(LS_SCRIPT), command], env=env, check=True, timeout=timeout)


@pytest.fixture(scope="session")
def labelstudio_server(platform_media_root):
    ls_script("stop")
    ls_script("start", platform_media_root)
    from labeling.client import LabelStudioClient

    client = LabelStudioClient(url=LS_URL, token=TOKEN)
    assert client.whoami()["email"]
    yield client
    ls_script("stop")


@pytest.fixture(scope="session")
def labeling_live(labelstudio_server, live_server, celery_worker_proc):
    settings.LABELING_WEBHOOK_URL = f"{live_server.url}/api/v1/labeling/webhook"
    return labelstudio_server


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.3, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def make_round(media_root: Path, *, name: str, fakes: int = 3, reals: int = 1, size=(40, 32), config=None):
    """A dataset with image + ground-truth files under the media root, a round and its selection."""
    from catalog.models import Dataset, Sample
    from rounds.models import Round, Selection

    w, h = size
    dataset = Dataset.objects.create(name=name)
    rng = np.random.default_rng(len(name))
    samples = []
    for index in range(fakes + reals):
        fake = index < fakes
        rel = f"datasets/{name}/images/{index:03d}.png"
        (media_root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(media_root / rel)
        gt_rel = ""
        if fake:
            gt = np.zeros((h, w), np.uint8)
            y, x = 3 + index, 4 + 2 * index
            gt[y : y + 12, x : x + 15] = 255
            gt[y + 2 : y + 5, x + 1 : x + 4] = 140  # soft border values, >= 128 counts as forged
            gt_rel = f"datasets/{name}/masks/{index:03d}.png"
            (media_root / gt_rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(gt).save(media_root / gt_rel)
        samples.append(
            Sample.objects.create(
                dataset=dataset, external_id=f"s{index}", path=rel, sha256="0" * 64, width=w, height=h,
                label="fake" if fake else "real", split="train", gt_mask_path=gt_rel,
            )
        )  # fmt: skip
    round_obj = Round.objects.create(dataset=dataset, number=1, state="annotating", config=config or {})
    for rank, sample in enumerate(samples, start=1):
        Selection.objects.create(
            round=round_obj, sample=sample, score=1.0 - rank / 10, rank=rank, scores={"prob": 0.4 + rank / 20}
        )
    return round_obj, samples


def gt_of(media_root: Path, sample) -> np.ndarray:
    if not sample.gt_mask_path:
        return np.zeros((sample.height, sample.width), bool)
    return np.asarray(Image.open(media_root / sample.gt_mask_path).convert("L")) >= 128


def latest_mask(media_root: Path, sample):
    from catalog.models import Mask

    row = Mask.objects.filter(sample=sample).order_by("-version").first()
    if row is None:
        return None, None
    return row, np.asarray(Image.open(media_root / row.path).convert("L")) >= 128
