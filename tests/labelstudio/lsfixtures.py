"""A real Label Studio server for the session, wired to the live platform server and the real worker.

- Label Studio runs from ``.venv-ls`` (installed by ``deploy/labelstudio/ls.sh`` on first use).
- A migrated SQLite template lives in ``var/labelstudio/test`` (built once, under a file lock: the first
  boot runs ~400 migrations, 20-120 s); each pytest session copies it into its own
  ``var/labelstudio/test-runs/<pid>`` and starts its own server on a free port, so concurrent test
  sessions in one checkout never stop each other's server. Later starts take seconds.
  Its local-files document root is the session's MEDIA_ROOT; it is stopped and removed at the end.
- The connection settings are fixed at collection time (before any worker process starts), because
  the worker inherits this process's environment: URL, admin token (the template's token file) and a
  per-run webhook secret.
- ``labeling_live`` points Label Studio's webhooks at pytest-django's ``live_server``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from PIL import Image

from bench.harness import labelstudio as harness
from bench.harness.labelstudio import TEMPLATE_HOME, LabelStudio
from bench.harness.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
RUNS_DIR = ROOT / "var" / "labelstudio" / "test-runs"
LS_HOME = RUNS_DIR / str(os.getpid())
LS_PORT = os.environ.get("LS_TEST_PORT") or str(free_port())
LS_URL = f"http://127.0.0.1:{LS_PORT}"
TOKEN = harness.template_token(TEMPLATE_HOME)
SECRET = secrets.token_hex(16)
os.environ.update({"LABEL_STUDIO_URL": LS_URL, "LABEL_STUDIO_TOKEN": TOKEN, "WEBHOOK_SECRET": SECRET})
# Fix the live server's address now too, so a worker started before it (and the projects it creates)
# already knows where Label Studio's webhooks must go.
if not os.environ.get("DJANGO_LIVE_TEST_SERVER_ADDRESS"):
    os.environ["DJANGO_LIVE_TEST_SERVER_ADDRESS"] = f"127.0.0.1:{free_port()}"
    os.environ["LABELING_WEBHOOK_URL"] = (
        f"http://{os.environ['DJANGO_LIVE_TEST_SERVER_ADDRESS']}/api/v1/labeling/webhook"
    )
settings.LABEL_STUDIO_URL, settings.LABEL_STUDIO_TOKEN, settings.WEBHOOK_SECRET = LS_URL, TOKEN, SECRET
# Settings were read before this module set the environment (the worker process reads it at start-up).
if os.environ.get("LABELING_WEBHOOK_URL"):
    settings.LABELING_WEBHOOK_URL = os.environ["LABELING_WEBHOOK_URL"]


def ls_script(
    command: str,
    media_root: Path | None = None,
    *,
    home: Path = LS_HOME,
    port: str = LS_PORT,
    args: tuple[str, ...] = (),
    extra_env: dict | None = None,
) -> None:
    """``ls.sh`` for the session's server (``bench.harness.labelstudio.ls_script``)."""
    harness.ls_script(command, home=home, port=port, media=media_root, args=args, extra_env=extra_env)


# Both tests/labelstudio and tests/e2e re-export these fixtures, so pytest may instantiate the session
# fixture once per directory: the server is shared and reference-counted, started once, stopped last.
_SERVER: dict = {"client": None, "users": 0}


@pytest.fixture(scope="session")
def labelstudio_server(platform_media_root):
    if _SERVER["client"] is None:
        RUNS_DIR.mkdir(parents=True, exist_ok=True)
        harness.remove_stale_homes(RUNS_DIR)  # sessions that died: their servers stopped, homes removed
        harness.reap_orphans(RUNS_DIR)
        harness.fresh_home(LS_HOME, TEMPLATE_HOME)
        ls_script("start", platform_media_root)
        from labeling.client import LabelStudioClient

        client = LabelStudioClient(url=LS_URL, token=TOKEN)
        assert client.whoami()["email"]
        _SERVER["client"] = client
    _SERVER["users"] += 1
    try:
        yield _SERVER["client"]
    finally:
        _SERVER["users"] -= 1
        if _SERVER["users"] == 0:
            _SERVER["client"] = None
            ls_script("stop")
            shutil.rmtree(LS_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def labeling_live(labelstudio_server, live_server, celery_worker_proc):
    settings.LABELING_WEBHOOK_URL = f"{live_server.url}/api/v1/labeling/webhook"
    return labelstudio_server


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


class Person:
    """A person's own browser session in Label Studio (plain HTTP forms, as a browser posts them): signs
    up through an invite link, logs in with the password they chose, opens a project's API."""

    def __init__(self, email: str, password: str):
        import httpx

        self.email, self.password = email, password
        self.web = httpx.Client(base_url=LS_URL, follow_redirects=False, timeout=30)

    def _post_form(self, url: str, data: dict) -> int:
        self.web.get(url)
        csrf = self.web.cookies.get("csrftoken")
        answer = self.web.post(
            url, data={"csrfmiddlewaretoken": csrf, **data}, headers={"Referer": LS_URL + url}
        )
        return answer.status_code

    def sign_up(self, invite_url: str) -> bool:
        path = invite_url[len(LS_URL) :] if invite_url.startswith(LS_URL) else invite_url
        return self._post_form(path, {"email": self.email, "password": self.password}) == 302

    def log_in(self) -> bool:
        self.web.cookies.clear()
        return self._post_form("/user/login/", {"email": self.email, "password": self.password}) == 302

    def project_status(self, project_id: int) -> int:
        return self.web.get(f"/api/projects/{project_id}/").status_code


def spare_labelstudio(media_root: Path, name: str) -> LabelStudio:
    """A second Label Studio server for one test, in its own home ``test-runs/<pid>-<name>`` on its own
    port: ``start()`` on a fresh copy of the migrated template (a "reset" or "replaced" instance),
    ``start(fresh=False)`` again on its data, ``script(command, extra_env=...)`` from another shell,
    ``close()`` stops and removes it."""
    return LabelStudio(RUNS_DIR / f"{os.getpid()}-{name}", media_root)
