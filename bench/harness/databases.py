"""PostgreSQL databases of our own on the server of DATABASE_URL: created, used, dropped."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote, urlsplit, urlunsplit

from bench.harness.processes import pid_alive

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"


class Database(NamedTuple):
    name: str
    url: str


def base_url() -> str:
    """DATABASE_URL, or the development default."""
    return os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def with_database(url: str, name: str, *, host: str | None = None, port: int | None = None) -> str:
    """``url`` with another database name (and optionally another host/port)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if host is not None:
        auth = netloc.rsplit("@", 1)[0] + "@" if "@" in netloc else ""
        netloc = f"{auth}{host}:{port}"
    return urlunsplit((parts.scheme, netloc, f"/{name}", parts.query, parts.fragment))


def settings_url(settings_dict: dict) -> str:
    """The URL of a Django database's settings (``connection.settings_dict``): what a child process
    needs as DATABASE_URL to use the same database (a test database included)."""
    user = quote(settings_dict.get("USER") or "")
    password = quote(settings_dict.get("PASSWORD") or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or "5432"
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


def admin_connect(url: str, dbname: str = "postgres"):
    """A separate autocommit psycopg2 connection to ``dbname`` on the server of ``url`` (the 'admin'
    side: creating and dropping databases, terminating backends)."""
    import psycopg2

    conn = psycopg2.connect(url, dbname=dbname, connect_timeout=5)
    conn.autocommit = True
    return conn


def admin_sql(url: str, *statements: str) -> None:
    """Run statements on the database of ``url`` itself, autocommit."""
    conn = admin_connect(url, dbname=database_name(url) or "postgres")
    try:
        with conn.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)
    finally:
        conn.close()


def create_database(url: str, name: str, *, replace: bool = False) -> str:
    """Create database ``name`` on the server of ``url`` (dropped first with ``replace``); its URL."""
    statements = [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'] if replace else []
    admin_sql(url, *statements, f'CREATE DATABASE "{name}"')
    return with_database(url, name)


def drop_database(url: str, name: str, *, force: bool = True) -> None:
    """Drop ``name`` if it exists; ``force``: its sessions are terminated first (PostgreSQL 13+)."""
    admin_sql(url, f'DROP DATABASE IF EXISTS "{name}"' + (" WITH (FORCE)" if force else ""))


def terminate_backends(admin, dbname: str, exclude: tuple[int, ...] = ()) -> int:
    """``pg_terminate_backend`` on the backends of ``dbname`` only (a private test/bench database)."""
    if not (dbname.startswith("test_") or dbname.startswith("bench_")):
        raise ValueError(f"refusing to terminate backends of {dbname!r}: not a private test/bench database")
    with admin.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid() AND NOT (pid = ANY(%s))",
            (dbname, list(exclude)),
        )
        return int(cursor.fetchone()[0])


def migrate_database(url: str, timeout: float = 600) -> None:
    """``manage.py migrate`` on the database of ``url``, in a child process (this one keeps its settings)."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
        cwd=ROOT, env={**os.environ, "DATABASE_URL": url}, check=True, timeout=timeout,
    )  # fmt: skip


@contextlib.contextmanager
def scratch_database(url: str, name: str, *, replace: bool = False):
    """Database ``name`` on the server of ``url`` for the ``with`` block; yields its URL, dropped after
    (its remaining sessions terminated)."""
    database_url = create_database(url, name, replace=replace)
    try:
        yield database_url
    finally:
        drop_database(url, name)


@contextlib.contextmanager
def private_database(url: str, prefix: str = "bench_faults_pg", *, migrate: bool = True):
    """A database of our own, ``<prefix>_<pid>_<random>``, migrated (in a child process); yields
    ``Database(name, url)``; dropped afterwards."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with scratch_database(url, name) as database_url:
        if migrate:
            migrate_database(database_url)
        yield Database(name, database_url)


def drop_orphaned_databases(url: str, pattern: str | re.Pattern) -> list[str]:
    """Drop the databases whose name matches ``pattern`` and whose owner process is gone: the pattern's
    first group is the pid of the process that made it (a run that died before its cleanup). Databases
    still in use are left alone; an unreachable server is not an error. Returns the names dropped."""
    import psycopg2

    regex = re.compile(pattern)
    try:
        conn = admin_connect(url, dbname=database_name(url) or "postgres")
    except psycopg2.Error:
        return []
    dropped = []
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database")
            for (name,) in cursor.fetchall():
                match = regex.match(name)
                if not match or int(match.group(1)) == os.getpid() or pid_alive(int(match.group(1))):
                    continue
                try:
                    cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
                    dropped.append(name)
                except psycopg2.Error:
                    pass
    finally:
        conn.close()
    return dropped
