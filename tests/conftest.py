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
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.harness.brokers import redis_db_url
from bench.harness.databases import drop_orphaned_databases, settings_url
from bench.harness.processes import ProcessExited, service_env, start_worker, stop_process, wait_worker_ready

ROOT = Path(__file__).resolve().parents[1]
TEST_REDIS_DB = os.environ.get("TEST_REDIS_DB", "15")
RUN_ID = f"{os.getpid()}"
WORKER_START_TIMEOUT_S = float(os.environ.get("TEST_WORKER_START_TIMEOUT", "120"))


@pytest.fixture(scope="session")
def django_db_modify_db_settings():
    from django.db import connections

    settings_dict = connections["default"].settings_dict
    # databases of runs that died (their pytest process is gone)
    drop_orphaned_databases(settings_url(settings_dict), rf"^test_{re.escape(settings_dict['NAME'])}_(\d+)$")
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

    redis_url = redis_db_url(settings.REDIS_URL, TEST_REDIS_DB)
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
    database_url = settings_url(connection.settings_dict)
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    env = service_env(database_url=database_url, media_root=platform_media_root, redis_url=redis_url, prefix=prefix,
                      DEBUG="true", LOG_LEVEL="INFO")  # fmt: skip
    process = start_worker(env, log_path, f"test-{RUN_ID}", concurrency=1)
    worker = WorkerProcess(app, process, log_path, database_url, redis_url, platform_media_root)
    try:
        try:
            health = wait_worker_ready(app, process, queue="default", timeout=WORKER_START_TIMEOUT_S)
        except (ProcessExited, TimeoutError) as exc:
            pytest.fail(f"the Celery worker did not answer ({exc}):\n{worker.log_tail()}")
        if health["database"] != connection.settings_dict["NAME"]:
            pytest.fail(f"the Celery worker is on another database: {health}")
        yield worker
    finally:
        stop_process(process)


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
