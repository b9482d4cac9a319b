"""Operations view: which Celery workers are online, what they run, and how deep every queue is.

Two reads, with different costs:

* ``workers_snapshot()`` asks the workers themselves through Celery's remote-control API
  (``forgery_site.operations_workers``: ``stats`` (which doubles as the ping), then ``active``,
  ``active_queues`` and ``reserved``). A broadcast waits up to Django setting
  ``OPERATIONS_INSPECT_TIMEOUT_S`` (default 1 s) for replies, or until as many workers have answered as
  have a live presence record (then it takes milliseconds), so the result is cached in the Django cache
  (Redis, shared by every web process) for ``OPERATIONS_CACHE_S`` (default 3 s): a dashboard polling
  every few seconds, or ten admins polling at once, cost one broadcast per period. A short lock keeps
  concurrent cache misses from broadcasting together; a caller that does not get the lock waits for the
  holder's result, or is served the previous snapshot (marked ``stale``). Each live round is listed with
  its phase, whether a worker holds its phase lock (``rounds.recovery.round_lock``: a PostgreSQL
  advisory lock, so this is known even when the worker cannot answer), and which worker runs one of its
  tasks when the inspect replies show it.

* ``queue_depths()`` (``forgery_site.operations_queues``) reads the broker's Redis directly (``LLEN``),
  every call, nothing cached; ``queues_overview()`` adds the workers consuming each queue.

A solo-pool worker (the GPU workers run ``--pool=solo``) cannot answer ``inspect`` while it runs a task.
Every worker therefore also keeps a presence record in the broker's Redis (``workers.presence``: a
heartbeat every few seconds and the tasks it runs); a worker with a live record that did not answer is
listed from that record with ``status: "busy"`` (no processed counts), answering workers are
``"online"``.

Failure modes: the broker unreachable raises ``BrokerUnavailable`` (the API answers 503 with
``Retry-After``); no worker answering is an empty list, not an error.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache

from forgery_site.operations_queues import (
    broker_client,
    broker_url,
    celery_app,
    key_prefix,
    now_iso,
    queue_depths,
)
from forgery_site.operations_workers import busy_worker_row, inspect_workers, presence_records, worker_row

logger = logging.getLogger(__name__)


# The view's settings (OPERATIONS_*, defaults in forgery_site.config).
def inspect_timeout_s() -> float:
    return max(0.1, float(settings.OPERATIONS_INSPECT_TIMEOUT_S))


def cache_seconds() -> float:
    return max(0.0, float(settings.OPERATIONS_CACHE_S))


def retry_after_s() -> int:
    return int(settings.OPERATIONS_RETRY_AFTER_S)


def _cache_key(app, what: str) -> str:
    digest = hashlib.sha256(f"{broker_url(app)}|{key_prefix(app)}".encode()).hexdigest()[:16]
    return f"operations:{what}:{digest}"


def _live_rounds(workers: list[dict]) -> list[dict]:
    from django.db import connection

    from rounds.models import Round
    from rounds.recovery import LOCK_NAMESPACE
    from rounds.workflow import LIVE_STATES

    rounds = list(Round.objects.filter(state__in=LIVE_STATES).select_related("dataset").order_by("id")[:200])
    if not rounds:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = %s::oid AND objsubid = 2"
            # advisory locks are per database, pg_locks lists the whole server's
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            [LOCK_NAMESPACE],
        )
        locked = {int(row[0]) for row in cursor.fetchall()}
    holders: dict[int, list[dict]] = {}
    for worker in workers:
        for task in worker["active"]:
            if task["round_id"] is not None:
                holders.setdefault(task["round_id"], []).append(
                    {"hostname": worker["hostname"], "task": task["name"], "task_id": task["id"]}
                )
    return [
        {
            "id": r.pk,
            "dataset": r.dataset.name,
            "number": r.number,
            "state": r.state,
            "phase": str((r.progress or {}).get("phase") or r.state),
            "updated_at": r.updated_at.isoformat(),
            "lock_held": r.pk in locked,
            "workers": holders.get(r.pk, []),
        }
        for r in rounds
    ]


def _collect(app) -> dict:
    client = broker_client(app)  # 503 at once when the broker is down (inspect would wait for its retries)
    timeout = inspect_timeout_s()
    started = time.monotonic()
    try:
        presence = presence_records(client, app)
    except Exception as exc:  # presence is a supplement; inspect's answer stands
        logger.warning("worker presence records unreadable: %s: %s", exc.__class__.__name__, exc)
        presence = {}
    replies = inspect_workers(app, timeout, expected=len(presence) or None)
    now = time.time()
    workers = [
        worker_row(host, r["stats"], r["active"], r["queues"], r["reserved"], now)
        for host, r in sorted(replies.items())
    ]
    workers += [
        busy_worker_row(host, record, now) for host, record in sorted(presence.items()) if host not in replies
    ]
    return {
        "fetched_at": now,
        "inspect_s": round(time.monotonic() - started, 3),
        "inspect_timeout_s": timeout,
        "workers": workers,
    }


def _cached_workers(app, *, fresh: bool = False) -> tuple[dict, bool]:
    """(snapshot, stale): the inspect replies, asked at most once per OPERATIONS_CACHE_S across processes."""
    key = _cache_key(app, "workers")
    ttl = cache_seconds()
    snapshot = None if fresh else cache.get(key)
    stale = False
    if snapshot is None or time.time() - snapshot["fetched_at"] > ttl:
        previous = snapshot
        lock_key = key + ":lock"
        if cache.add(lock_key, "1", timeout=int(inspect_timeout_s() * 5 + 5)):
            try:
                snapshot = _collect(app)
                cache.set(key, snapshot, timeout=max(60, int(ttl * 10)))
            finally:
                cache.delete(lock_key)
        else:  # another request is asking the workers right now: wait for its answer
            deadline = time.monotonic() + inspect_timeout_s() * 5 + 2
            while time.monotonic() < deadline:
                time.sleep(0.1)
                snapshot = cache.get(key)
                if (
                    snapshot is not None
                    and snapshot is not previous
                    and (previous is None or snapshot["fetched_at"] > previous["fetched_at"])
                ):
                    break
            else:
                if previous is None:
                    snapshot = _collect(app)
                else:
                    snapshot, stale = previous, True
            broker_client(app)  # served from the cache: still say so when the broker is down now
    return snapshot, stale


def workers_snapshot(*, app=None, fresh: bool = False) -> dict[str, Any]:
    """Workers (cached for OPERATIONS_CACHE_S) plus live rounds (read now). Raises BrokerUnavailable."""
    app = app or celery_app()
    snapshot, stale = _cached_workers(app, fresh=fresh)
    age = max(0.0, time.time() - snapshot["fetched_at"])
    return {
        "fetched_at": now_iso(snapshot["fetched_at"]),
        "age_s": round(age, 2),
        "stale": stale,
        "inspect_s": snapshot["inspect_s"],
        "inspect_timeout_s": snapshot["inspect_timeout_s"],
        "workers": snapshot["workers"],
        "rounds": _live_rounds(snapshot["workers"]),
    }


def consumers_by_queue(workers: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for worker in workers:
        for queue in worker["queues"]:
            out.setdefault(queue, []).append(worker["hostname"])
    return out


def queues_overview(*, app=None) -> dict[str, Any]:
    """Queue depths (read now) with the workers consuming each (from the cached workers snapshot)."""
    app = app or celery_app()
    snapshot, _stale = _cached_workers(app)
    overview = queue_depths(app=app, consumers=consumers_by_queue(snapshot["workers"]))
    overview["workers_fetched_at"] = now_iso(snapshot["fetched_at"])
    return overview


__all__ = [
    "consumers_by_queue",
    "queues_overview",
    "workers_snapshot",
]
