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

import fcntl
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
LS_SCRIPT = ROOT / "deploy" / "labelstudio" / "ls.sh"
TEMPLATE_HOME = ROOT / "var" / "labelstudio" / "test"
RUNS_DIR = ROOT / "var" / "labelstudio" / "test-runs"
LS_HOME = RUNS_DIR / str(os.getpid())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


LS_PORT = os.environ.get("LS_TEST_PORT") or str(_free_port())
LS_URL = f"http://127.0.0.1:{LS_PORT}"


def _ensure_token() -> str:
    token_file = TEMPLATE_HOME / "admin_token"
    if not token_file.is_file():
        TEMPLATE_HOME.mkdir(parents=True, exist_ok=True)
        token_file.write_text(secrets.token_hex(20))
        token_file.chmod(0o600)
    return token_file.read_text().strip()


TOKEN = _ensure_token()
SECRET = secrets.token_hex(16)
os.environ.update({"LABEL_STUDIO_URL": LS_URL, "LABEL_STUDIO_TOKEN": TOKEN, "WEBHOOK_SECRET": SECRET})
# Fix the live server's address now too, so a worker started before it (and the projects it creates)
# already knows where Label Studio's webhooks must go.
if not os.environ.get("DJANGO_LIVE_TEST_SERVER_ADDRESS"):
    os.environ["DJANGO_LIVE_TEST_SERVER_ADDRESS"] = f"127.0.0.1:{_free_port()}"
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
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}  # the test server uses SQLite
    env.update({"LS_PORT": str(port), "LS_HOME": str(home), **(extra_env or {})})
    if media_root is not None:
        env["MEDIA_ROOT"] = str(media_root)
    done = subprocess.run(
        ["bash", str(LS_SCRIPT), command, *args], env=env, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:  # say why: the script's own message is the useful part of a failure
        raise AssertionError(
            f"ls.sh {command} {' '.join(args)} exited {done.returncode}\n"
            f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
        )


def _reap_orphans() -> None:
    """Stop test servers whose pytest process is gone (a run killed before its teardown).

    Found by their data directory, ``test-runs/<pytest pid>/data``, in the server's environment, so
    only servers started by this fixture are touched, each by its own pid.
    """
    marker = f"LABEL_STUDIO_BASE_DATA_DIR={RUNS_DIR}/"
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            text = item.decode(errors="replace")
            if text.startswith(marker):
                owner = text[len(marker) :].split("/", 1)[0]
                try:
                    os.kill(int(owner), 0)
                except ProcessLookupError:
                    try:
                        os.kill(int(proc.name), signal.SIGTERM)
                    except OSError:
                        pass
                except (ValueError, PermissionError):
                    pass
                break


def _prepare_run_home() -> None:
    """Copy the migrated template (building it first if needed) into this session's own home."""
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    for stale in RUNS_DIR.iterdir():  # homes of sessions that died
        try:
            os.kill(int(stale.name), 0)
        except (ValueError, PermissionError):
            continue
        except ProcessLookupError:
            subprocess.run(
                ["bash", str(LS_SCRIPT), "stop"], env={**os.environ, "LS_HOME": str(stale)}, check=False
            )
            shutil.rmtree(stale, ignore_errors=True)
    _reap_orphans()
    with open(RUNS_DIR.parent / "test-template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (
            not (TEMPLATE_HOME / "data" / "label_studio.sqlite3").is_file()
            or not (TEMPLATE_HOME / "ready").is_file()
        ):
            port = str(_free_port())
            ls_script("start", TEMPLATE_HOME / "media", home=TEMPLATE_HOME, port=port)
            ls_script("stop", home=TEMPLATE_HOME, port=port)
            (TEMPLATE_HOME / "ready").write_text("migrated\n")
        shutil.rmtree(LS_HOME, ignore_errors=True)
        (LS_HOME / "data").mkdir(parents=True)
        # sqlite's backup API: a consistent copy even if another session's server writes the template
        with sqlite3.connect(TEMPLATE_HOME / "data" / "label_studio.sqlite3") as src:
            with sqlite3.connect(LS_HOME / "data" / "label_studio.sqlite3") as dst:
                src.backup(dst)
        for name in ("admin_token", "admin_password", "secret_key"):
            shutil.copy2(TEMPLATE_HOME / name, LS_HOME / name)


# Both tests/labelstudio and tests/e2e re-export these fixtures, so pytest may instantiate the session
# fixture once per directory: the server is shared and reference-counted, started once, stopped last.
_SERVER: dict = {"client": None, "users": 0}


@pytest.fixture(scope="session")
def labelstudio_server(platform_media_root):
    if _SERVER["client"] is None:
        _prepare_run_home()
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


class SpareLabelStudio:
    """A second Label Studio server for one test (a copy of the migrated template in its own home, its
    own port): a "reset" or "replaced" instance, or one to restart from different shells."""

    def __init__(self, media_root: Path, name: str):
        self.home = RUNS_DIR / f"{os.getpid()}-{name}"
        self.port = str(_free_port())
        self.url = f"http://127.0.0.1:{self.port}"
        self.media_root = media_root
        shutil.rmtree(self.home, ignore_errors=True)
        (self.home / "data").mkdir(parents=True)
        with sqlite3.connect(TEMPLATE_HOME / "data" / "label_studio.sqlite3") as src:
            with sqlite3.connect(self.home / "data" / "label_studio.sqlite3") as dst:
                src.backup(dst)
        for name_ in ("admin_token", "admin_password", "secret_key"):
            shutil.copy2(TEMPLATE_HOME / name_, self.home / name_)

    def run(
        self, command: str, *, env: dict | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        base.update({"LS_PORT": self.port, "LS_HOME": str(self.home), "MEDIA_ROOT": str(self.media_root)})
        return subprocess.run(["bash", str(LS_SCRIPT), command], env={**base, **(env or {})}, check=check,
                              timeout=900, capture_output=True, text=True)  # fmt: skip

    def client(self):
        from labeling.client import LabelStudioClient

        return LabelStudioClient(url=self.url, token=TOKEN)

    def close(self) -> None:
        self.run("stop", check=False)
        shutil.rmtree(self.home, ignore_errors=True)
