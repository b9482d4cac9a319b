"""Operations view: which Celery workers are online, what they run, and how deep every queue is.

Two reads, with different costs:

* ``workers_snapshot()`` asks the workers themselves through Celery's remote-control API
  (``app.control.inspect``: ``stats`` (which doubles as the ping), then ``active``, ``active_queues`` and
  ``reserved``). A broadcast waits up to Django setting ``OPERATIONS_INSPECT_TIMEOUT_S`` (default 1 s) for replies, or
  until as many workers have answered as have a live presence record (then it takes milliseconds), so
  the result is cached in the Django cache (Redis, shared by every web process) for
  ``OPERATIONS_CACHE_S`` (default 3 s): a dashboard polling every few seconds, or ten admins polling at
  once, cost one broadcast per period. A short lock keeps concurrent cache misses from broadcasting
  together; a caller that does not get the lock waits for the holder's result, or is served the previous
  snapshot (marked ``stale``). Each live round is listed with its phase, whether a worker holds its phase
  lock (``rounds.recovery.round_lock``: a PostgreSQL advisory lock, so this is known even when the worker
  cannot answer), and which worker runs one of its tasks when the inspect replies show it.

* ``queue_depths()`` reads the broker's Redis directly (``LLEN``), every call, nothing cached. kombu's
  Redis transport keeps one list per priority step for each queue: ``name`` for priority 0 and
  ``name`` + ``sep`` + ``step`` (``sep`` is ``"\\x06\\x16"``, steps ``[0, 3, 6, 9]`` unless the transport
  options say otherwise), all under the ``global_keyprefix`` transport option (``CELERY_KEY_PREFIX``);
  a queue's depth is the sum. Messages handed to a worker and not yet acknowledged leave the list for
  kombu's ``unacked`` hash: they are counted per queue (``unacked``) from the routing key stored with
  each entry. Queues are the platform's own (``gpu``, ``cpu``, ``default``), every queue some worker
  consumes, and every queue declared on the broker (kombu's ``_kombu.binding.*`` sets), so a queue that
  fills while no worker consumes it shows up with ``consumers: []``.

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
import json
import logging
import re
import time
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from rest_framework import status

from forgery_site.errors import DomainError

logger = logging.getLogger(__name__)

PLATFORM_QUEUES = ("gpu", "cpu", "default")
KOMBU_PRIORITY_STEPS = [0, 3, 6, 9]  # kombu.transport.redis.PRIORITY_STEPS
KOMBU_SEP = "\x06\x16"  # kombu.transport.redis.Channel.sep
KOMBU_BINDING_PREFIX = "_kombu.binding."
# Celery's own broadcast/reply/event plumbing: declared on the broker, never a work queue.
INTERNAL_EXCHANGES = ("celery.pidbox", "reply.celery.pidbox", "celeryev")
INTERNAL_QUEUE_SUFFIXES = (".celery.pidbox", ".reply.celery.pidbox")
MAX_DECLARED_QUEUES = 200
MAX_UNACKED_SCANNED = 5000
ARGS_SUMMARY_CHARS = 160
ROUND_TASK_PREFIXES = ("workers.tasks.rounds.", "workers.tasks.scoring.")
ROUND_TASKS = ("workers.tasks.labeling.round_push_tasks_task",)


class BrokerUnavailable(DomainError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "broker_unavailable"


# Django settings that tune the view (defaults here; none of them is needed).
DEFAULT_INSPECT_TIMEOUT_S = 1.0
DEFAULT_CACHE_S = 3.0
DEFAULT_RETRY_AFTER_S = 5


def inspect_timeout_s() -> float:
    return max(0.1, float(getattr(settings, "OPERATIONS_INSPECT_TIMEOUT_S", DEFAULT_INSPECT_TIMEOUT_S)))


def cache_seconds() -> float:
    return max(0.0, float(getattr(settings, "OPERATIONS_CACHE_S", DEFAULT_CACHE_S)))


def retry_after_s() -> int:
    return int(getattr(settings, "OPERATIONS_RETRY_AFTER_S", DEFAULT_RETRY_AFTER_S))


def celery_app():
    from workers.celery_app import app

    return app


# ------------------------------------------------------------------------------------------- broker
def _transport_options(app) -> dict:
    return dict(app.conf.broker_transport_options or {})


def key_prefix(app) -> str:
    return str(_transport_options(app).get("global_keyprefix") or "")


def queue_list_keys(queue: str, app) -> list[str]:
    """The Redis lists that hold ``queue``'s messages, one per priority step, with the key prefix."""
    options = _transport_options(app)
    steps = sorted(set(options.get("priority_steps") or KOMBU_PRIORITY_STEPS))
    sep = options.get("sep") or KOMBU_SEP
    prefix = key_prefix(app)
    return [prefix + (f"{queue}{sep}{step}" if step else queue) for step in steps]


def _broker_url(app) -> str:
    url = app.conf.broker_url or ""
    return url.split(";")[0].strip()


def _cache_key(app, what: str) -> str:
    digest = hashlib.sha256(f"{_broker_url(app)}|{key_prefix(app)}".encode()).hexdigest()[:16]
    return f"operations:{what}:{digest}"


def _redacted_url(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


def broker_client(app):
    """A plain Redis client on the broker (short timeouts); BrokerUnavailable when it cannot answer."""
    import redis

    url = _broker_url(app)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise BrokerUnavailable(
            f"the operations view reads queue depths from a Redis broker; the broker URL "
            f"{_redacted_url(url) or '(empty)'} is not a redis:// URL"
        )
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BrokerUnavailable(
            f"the Celery broker ({_redacted_url(url)}) cannot be reached: {exc.__class__.__name__}: {exc}; "
            "workers and queues cannot be shown until it is back"
        ) from None
    return client


def _declared_queues(client, prefix: str) -> set[str]:
    """Work queues declared on the broker: the queue names in kombu's ``_kombu.binding.<exchange>`` sets."""
    queues: set[str] = set()
    pattern = _glob_escape(prefix) + _glob_escape(KOMBU_BINDING_PREFIX) + "*"
    for key in client.scan_iter(match=pattern, count=500):
        exchange = key.decode(errors="replace")[len(prefix) + len(KOMBU_BINDING_PREFIX) :]
        if exchange in INTERNAL_EXCHANGES:
            continue
        for member in client.smembers(key):
            queue = member.decode(errors="replace").split(KOMBU_SEP)[-1]
            if queue and not queue.endswith(INTERNAL_QUEUE_SUFFIXES) and not queue.startswith("celeryev."):
                queues.add(queue)
        if len(queues) >= MAX_DECLARED_QUEUES:
            break
    return queues


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _unacked_by_queue(client, app) -> tuple[int, dict[str, int]]:
    """(total, per routing key) of the messages delivered to workers and not acknowledged yet."""
    key = key_prefix(app) + str(_transport_options(app).get("unacked_key") or "unacked")
    total = int(client.hlen(key))
    per_queue: dict[str, int] = {}
    for scanned, (_tag, raw) in enumerate(client.hscan_iter(key, count=500)):
        if scanned >= MAX_UNACKED_SCANNED:
            break
        try:
            _message, _exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        per_queue[str(routing_key)] = per_queue.get(str(routing_key), 0) + 1
    return total, per_queue


def queue_depths(*, app=None, consumers: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Depth of every queue, read from Redis now. ``consumers``: queue -> hostnames (from the workers)."""
    app = app or celery_app()
    client = broker_client(app)
    prefix = key_prefix(app)
    consumers = consumers or {}
    try:
        names = set(PLATFORM_QUEUES) | set(consumers) | _declared_queues(client, prefix)
        ordered = sorted(names, key=lambda n: (n not in PLATFORM_QUEUES, n))
        pipe = client.pipeline(transaction=False)
        keys = {name: queue_list_keys(name, app) for name in ordered}
        for name in ordered:
            for key in keys[name]:
                pipe.llen(key)
        lengths = iter(pipe.execute())
        unacked_total, unacked = _unacked_by_queue(client, app)
    except Exception as exc:  # noqa: BLE001 - a Redis failure mid-read is the broker being unavailable
        import redis

        if isinstance(exc, redis.RedisError):
            raise BrokerUnavailable(
                f"the Celery broker stopped answering: {exc.__class__.__name__}: {exc}"
            ) from None
        raise
    queues = []
    for name in ordered:
        steps = _transport_options(app).get("priority_steps") or KOMBU_PRIORITY_STEPS
        per_step = {str(step): int(next(lengths)) for step in sorted(set(steps))}
        queues.append(
            {
                "name": name,
                "depth": sum(per_step.values()),
                "by_priority": {k: v for k, v in per_step.items() if v},
                "unacked": unacked.get(name, 0),
                "consumers": sorted(consumers.get(name, [])),
                "platform": name in PLATFORM_QUEUES,
            }
        )
    return {
        "read_at": _now_iso(),
        "key_prefix": prefix,
        "queues": queues,
        "unacked_total": unacked_total,
    }


# ------------------------------------------------------------------------------------------ workers
def _now_iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC).isoformat()


def args_summary(args: Any, kwargs: Any) -> str:
    parts = []
    if isinstance(args, list | tuple):
        parts += [_short(a) for a in args]
    elif args not in (None, "", "()", "[]"):
        parts.append(str(args))
    if isinstance(kwargs, dict):
        parts += [f"{k}={_short(v)}" for k, v in kwargs.items()]
    elif kwargs not in (None, "", "{}"):
        parts.append(str(kwargs))
    text = ", ".join(parts)
    return text if len(text) <= ARGS_SUMMARY_CHARS else text[: ARGS_SUMMARY_CHARS - 1] + "…"


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def round_of(task: dict) -> int | None:
    """The round a running task works on, from its name and arguments (None: not a round task)."""
    name = str(task.get("name") or "")
    kwargs = task.get("kwargs") if isinstance(task.get("kwargs"), dict) else {}
    if isinstance(kwargs.get("round_id"), int) and not isinstance(kwargs["round_id"], bool):
        return kwargs["round_id"]  # any task called with round_id=...
    if not (name.startswith(ROUND_TASK_PREFIXES) or name in ROUND_TASKS):
        return None
    args = task.get("args") if isinstance(task.get("args"), list | tuple) else []
    if name.endswith(".select_round"):  # (shard results, round id): a chord callback
        args = args[1:]
    return args[0] if args and isinstance(args[0], int) and not isinstance(args[0], bool) else None


def _task_row(task: dict, now: float) -> dict:
    started = task.get("time_start")
    runtime = max(0.0, now - float(started)) if isinstance(started, int | float) else None
    delivery = task.get("delivery_info") or {}
    return {
        "id": str(task.get("id") or ""),
        "name": str(task.get("name") or ""),
        "args": task["args"]
        if task.get("summarised")
        else args_summary(task.get("args"), task.get("kwargs")),
        "started_at": _now_iso(started) if runtime is not None else None,
        "runtime_s": round(runtime, 1) if runtime is not None else None,
        "queue": delivery.get("routing_key") or task.get("queue") or "",
        "worker_pid": task.get("worker_pid"),
        "round_id": task["round_id"] if task.get("summarised") else round_of(task),
    }


def _worker_row(hostname: str, stats: dict, active: list, queues: list, reserved: list, now: float) -> dict:
    pool = stats.get("pool") or {}
    implementation = str(pool.get("implementation") or "")
    uptime = stats.get("uptime")
    totals = {str(k): int(v) for k, v in (stats.get("total") or {}).items()}
    rusage = stats.get("rusage") or {}
    return {
        "hostname": hostname,
        "status": "online",
        "pid": stats.get("pid"),
        "pool": implementation.rsplit(".", 1)[-1].split(":")[0] if implementation else "",
        "concurrency": pool.get("max-concurrency"),
        "processes": list(pool.get("processes") or []),
        "prefetch_count": stats.get("prefetch_count"),
        "uptime_s": uptime,
        "started_at": _now_iso(now - uptime) if isinstance(uptime, int | float) else None,
        "queues": sorted(str(q.get("name")) for q in queues or [] if isinstance(q, dict) and q.get("name")),
        "processed_total": sum(totals.values()),
        "processed": dict(sorted(totals.items(), key=lambda kv: -kv[1])),
        "active": [_task_row(t, now) for t in active or [] if isinstance(t, dict)],
        "reserved": len(reserved or []),
        "max_rss_kb": rusage.get("maxrss"),
        "heartbeat_age_s": None,
    }


_CONTROL_APPS: dict[tuple, object] = {}


def _control_app(app):
    """A private Celery app on the same broker (URL, key prefix, control exchange) for the broadcasts.

    ``app.control`` would create the platform app's producer and connection pools the first time it is
    used, bound to the broker URL of that moment; a process that later points the app elsewhere (the
    test suite's worker fixture does) would keep publishing to the old broker. The private app keeps the
    operations view from changing the state of the app that sends the platform's tasks.
    """
    from celery import Celery

    options = _transport_options(app)
    key = (_broker_url(app), json.dumps(options, sort_keys=True, default=str), app.conf.control_exchange)
    control = _CONTROL_APPS.get(key)
    if control is None:
        control = Celery("forgerylab-operations", set_as_current=False)
        control.conf.update(
            broker_url=app.conf.broker_url,
            broker_transport_options=options,
            control_exchange=app.conf.control_exchange,
            accept_content=app.conf.accept_content,
            broker_connection_retry_on_startup=False,
        )
        _CONTROL_APPS[key] = control
    return control


def _inspect(app, timeout: float, expected: int | None = None) -> dict[str, dict]:
    """Ask every worker: stats (the ping), then active/active_queues/reserved from those that answered.

    ``expected``: how many workers are alive by their presence records; the stats broadcast stops
    waiting once that many have answered (otherwise it waits the whole timeout, as it must when one is
    busy or when nothing says how many there are).
    """
    from kombu.exceptions import OperationalError as KombuOperationalError

    app = _control_app(app)
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=2)
            stats = app.control.inspect(timeout=timeout, connection=connection, limit=expected).stats() or {}
            if not stats:
                return {}
            # Every worker that answered stats answers the rest too: stop waiting once all have.
            follow = app.control.inspect(timeout=timeout, connection=connection, limit=len(stats))
            active = follow.active() or {}
            follow = app.control.inspect(timeout=timeout, connection=connection, limit=len(stats))
            queues = follow.active_queues() or {}
            follow = app.control.inspect(timeout=timeout, connection=connection, limit=len(stats))
            reserved = follow.reserved() or {}
    except (KombuOperationalError, ConnectionError, OSError, TimeoutError) as exc:
        raise BrokerUnavailable(
            f"the Celery broker cannot be reached to ask the workers: {exc.__class__.__name__}: {exc}"
        ) from None
    return {
        host: {
            "stats": stats[host] if isinstance(stats.get(host), dict) else {},
            "active": active.get(host) or [],
            "queues": queues.get(host) or [],
            "reserved": reserved.get(host) or [],
        }
        for host in stats
    }


def _presence(client, app) -> dict[str, dict]:
    """Workers' own records (``workers.presence``): hostname -> {"info": {...}, "tasks": [...]}."""
    from workers.presence import PRESENCE_PREFIX

    base = key_prefix(app) + PRESENCE_PREFIX
    out: dict[str, dict] = {}
    for raw_key in client.scan_iter(match=_glob_escape(base) + "*", count=500):
        key = raw_key.decode(errors="replace")
        if key.endswith(":tasks"):
            continue
        try:
            info = json.loads(client.hget(key, "info") or b"null")
            tasks = [json.loads(v) for v in client.hvals(key + ":tasks")]
        except (ValueError, TypeError):
            continue
        if isinstance(info, dict):
            out[key[len(base) :]] = {"info": info, "tasks": [t for t in tasks if isinstance(t, dict)]}
        if len(out) >= MAX_DECLARED_QUEUES:
            break
    return out


def _busy_worker_row(hostname: str, record: dict, now: float) -> dict:
    """A worker that did not answer ``inspect`` but keeps its heartbeat: busy (a solo pool running a task)."""
    info = record["info"]
    started = info.get("started_at")
    uptime = int(now - started) if isinstance(started, int | float) else None
    tasks = [{**t, "summarised": True} for t in record["tasks"]]
    return {
        "hostname": hostname,
        "status": "busy",
        "pid": info.get("pid"),
        "pool": str(info.get("pool") or ""),
        "concurrency": info.get("concurrency"),
        "processes": [],
        "prefetch_count": None,
        "uptime_s": uptime,
        "started_at": _now_iso(started) if uptime is not None else None,
        "queues": sorted(str(q) for q in info.get("queues") or []),
        "processed_total": None,
        "processed": {},
        "active": sorted((_task_row(t, now) for t in tasks), key=lambda t: t["started_at"] or ""),
        "reserved": None,
        "max_rss_kb": None,
        "heartbeat_age_s": round(max(0.0, now - float(info.get("heartbeat_at") or now)), 1),
    }


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
        presence = _presence(client, app)
    except Exception as exc:  # noqa: BLE001 - presence is a supplement; inspect's answer stands
        logger.warning("worker presence records unreadable: %s: %s", exc.__class__.__name__, exc)
        presence = {}
    replies = _inspect(app, timeout, expected=len(presence) or None)
    now = time.time()
    workers = [
        _worker_row(host, r["stats"], r["active"], r["queues"], r["reserved"], now)
        for host, r in sorted(replies.items())
    ]
    workers += [
        _busy_worker_row(host, record, now)
        for host, record in sorted(presence.items())
        if host not in replies
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
        "fetched_at": _now_iso(snapshot["fetched_at"]),
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
    overview["workers_fetched_at"] = _now_iso(snapshot["fetched_at"])
    return overview


__all__ = [
    "BrokerUnavailable",
    "consumers_by_queue",
    "queue_depths",
    "queue_list_keys",
    "queues_overview",
    "workers_snapshot",
]
