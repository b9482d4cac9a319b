"""The Celery app: ``celery -A workers.celery_app worker -Q gpu`` (or ``-Q cpu,default``).

- Puts ``platform/`` on sys.path and sets up Django, so tasks can call platform services.
- Queues: ``gpu`` (training, scoring), ``cpu`` (imports, exports), ``default`` (short bookkeeping,
  Label Studio sync). Routing and the beat schedule are the tables of ``workers.routing``; work is sent by
  task name through ``workers.enqueue``.
- At-least-once delivery: ``acks_late`` + ``reject_on_worker_lost`` and prefetch 1, so a killed worker's
  task is redelivered; every task is idempotent. Tasks retry transient errors with exponential backoff.
- Broker restarts: connection retried forever, ``visibility_timeout`` from ``CELERY_VISIBILITY_TIMEOUT``
  (default 12 h, longer than any task); see deploy/docs/reliability.md.
- Task modules: every module in ``workers/tasks/`` is included automatically, so a new file there is
  registered without touching this one.
"""

from __future__ import annotations

import os
import pkgutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT / "platform"), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "forgery_site.settings")

import django  # noqa: E402
from celery import Celery, Task  # noqa: E402
from django.apps import apps as django_apps  # noqa: E402

if not django_apps.ready and not django_apps.loading:
    django.setup()

from django.conf import settings  # noqa: E402
from django.db import InterfaceError, OperationalError  # noqa: E402

from workers import routing  # noqa: E402

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
TASK_MODULES = sorted(
    f"workers.tasks.{m.name}" for m in pkgutil.iter_modules([str(TASKS_DIR)]) if not m.name.startswith("_")
)


class PlatformTask(Task):
    """Retries transient infrastructure errors (database or broker hiccups) with exponential backoff."""

    autoretry_for = (OperationalError, InterfaceError, ConnectionError, TimeoutError)
    retry_backoff = 2
    retry_backoff_max = 300
    retry_jitter = True
    max_retries = 5
    acks_late = True


app = Celery("forgerylab", task_cls=PlatformTask, include=TASK_MODULES)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_default_queue=routing.DEFAULT,
    task_routes=(routing.route,),
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_track_started=True,
    result_expires=24 * 3600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # Broker outages (a Redis restart): workers keep retrying the connection instead of exiting, and a
    # task running when the connection drops finishes (its late ack, or the redelivery, follows).
    broker_connection_retry=True,
    broker_connection_max_retries=None,
    worker_cancel_long_running_tasks_on_connection_loss=False,
)
# Redis hands an unacknowledged task (its worker died) out again after the visibility timeout. It must be
# longer than the longest task (a training phase), or a task still running is delivered a second time;
# CELERY_VISIBILITY_TIMEOUT (seconds, default 12 h). A killed worker's round is resumed much sooner by the
# rounds watchdog (rounds.recovery, ROUNDS_STALL_S). Options set in the settings win over this one.
VISIBILITY_TIMEOUT_S = float(settings.CELERY_VISIBILITY_TIMEOUT)
app.conf.broker_transport_options = {
    "visibility_timeout": VISIBILITY_TIMEOUT_S,
    **(app.conf.broker_transport_options or {}),
}
# The periodic tasks (the one table: workers.routing.beat_schedule), read by the one beat process.
app.conf.beat_schedule = routing.beat_schedule(
    watchdog_interval_s=float(settings.ROUNDS_WATCHDOG_INTERVAL_S),
    reconcile_interval_s=float(settings.LABELING_RECONCILE_SECONDS),
)

# Presence records (heartbeat + running tasks) for the operations view; see workers/presence.py.
from workers import presence  # noqa: E402, F401
