"""Scratch platform state for a benchmark: never the user's data.

A private PostgreSQL database ``bench_[<tag>_]<pid>`` on the server of DATABASE_URL (created, migrated,
dropped), Redis database 14 of REDIS_URL's server under the key prefix ``bench-[<tag>-]<pid>:`` (its keys
deleted afterwards) and a temporary MEDIA_ROOT; Django set up on them, child processes (gunicorn, workers)
inherit them through the environment. ``tests/integration/test_bench_scratch.py`` checks that a benchmark
leaves no ``bench_*`` database behind.

- ``scratch_platform(tag)``: a context manager; the Celery app of this process is pointed at the scratch
  broker too (``ScratchPlatform.app``).
- ``process_scratch()``: the same state for the rest of the process, dropped at exit
  (``bench.common.django_setup``, the default for a benchmark).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness.brokers import DEFAULT_REDIS_URL, delete_keys, redis_db_url
from bench.harness.databases import base_url, create_database, drop_database

ROOT = Path(__file__).resolve().parents[2]
SCRATCH_REDIS_DB = 14
SETTINGS_MODULE = "forgery_site.settings"


@dataclass
class ScratchPlatform:
    database: str
    database_url: str
    base_url: str  # DATABASE_URL before: the server the scratch database lives on
    redis_url: str
    prefix: str
    root: Path  # temporary folder: media/ and the benchmark's process logs
    media: Path
    logs: Path
    app: object | None = field(default=None)  # the Celery app, on the scratch broker (scratch_platform)

    def environ(self) -> dict[str, str]:
        return {"DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url,
                "CELERY_KEY_PREFIX": self.prefix, "MEDIA_ROOT": str(self.media)}  # fmt: skip

    def describe(self) -> dict:
        return {"database": self.database, "database_url": self.database_url, "base_url": self.base_url,
                "redis_url": self.redis_url, "prefix": self.prefix, "media": str(self.media)}  # fmt: skip


def django_configure(*, migrate: bool = True, settings_module: str | None = None) -> None:
    """Django for a benchmark process: ``platform/`` and the repository on sys.path, settings from the
    environment (``settings_module`` forced, else DJANGO_SETTINGS_MODULE or the platform's), migrations."""
    for path in (str(ROOT / "platform"), str(ROOT)):
        if path not in sys.path:
            sys.path.insert(0, path)
    if settings_module:
        os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


def scratch_open(tag: str | None = None) -> ScratchPlatform:
    """Create the scratch state (database, temporary folder); nothing is configured yet."""
    server = base_url()
    pid = os.getpid()
    name = f"bench_{tag.replace('-', '_')}_{pid}" if tag else f"bench_{pid}"
    redis_url = redis_db_url(os.environ.get("REDIS_URL", DEFAULT_REDIS_URL), SCRATCH_REDIS_DB)
    database_url = create_database(server, name, replace=True)
    root = Path(tempfile.mkdtemp(prefix=f"bench-{tag or 'scratch'}-"))
    (root / "media").mkdir()
    return ScratchPlatform(database=name, database_url=database_url, base_url=server, redis_url=redis_url,
                           prefix=f"bench-{tag}-{pid}:" if tag else f"bench-{pid}:", root=root,
                           media=root / "media", logs=root)  # fmt: skip


def scratch_environ(scratch: ScratchPlatform, **extra: str) -> None:
    """Point this process's environment (and so its children's) at the scratch state; the broker and
    results follow REDIS_URL."""
    os.environ.update({**scratch.environ(), **extra})
    os.environ.pop("CELERY_BROKER_URL", None)
    os.environ.pop("CELERY_RESULT_BACKEND", None)


def scratch_close(scratch: ScratchPlatform) -> None:
    """Drop the database (its sessions terminated), delete the Redis keys, remove the folder."""
    with contextlib.suppress(Exception):  # Django may never have been set up
        from django.db import connections

        connections.close_all()
    try:
        drop_database(scratch.base_url, scratch.database)
    finally:
        with contextlib.suppress(Exception):  # a stopped Redis leaves nothing to clean
            delete_keys(scratch.redis_url, scratch.prefix)
        shutil.rmtree(scratch.root, ignore_errors=True)


@contextlib.contextmanager
def scratch_platform(tag: str):
    """Scratch state named after ``tag`` with Django migrated on it and this process's Celery app
    pointed at its broker; yields the ``ScratchPlatform``; everything is dropped afterwards."""
    scratch = scratch_open(tag)
    try:
        scratch_environ(scratch, HF_HUB_OFFLINE="1")
        django_configure(settings_module=SETTINGS_MODULE)
        from workers.celery_app import app

        app.conf.update(
            broker_url=scratch.redis_url,
            result_backend=scratch.redis_url,
            broker_transport_options={"global_keyprefix": scratch.prefix},
        )
        scratch.app = app
        yield scratch
    finally:
        scratch_close(scratch)


_PROCESS: list[ScratchPlatform] = []


def process_scratch() -> ScratchPlatform:
    """This process's scratch state (``bench_<pid>``, prefix ``bench-<pid>:``), created and put in the
    environment on the first call, dropped when the process exits."""
    if not _PROCESS:
        scratch = scratch_open()
        scratch_environ(scratch)
        _PROCESS.append(scratch)
        atexit.register(scratch_close, scratch)
    return _PROCESS[0]
