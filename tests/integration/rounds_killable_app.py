"""The platform's Celery app with a short Redis visibility timeout, for the killed-worker test: a task
whose worker died unacknowledged is handed out again after seconds instead of the default hour."""

from __future__ import annotations

import os

from workers.celery_app import app

app.conf.broker_transport_options = {
    **(app.conf.broker_transport_options or {}),
    "visibility_timeout": float(os.environ.get("TEST_VISIBILITY_TIMEOUT", "5")),
}

__all__ = ["app"]
