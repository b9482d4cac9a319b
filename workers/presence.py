"""Worker presence: each worker keeps a small record of itself and of the tasks it runs in the broker's Redis.

Celery's remote control (``inspect``) only reaches a worker whose consumer loop is free to answer. A
``--pool=solo`` worker (the GPU workers) runs its task inside that loop, so while it trains for an hour it
answers nothing and would vanish from the operations view exactly when it matters. So every worker also
writes, under the broker's key prefix:

- ``forgerylab:presence:<hostname>`` (a hash): ``info``, JSON with pid, pool, concurrency, queues,
  start and last heartbeat times; refreshed by a daemon thread every ``WORKER_PRESENCE_INTERVAL_S``
  (a Django setting, default 10 s) with an expiry of three intervals, so a worker killed with SIGKILL drops out by itself;
- ``forgerylab:presence:<hostname>:tasks`` (a hash): task id -> JSON (name, shortened arguments, start
  time, queue, round id), set when a task starts and removed when it ends (``task_prerun`` /
  ``task_postrun`` signals; for prefork pools they fire in the child process).

The heartbeat thread keeps running during a solo-pool task (the GIL is released by sleeps, I/O and
PyTorch's kernels; pure-Python work still yields every few milliseconds). ``forgery_site.operations``
shows a worker from this record, marked ``busy``, when it does not answer ``inspect``. Every write is
best effort: a Redis error is logged once and never fails a task or the worker.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

from celery import signals

from workers.routing import PRESENCE_PREFIX

logger = logging.getLogger(__name__)

_state: dict = {"client": None, "pid": None, "hostname": None, "stop": None, "warned": False}


def interval_s() -> float:
    from django.conf import settings

    return max(1.0, float(settings.WORKER_PRESENCE_INTERVAL_S))


def ttl_s() -> int:
    return int(interval_s() * 3 + 5)


def presence_key(prefix: str, hostname: str) -> str:
    return f"{prefix}{PRESENCE_PREFIX}{hostname}"


def _app():
    from workers.celery_app import app

    return app


def _prefix(app) -> str:
    return str((app.conf.broker_transport_options or {}).get("global_keyprefix") or "")


def _client():
    """One Redis client per process (a forked pool child makes its own)."""
    if _state["client"] is None or _state["pid"] != os.getpid():
        import redis

        url = (_app().conf.broker_url or "").split(";")[0]
        if not url.startswith(("redis://", "rediss://", "unix://")):
            return None
        _state["client"] = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=3)
        _state["pid"] = os.getpid()
    return _state["client"]


def _best_effort(what: str, fn) -> None:
    try:
        fn()
    except Exception as exc:  # presence must never break a worker or a task
        if not _state["warned"]:
            logger.warning("worker presence: could not %s (%s: %s)", what, exc.__class__.__name__, exc)
            _state["warned"] = True


def _write_info(info: dict) -> None:
    client = _client()
    if client is None:
        return
    key = presence_key(_prefix(_app()), info["hostname"])
    info = {**info, "heartbeat_at": time.time()}
    pipe = client.pipeline(transaction=False)
    pipe.hset(key, "info", json.dumps(info))
    pipe.expire(key, ttl_s())
    pipe.expire(key + ":tasks", ttl_s())
    pipe.execute()


def _heartbeat(info: dict, stop: threading.Event) -> None:
    while not stop.wait(interval_s()):
        _best_effort("refresh the heartbeat", lambda: _write_info(info))


@signals.worker_ready.connect
def _on_worker_ready(sender=None, **_kwargs) -> None:
    consumer = sender
    pool = getattr(consumer, "pool", None)
    controller = getattr(consumer, "controller", None)
    queues = getattr(getattr(consumer, "task_consumer", None), "queues", None) or []
    info = {
        "hostname": consumer.hostname,
        "pid": os.getpid(),
        "pool": (type(pool).__module__.rsplit(".", 1)[-1] if pool is not None else ""),
        "concurrency": getattr(controller, "concurrency", None),
        "queues": sorted(q.name for q in queues),
        "started_at": time.time(),
    }
    _state["hostname"] = consumer.hostname
    _best_effort("register the worker", lambda: _write_info(info))
    stop = threading.Event()
    _state["stop"] = stop
    threading.Thread(target=_heartbeat, args=(info, stop), name="presence-heartbeat", daemon=True).start()


@signals.worker_shutting_down.connect
def _on_worker_shutting_down(**_kwargs) -> None:
    if _state["stop"] is not None:
        _state["stop"].set()
    hostname = _state["hostname"]
    if hostname:
        client = _client()
        key = presence_key(_prefix(_app()), hostname)
        _best_effort(
            "unregister the worker", lambda: client is not None and client.delete(key, key + ":tasks")
        )


@signals.task_prerun.connect
def _on_task_prerun(task_id=None, task=None, args=None, kwargs=None, **_kwargs) -> None:
    request = getattr(task, "request", None)
    hostname = getattr(request, "hostname", None)
    if not hostname or not task_id or getattr(request, "is_eager", False):
        return  # eager calls (task.apply) run in the caller's process, not on a worker

    def write():
        from forgery_site.operations_workers import args_summary, round_of

        client = _client()
        if client is None:
            return
        delivery = getattr(request, "delivery_info", None) or {}
        row = {
            "id": task_id,
            "name": task.name,
            "args": args_summary(list(args or ()), dict(kwargs or {})),
            "round_id": round_of({"name": task.name, "args": list(args or ()), "kwargs": dict(kwargs or {})}),
            "time_start": time.time(),
            "queue": delivery.get("routing_key") or "",
            "worker_pid": os.getpid(),
        }
        key = presence_key(_prefix(_app()), hostname) + ":tasks"
        pipe = client.pipeline(transaction=False)
        pipe.hset(key, task_id, json.dumps(row, default=str))
        pipe.expire(key, ttl_s())
        pipe.execute()

    _best_effort("record a started task", write)


@signals.task_postrun.connect
def _on_task_postrun(task_id=None, task=None, **_kwargs) -> None:
    hostname = getattr(getattr(task, "request", None), "hostname", None)
    if not hostname or not task_id:
        return
    client = _client()
    key = presence_key(_prefix(_app()), hostname) + ":tasks"
    _best_effort("clear a finished task", lambda: client is not None and client.hdel(key, task_id))
