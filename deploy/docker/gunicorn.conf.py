"""gunicorn settings of the web service, from the environment (see deploy/compose/.env.example).

| variable                  | default                      | meaning                                           |
|---------------------------|------------------------------|---------------------------------------------------|
| GUNICORN_WORKERS          | 2 * CPU cores + 1, at most 8 | worker processes                                  |
| GUNICORN_THREADS          | 4                            | threads per worker (gthread worker class)         |
| GUNICORN_TIMEOUT          | 120                          | seconds a request may take (inference uploads)    |
| GUNICORN_GRACEFUL_TIMEOUT | 30                           | seconds to finish requests on shutdown/restart    |
| GUNICORN_MAX_REQUESTS     | 2000                         | requests before a worker is recycled (0: never)   |

Access and error logs go to stdout/stderr (the container's log). Run: ``gunicorn -c deploy/docker/gunicorn.conf.py``.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile


def _int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"{name} must be at least {minimum}, not {value}")
    return value


wsgi_app = "forgery_site.wsgi:application"
chdir = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "platform")
bind = "0.0.0.0:8000"  # the port inside the container; compose publishes it
workers = _int("GUNICORN_WORKERS", min(2 * multiprocessing.cpu_count() + 1, 8), minimum=1)
threads = _int("GUNICORN_THREADS", 4, minimum=1)
worker_class = "gthread"
timeout = _int("GUNICORN_TIMEOUT", 120, minimum=1)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30, minimum=1)
max_requests = _int("GUNICORN_MAX_REQUESTS", 2000)
max_requests_jitter = max_requests // 10
keepalive = 5
# Heartbeat files in memory, not on the container's overlay filesystem (slow fsync stalls workers).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - gunicorn heartbeat only
# gunicornc's control socket in a writable place (the application user's home, /app, is read-only).
control_socket = os.path.join(tempfile.gettempdir(), "gunicorn-forgerylab", "gunicorn.ctl")
accesslog = "-"
errorlog = "-"
