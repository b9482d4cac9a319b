"""Operations view, the broker side: queue depths read from the broker's Redis (``queue_depths``).

``queue_depths()`` reads the broker's Redis directly (``LLEN``), every call, nothing cached. kombu's
Redis transport keeps one list per priority step for each queue: ``name`` for priority 0 and
``name`` + ``sep`` + ``step`` (``sep`` is ``"\\x06\\x16"``, steps ``[0, 3, 6, 9]`` unless the transport
options say otherwise), all under the ``global_keyprefix`` transport option (``CELERY_KEY_PREFIX``);
a queue's depth is the sum. Messages handed to a worker and not yet acknowledged leave the list for
kombu's ``unacked`` hash: they are counted per queue (``unacked``) from the routing key stored with
each entry. Queues are the platform's own (``gpu``, ``cpu``, ``default``), every queue some worker
consumes, and every queue declared on the broker (kombu's ``_kombu.binding.*`` sets), so a queue that
fills while no worker consumes it shows up with ``consumers: []``.

The broker unreachable raises ``BrokerUnavailable`` (the API answers 503 with ``Retry-After``). The
workers' side is ``forgery_site.operations_workers``, the view itself ``forgery_site.operations``.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from rest_framework import status

from forgery_site.errors import DomainError
from workers.enqueue import celery_app

PLATFORM_QUEUES = ("gpu", "cpu", "default")
KOMBU_PRIORITY_STEPS = [0, 3, 6, 9]  # kombu.transport.redis.PRIORITY_STEPS
KOMBU_SEP = "\x06\x16"  # kombu.transport.redis.Channel.sep
KOMBU_BINDING_PREFIX = "_kombu.binding."
# Celery's own broadcast/reply/event plumbing: declared on the broker, never a work queue.
INTERNAL_EXCHANGES = ("celery.pidbox", "reply.celery.pidbox", "celeryev")
INTERNAL_QUEUE_SUFFIXES = (".celery.pidbox", ".reply.celery.pidbox")
MAX_DECLARED_QUEUES = 200
MAX_UNACKED_SCANNED = 5000


class BrokerUnavailable(DomainError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "broker_unavailable"


# ------------------------------------------------------------------------------------------- broker
def transport_options(app) -> dict:
    return dict(app.conf.broker_transport_options or {})


def key_prefix(app) -> str:
    return str(transport_options(app).get("global_keyprefix") or "")


def queue_list_keys(queue: str, app) -> list[str]:
    """The Redis lists that hold ``queue``'s messages, one per priority step, with the key prefix."""
    options = transport_options(app)
    steps = sorted(set(options.get("priority_steps") or KOMBU_PRIORITY_STEPS))
    sep = options.get("sep") or KOMBU_SEP
    prefix = key_prefix(app)
    return [prefix + (f"{queue}{sep}{step}" if step else queue) for step in steps]


def broker_url(app) -> str:
    url = app.conf.broker_url or ""
    return url.split(";")[0].strip()


def _redacted_url(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


def broker_client(app):
    """A plain Redis client on the broker (short timeouts); BrokerUnavailable when it cannot answer."""
    import redis

    url = broker_url(app)
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
    pattern = glob_escape(prefix) + glob_escape(KOMBU_BINDING_PREFIX) + "*"
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


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _unacked_by_queue(client, app) -> tuple[int, dict[str, int]]:
    """(total, per routing key) of the messages delivered to workers and not acknowledged yet."""
    key = key_prefix(app) + str(transport_options(app).get("unacked_key") or "unacked")
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
    except Exception as exc:  # a Redis failure mid-read is the broker being unavailable
        import redis

        if isinstance(exc, redis.RedisError):
            raise BrokerUnavailable(
                f"the Celery broker stopped answering: {exc.__class__.__name__}: {exc}"
            ) from None
        raise
    queues = []
    for name in ordered:
        steps = transport_options(app).get("priority_steps") or KOMBU_PRIORITY_STEPS
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
        "read_at": now_iso(),
        "key_prefix": prefix,
        "queues": queues,
        "unacked_total": unacked_total,
    }


def now_iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC).isoformat()


__all__ = ["BrokerUnavailable", "queue_depths", "queue_list_keys"]
