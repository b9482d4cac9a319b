"""Fixtures shared by every test tier.

- Each pytest run gets its own PostgreSQL test database, ``test_<name>_<pid>`` (pytest-django creates
  and drops it), so parallel runs against one server do not clobber each other; databases left by
  runs that died are dropped at the start of the next run.
- ``platform_media_root`` (session): a temporary MEDIA_ROOT shared by the test process and the worker.
- ``celery_worker_proc`` (session): a real Celery worker *process* (``celery -A workers.celery_app
  worker -Q gpu,cpu,default --pool=solo``) on the test database and on Redis database
  ``TEST_REDIS_DB`` (default 15) under a per-run key prefix. Integration tests that run tasks use it
  with ``@pytest.mark.django_db(transaction=True)`` so the worker sees their committed rows.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_REDIS_DB = os.environ.get("TEST_REDIS_DB", "15")
RUN_ID = f"{os.getpid()}"
WORKER_START_TIMEOUT_S = float(os.environ.get("TEST_WORKER_START_TIMEOUT", "120"))


def _drop_stale_test_databases(settings_dict: dict) -> None:
    """Drop ``test_<name>_<pid>`` databases whose pytest process is gone (a crashed earlier run)."""
    import psycopg2

    params = {
        "dbname": settings_dict["NAME"],
        "user": settings_dict.get("USER") or None,
        "password": settings_dict.get("PASSWORD") or None,
        "host": settings_dict.get("HOST") or None,
        "port": settings_dict.get("PORT") or None,
    }
    pattern = re.compile(rf"^test_{re.escape(settings_dict['NAME'])}_(\d+)$")
    try:
        conn = psycopg2.connect(**{k: v for k, v in params.items() if v})
    except psycopg2.Error:
        return
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database")
        for (name,) in cursor.fetchall():
            match = pattern.match(name)
            if not match or int(match.group(1)) == os.getpid():
                continue
            try:
                os.kill(int(match.group(1)), 0)
                continue  # that run is still going
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            try:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
            except psycopg2.Error:
                pass
    conn.close()


@pytest.fixture(scope="session")
def django_db_modify_db_settings():
    from django.db import connections

    settings_dict = connections["default"].settings_dict
    _drop_stale_test_databases(settings_dict)
    settings_dict.setdefault("TEST", {})
    settings_dict["TEST"]["NAME"] = f"test_{settings_dict['NAME']}_{RUN_ID}"


@pytest.fixture(scope="session")
def platform_media_root(tmp_path_factory) -> Path:
    """A MEDIA_ROOT for the whole session (the worker process reads the same directory)."""
    from django.conf import settings

    media = tmp_path_factory.mktemp("media").resolve()
    settings.MEDIA_ROOT = media
    settings.IMPORT_ROOTS = []
    return media


def _database_url(settings_dict: dict) -> str:
    user = quote(settings_dict.get("USER") or "")
    password = quote(settings_dict.get("PASSWORD") or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or "5432"
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


def _redis_url(base: str, db: str) -> str:
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


@dataclass
class WorkerProcess:
    app: object
    process: subprocess.Popen
    log_path: Path
    database_url: str
    redis_url: str
    media_root: Path

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _point_celery_at_test_broker() -> tuple[object, str, str]:
    """The test process's Celery app, settings included, on Redis DB TEST_REDIS_DB under this run's key
    prefix: (app, redis_url, prefix)."""
    from django.conf import settings

    redis_url = _redis_url(settings.REDIS_URL, TEST_REDIS_DB)
    prefix = f"forgerylab-test-{RUN_ID}:"
    settings.CELERY_BROKER_URL = settings.CELERY_RESULT_BACKEND = redis_url
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": prefix}

    from workers.celery_app import app

    app.conf.update(
        broker_url=redis_url, result_backend=redis_url, broker_transport_options={"global_keyprefix": prefix}
    )
    return app, redis_url, prefix


@pytest.fixture(scope="session", autouse=True)
def _test_broker():
    """From the first test on, every message the test process sends (a signal provisioning a Label Studio
    user, a task a view dispatches) goes to the test Redis DB under this run's prefix, whether or not a
    worker fixture has started yet: never to the default broker, where a developer's own workers (``make
    demo``) would run it against their database."""
    _point_celery_at_test_broker()


@pytest.fixture(scope="session")
def celery_worker_proc(django_db_setup, django_db_blocker, platform_media_root, tmp_path_factory):
    """A real Celery worker process on the test database, Redis DB TEST_REDIS_DB and MEDIA_ROOT."""
    import redis
    from django.db import connection

    app, redis_url, prefix = _point_celery_at_test_broker()
    redis.Redis.from_url(redis_url).ping()  # fail fast with a clear error when Redis is down
    database_url = _database_url(connection.settings_dict)
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CELERY_KEY_PREFIX": prefix,
        "MEDIA_ROOT": str(platform_media_root),
        "IMPORT_ROOTS": "",
        "DEBUG": "true",
        "HF_HUB_OFFLINE": "1",
        "LOG_LEVEL": "INFO",
    }
    env.pop("CELERY_BROKER_URL", None)
    env.pop("CELERY_RESULT_BACKEND", None)
    command = [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", "gpu,cpu,default",
        "--pool=solo", "--concurrency=1", "--loglevel=INFO", "-n", f"test-{RUN_ID}@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    worker = WorkerProcess(app, process, log_path, database_url, redis_url, platform_media_root)
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"the Celery worker exited with {process.returncode}:\n{worker.log_tail()}")
            try:
                result = app.send_task("workers.tasks.core.health", queue="default").get(timeout=10)
                assert result["database"] == connection.settings_dict["NAME"], result
                break
            except Exception as exc:  # noqa: BLE001 - keep waiting until the deadline
                if time.monotonic() > deadline:
                    pytest.fail(f"the Celery worker did not answer ({exc!r}):\n{worker.log_tail()}")
        yield worker
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def write_png(path: Path, size: tuple[int, int] = (32, 32), seed: int = 0, mode: str = "RGB") -> Path:
    """A small random PNG (test images are tiny on purpose)."""
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    array = rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(array.squeeze() if channels == 1 else array, mode=None).save(path)
    return path


def write_manifest_dataset(directory: Path, count: int = 6, *, with_masks: bool = True) -> Path:
    """A dataset directory in the data engine's format (manifest.jsonl + PNGs); returns the manifest."""
    import json

    rows = []
    for index in range(count):
        fake = index % 2 == 1
        image = write_png(directory / "images" / f"{index:04d}.png", seed=index)
        row = {
            "id": f"s{index:04d}",
            "path": image.relative_to(directory).as_posix(),
            "label": "fake" if fake else "real",
            "manipulation": "swap" if fake else "none",
            "params": {"seed": index},
            "identity": f"id{index // 2}",
            "video": f"v{index // 3}",
            "frame": index,
            "split": ("train", "val", "test")[index % 3],
            "mask_path": None,
            "region_targets": [1, 0, 1, 0, 0, 0, 0, 0, 0, 1] if fake else [0] * 10,
            "landmarks": [[1.0, 2.0]] * 68,
            "width": 32,
            "height": 32,
        }
        if fake and with_masks:
            mask = write_png(directory / "masks" / f"{index:04d}.png", seed=100 + index, mode="L")
            row["mask_path"] = mask.relative_to(directory).as_posix()
        rows.append(row)
    manifest = directory / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest
