"""Container operations of the forgerylab images (standard library + psycopg2 + celery; no Django import
unless a check needs it).

    python deploy/docker/ops.py wait-db [--timeout S]       wait until DATABASE_URL accepts connections
    python deploy/docker/ops.py ensure-ls-db                create Label Studio's database when missing
    python deploy/docker/ops.py gpu-count                   worker processes of the gpu worker (see below)
    python deploy/docker/ops.py gpu-mode                    per-gpu or ddp (GPU_WORKER_MODE)
    python deploy/docker/ops.py health web                  GET http://127.0.0.1:8000/health answers 200
    python deploy/docker/ops.py health beat                 celery beat's schedule file is recent
    python deploy/docker/ops.py health worker-gpu           every gpu worker process answers a ping

Label Studio's database (``ensure-ls-db``): ``LS_DB_NAME`` on ``LS_DB_HOST``:``LS_DB_PORT`` as
``LS_DB_USER``/``LS_DB_PASSWORD``; empty host/user/password fall back to the server and credentials of
``DATABASE_URL`` (the bundled PostgreSQL).

GPU worker processes (``gpu-count``): one when ``GPU_WORKER_MODE=ddp`` (a single process sees every GPU
and trains a round data-parallel on all of them, deploy/docs/multi-gpu.md); otherwise (``per-gpu``, the
default) ``GPU_WORKERS`` when set, else one per GPU the container sees (``nvidia-smi -L``), at least one
(a host without a GPU then runs the gpu queue on the CPU).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"
BEAT_SCHEDULE_DIR = "/srv/forgerylab/beat"  # the "beat" volume (entrypoint.sh: celery beat -s)


def fail(message: str) -> None:
    print(f"[ops] {message}", file=sys.stderr)
    raise SystemExit(1)


def database_params(url: str) -> dict:
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql", "pgsql"):
        fail(f"DATABASE_URL must be a PostgreSQL URL, not scheme {parts.scheme!r}")
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 5432,
        "user": unquote(parts.username or "postgres"),
        "password": unquote(parts.password or ""),
        "dbname": unquote(parts.path.lstrip("/")) or "postgres",
    }


def connect(params: dict, timeout: float = 5.0):
    import psycopg2

    return psycopg2.connect(connect_timeout=max(1, int(timeout)), **params)


def wait_db(timeout: float) -> None:
    params = database_params(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            connect(params).close()
            print(
                f"[ops] PostgreSQL {params['host']}:{params['port']}/{params['dbname']} is up",
                file=sys.stderr,
            )
            return
        except Exception as exc:  # any failure means "not yet"
            last = f"{exc.__class__.__name__}: {str(exc).strip()}"
            time.sleep(1)
    fail(
        f"PostgreSQL {params['host']}:{params['port']} did not accept connections in {timeout:.0f} s ({last})"
    )


def ls_database_params() -> dict:
    base = database_params(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
    port = os.environ.get("LS_DB_PORT", "").strip()
    return {
        "host": os.environ.get("LS_DB_HOST", "").strip() or base["host"],
        "port": int(port) if port else base["port"],
        "user": os.environ.get("LS_DB_USER", "").strip() or base["user"],
        "password": os.environ.get("LS_DB_PASSWORD", "") or base["password"],
        "dbname": os.environ.get("LS_DB_NAME", "").strip() or "labelstudio",
    }


def ensure_ls_db() -> None:
    from psycopg2 import sql

    params = ls_database_params()
    name = params.pop("dbname")
    conn = connect({**params, "dbname": "postgres"})
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is not None:
                print(f"[ops] Label Studio database {name!r} exists", file=sys.stderr)
                return
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"[ops] created Label Studio database {name!r}", file=sys.stderr)
    finally:
        conn.close()


def gpu_worker_mode() -> str:
    mode = os.environ.get("GPU_WORKER_MODE", "").strip() or "per-gpu"
    if mode not in ("per-gpu", "ddp"):
        fail(f"GPU_WORKER_MODE must be per-gpu or ddp, not {mode!r}")
    return mode


def gpu_count() -> int:
    if gpu_worker_mode() == "ddp":
        return 1
    configured = os.environ.get("GPU_WORKERS", "").strip()
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            fail(f"GPU_WORKERS must be a positive integer, not {configured!r}")
        return int(configured)
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True)
            count = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
            if count:
                return count
        except (OSError, subprocess.SubprocessError):
            pass
    return 1


def health_web() -> None:
    request = urllib.request.Request("http://127.0.0.1:8000/health", headers={"Host": "localhost"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - fixed local URL
            if response.status != 200:
                fail(f"/health answered {response.status}")
    except urllib.error.HTTPError as exc:
        fail(f"/health answered {exc.code}: {exc.read(300).decode(errors='replace')}")
    except (urllib.error.URLError, OSError) as exc:
        fail(f"/health unreachable: {exc}")


def health_beat(directory: str = BEAT_SCHEDULE_DIR) -> None:
    """beat writes its schedule file at least every ``sync_every`` (180 s) while it sends tasks; the
    reconcile entry fires every LABELING_RECONCILE_SECONDS, so the file is never older than their sum."""
    files = glob.glob(os.path.join(directory, "celerybeat-schedule*"))
    if not files:
        fail(f"no schedule file in {directory} yet")
    age = time.time() - max(os.path.getmtime(f) for f in files)
    interval = float(os.environ.get("LABELING_RECONCILE_SECONDS", "60") or 60)
    allowed = max(600.0, 2 * interval + 180.0)
    if age > allowed:
        fail(f"schedule file not written for {age:.0f} s (allowed {allowed:.0f} s)")


def health_worker_gpu() -> None:
    for path in (str(ROOT / "platform"), str(ROOT)):
        if path not in sys.path:
            sys.path.insert(0, path)
    from workers.celery_app import app

    host = socket.gethostname()
    names = [f"gpu{i}@{host}" for i in range(gpu_count())]
    replies = app.control.ping(destination=names, timeout=10)
    answered = {name for reply in replies for name in reply}
    missing = sorted(set(names) - answered)
    if missing:
        fail(f"no ping reply from {', '.join(missing)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ops.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    wait = sub.add_parser("wait-db")
    wait.add_argument("--timeout", type=float, default=120.0)
    sub.add_parser("ensure-ls-db")
    sub.add_parser("gpu-count")
    sub.add_parser("gpu-mode")
    health = sub.add_parser("health")
    health.add_argument("role", choices=["web", "beat", "worker-gpu"])
    args = parser.parse_args(argv)
    if args.command == "wait-db":
        wait_db(args.timeout)
    elif args.command == "ensure-ls-db":
        ensure_ls_db()
    elif args.command == "gpu-count":
        print(gpu_count())
    elif args.command == "gpu-mode":
        print(gpu_worker_mode())
    else:
        {"web": health_web, "beat": health_beat, "worker-gpu": health_worker_gpu}[args.role]()


if __name__ == "__main__":
    main()
