"""Helpers shared by benchmarks: timing, peak RSS, device description."""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager


@contextmanager
def timer():
    box = {}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["s"] = time.perf_counter() - start


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def device_info() -> dict:
    import torch

    if torch.cuda.is_available():
        return {"device": "cuda", "name": torch.cuda.get_device_name(0)}
    return {"device": "cpu", "threads": torch.get_num_threads()}


_SCRATCH: dict = {}


def django_setup(migrate: bool = True, *, scratch: bool = True) -> dict:
    """Configure Django for a benchmark process: ``platform/`` on sys.path, settings, migrations.

    ``scratch`` (the default): never the user's data. A private PostgreSQL database ``bench_<pid>`` on the
    server of DATABASE_URL (created, migrated, dropped when the process exits), Redis DB 14 under a
    per-run key prefix (deleted at exit) and a temporary MEDIA_ROOT; child processes a benchmark starts
    (gunicorn, workers) inherit them through the environment. ``scratch=False`` is for a caller that set
    up its own private state already. Returns the scratch description (empty without scratch)."""
    import atexit
    import os
    import sys
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for path in (str(root / "platform"), str(root)):
        if path not in sys.path:
            sys.path.insert(0, path)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "forgery_site.settings")
    if scratch and not _SCRATCH:
        base_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
        name = f"bench_{os.getpid()}"
        admin_sql(base_url, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
        redis_base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0]
        media = tempfile.mkdtemp(prefix="bench-media-")
        _SCRATCH.update(
            database_url=base_url.rsplit("/", 1)[0] + f"/{name}", database=name, base_url=base_url,
            redis_url=f"{redis_base}/14", prefix=f"bench-{os.getpid()}:", media=media,
        )  # fmt: skip
        os.environ.update(
            {"DATABASE_URL": _SCRATCH["database_url"], "REDIS_URL": _SCRATCH["redis_url"],
             "CELERY_KEY_PREFIX": _SCRATCH["prefix"], "MEDIA_ROOT": media}
        )  # fmt: skip
        os.environ.pop("CELERY_BROKER_URL", None)
        os.environ.pop("CELERY_RESULT_BACKEND", None)
        atexit.register(_drop_scratch)
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    return dict(_SCRATCH)


def admin_sql(base_url: str, *statements: str) -> None:
    import psycopg2

    conn = psycopg2.connect(base_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)
    finally:
        conn.close()


def _drop_scratch() -> None:
    import shutil

    try:
        from django.db import connections

        connections.close_all()
    except Exception:  # noqa: BLE001 - best effort at exit
        pass
    name = _SCRATCH["database"]
    admin_sql(
        _SCRATCH["base_url"],
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()",
        f'DROP DATABASE IF EXISTS "{name}"',
    )
    try:
        import redis

        client = redis.Redis.from_url(_SCRATCH["redis_url"])
        for key in client.scan_iter(f"{_SCRATCH['prefix']}*"):
            client.delete(key)
    except Exception:  # noqa: BLE001 - a stopped Redis leaves nothing to clean
        pass
    shutil.rmtree(_SCRATCH["media"], ignore_errors=True)
