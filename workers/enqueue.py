"""The one way work is enqueued: by task name, to the queue ``workers.routing`` gives it, with the robust
publisher. The platform's services and views import this module only (never a task module), so the
platform -> workers dependency is this one small door and the task bodies stay in the platform services.

    publish(name, args, kwargs, countdown)   send or raise (after the retries below)
    send(name, args, kwargs, countdown)      send or log and return False (state is in PostgreSQL and a
                                             watchdog or reconciliation re-sends what was not sent)
    dispatch_round(round_id)                 send the task the round's state calls for

Publishing retries while the broker is unreachable (``PUBLISH_RETRY``, about half a minute: a broker
restart), then once more on a fresh connection (after a broker restart the pooled producer's connection
can be stale: kombu then fails with an AttributeError instead of reconnecting).
"""

from __future__ import annotations

import logging
from typing import Any

from workers.routing import ROUND_STEPS

logger = logging.getLogger(__name__)

PUBLISH_RETRY = {"max_retries": 12, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 3.0}
# For a request that must answer now (a webhook receipt): a few quick tries, no fresh-connection round.
QUICK_RETRY = {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.1, "interval_max": 0.2}


def celery_app():
    """The Celery app (imported, with Django, only when something is sent or inspected)."""
    from workers.celery_app import app

    return app


def publish(
    name: str,
    args: tuple | list = (),
    kwargs: dict | None = None,
    *,
    countdown: float | None = None,
    quick: bool = False,
):
    """Send task ``name``; returns its AsyncResult, raises when the broker stays unreachable (``quick``:
    after ``QUICK_RETRY``, for a caller that must answer now)."""
    from kombu import Producer

    from workers.routing import queue_of

    app = celery_app()
    options: dict[str, Any] = {"countdown": countdown or None, "queue": queue_of(name), "retry": True,
                               "retry_policy": QUICK_RETRY if quick else PUBLISH_RETRY}  # fmt: skip
    try:
        return app.send_task(name, args=tuple(args), kwargs=kwargs or {}, **options)
    except Exception as exc:  # any publish failure: try once more on a fresh connection
        if quick:
            raise
        logger.warning("publishing %s failed (%r); retrying on a fresh connection", name, exc)
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=PUBLISH_RETRY["max_retries"])
        return app.send_task(name, args=tuple(args), kwargs=kwargs or {}, producer=Producer(connection),
                             **options)  # fmt: skip


def send(
    name: str, args: tuple | list = (), kwargs: dict | None = None, *, countdown: float | None = None
) -> bool:
    """``publish`` that logs and returns False instead of raising when the broker stays unreachable."""
    try:
        publish(name, args, kwargs, countdown=countdown)
        return True
    except Exception as exc:
        logger.error("could not send %s%s (%r); it is re-sent by the watchdog or reconciliation",
                     name, tuple(args), exc)  # fmt: skip
        return False


def dispatch_round(round_id: int) -> str | None:
    """Send the task the round's state calls for; returns the step (None when the round is over)."""
    from rounds.workflow import round_next_step

    step, countdown = round_next_step(round_id=round_id)
    if step is None:
        return None
    send(ROUND_STEPS[step], (round_id,), countdown=countdown)
    return step
