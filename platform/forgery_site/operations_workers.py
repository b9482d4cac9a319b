"""Operations view, the workers' side: what Celery's remote control and the presence records say.

``inspect_workers`` asks the workers themselves through Celery's remote-control API
(``app.control.inspect``: ``stats`` (which doubles as the ping), then ``active``, ``active_queues`` and
``reserved``), on a private Celery app on the same broker (``_control_app``). A solo-pool worker (the
GPU workers run ``--pool=solo``) cannot answer ``inspect`` while it runs a task. Every worker therefore
also keeps a presence record in the broker's Redis (``workers.presence``: a heartbeat every few seconds
and the tasks it runs, read by ``presence_records``); a worker with a live record that did not answer is
listed from that record with ``status: "busy"`` (no processed counts, ``busy_worker_row``), answering
workers are ``"online"`` (``worker_row``). ``round_of`` tells which round a running task works on.
"""

from __future__ import annotations

import json
from typing import Any

from forgery_site.operations_queues import (
    MAX_DECLARED_QUEUES,
    BrokerUnavailable,
    broker_url,
    glob_escape,
    key_prefix,
    now_iso,
    transport_options,
)

ARGS_SUMMARY_CHARS = 160
ROUND_TASK_PREFIXES = ("workers.tasks.rounds.", "workers.tasks.scoring.")
ROUND_TASKS = ("workers.tasks.labeling.round_push_tasks_task",)


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
        "started_at": now_iso(started) if runtime is not None else None,
        "runtime_s": round(runtime, 1) if runtime is not None else None,
        "queue": delivery.get("routing_key") or task.get("queue") or "",
        "worker_pid": task.get("worker_pid"),
        "round_id": task["round_id"] if task.get("summarised") else round_of(task),
    }


def worker_row(hostname: str, stats: dict, active: list, queues: list, reserved: list, now: float) -> dict:
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
        "started_at": now_iso(now - uptime) if isinstance(uptime, int | float) else None,
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

    options = transport_options(app)
    key = (broker_url(app), json.dumps(options, sort_keys=True, default=str), app.conf.control_exchange)
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


def inspect_workers(app, timeout: float, expected: int | None = None) -> dict[str, dict]:
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


def presence_records(client, app) -> dict[str, dict]:
    """Workers' own records (``workers.presence``): hostname -> {"info": {...}, "tasks": [...]}."""
    from workers.routing import PRESENCE_PREFIX

    base = key_prefix(app) + PRESENCE_PREFIX
    out: dict[str, dict] = {}
    for raw_key in client.scan_iter(match=glob_escape(base) + "*", count=500):
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


def busy_worker_row(hostname: str, record: dict, now: float) -> dict:
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
        "started_at": now_iso(started) if uptime is not None else None,
        "queues": sorted(str(q) for q in info.get("queues") or []),
        "processed_total": None,
        "processed": {},
        "active": sorted((_task_row(t, now) for t in tasks), key=lambda t: t["started_at"] or ""),
        "reserved": None,
        "max_rss_kb": None,
        "heartbeat_age_s": round(max(0.0, now - float(info.get("heartbeat_at") or now)), 1),
    }
