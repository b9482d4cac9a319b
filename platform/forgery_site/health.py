"""``/health``: the one unauthenticated endpoint. Checks PostgreSQL and Redis; 503 when either fails."""

from __future__ import annotations

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse


def health(request):
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # any failure is reported, not raised
        checks["database"] = f"error: {exc.__class__.__name__}"
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1).ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {exc.__class__.__name__}"
    ok = all(value == "ok" for value in checks.values())
    details = {}
    if checks["database"] == "ok":  # what the last check of Label Studio found (no call to it from here)
        try:
            from labeling.instance import instance_state

            details["label_studio"] = instance_state()["state"]
        except Exception as exc:  # a detail, never a reason for /health to fail
            details["label_studio"] = f"error: {exc.__class__.__name__}"
    response = JsonResponse(
        {"status": "ok" if ok else "degraded", **checks, "details": details}, status=200 if ok else 503
    )
    response["Cache-Control"] = "no-store"
    if not ok:  # the database check waits at most DB_CONNECT_TIMEOUT seconds; the next call reconnects
        response["Retry-After"] = str(int(settings.DB_UNAVAILABLE_RETRY_AFTER))
    return response
