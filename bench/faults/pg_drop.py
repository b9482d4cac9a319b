"""Fault scenario ``pg_drop``: PostgreSQL connections dropped and the database unreachable, web stays up.

A real gunicorn process serves the platform from a private database (``bench_faults_pg_<pid>`` on the
server of ``DATABASE_URL``, migrated, dropped afterwards). Its ``DATABASE_URL`` points at a TCP relay on
a free loopback port (``PgRelay``) that forwards to PostgreSQL and can cut the link on demand, so the
outage touches this scenario's connections only, never other databases on the shared server.

Phases, each followed by recovery without restarting the web process:

1. ``terminate``: ``pg_terminate_backend`` on every backend of the private database (from a separate
   admin connection); requests must keep answering (health-checked persistent connections reconnect).
2. ``refused``: the relay stops listening (connections refused) for a few seconds; every request must get
   503 quickly (JSON ``{"detail"}`` + ``Retry-After`` from the API, 503 from ``/health``), never a 500.
3. ``silent``: the relay accepts connections but never answers (a host gone from the network); requests
   must get 503 after ``DB_CONNECT_TIMEOUT`` instead of hanging.

Writes (``POST /api/v1/datasets/``) run during every phase: each 201 must exist afterwards and each
refused write must leave no row. ``lost`` counts 500s, hung requests, acknowledged writes that are
missing and refused writes that were stored anyway. ``seconds_to_recover`` is the worst time from the
link coming back to the first successful API answer.

The relay is shared with ``tests/integration/test_faults_services.py``; the database, web server and
process helpers are ``bench.harness``'s.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from bench.harness.databases import (
    admin_connect,
    base_url,
    private_database,
    terminate_backends,
    with_database,
)
from bench.harness.ports import free_port
from bench.harness.processes import ROOT, start_web, stop_process, web_env

SCENARIO = "pg_drop"
CONNECT_TIMEOUT_S = 2  # libpq's minimum; the 503 arrives after about this long when the server is silent


class PgRelay:
    """A loopback TCP relay in front of PostgreSQL whose link can be cut, refused or silenced.

    Modes: ``up`` (forward), ``refused`` (not listening: connect() fails at once), ``silent`` (accepts,
    never answers). Switching away from ``up`` closes every relayed connection, like a server crash.
    """

    def __init__(self, target_host: str, target_port: int, port: int | None = None):
        self.target = (target_host, int(target_port))
        self.port = port or free_port()
        self.mode = "up"
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> PgRelay:
        self._listen()
        self._thread = threading.Thread(target=self._accept_loop, name="pg-relay", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._unlisten()
        self.drop_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> PgRelay:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def set_mode(self, mode: str) -> None:
        if mode not in {"up", "refused", "silent"}:
            raise ValueError(f"unknown relay mode {mode!r}")
        with self._lock:
            self.mode = mode
        if mode == "refused":
            self._unlisten()
        else:
            self._listen()
        if mode != "up":
            self.drop_all()
        else:
            self.drop_all()  # connections held silently are released; clients reconnect

    def drop_all(self) -> None:
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    # -- internals ------------------------------------------------------------------------------------
    def _listen(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            listener.settimeout(0.2)
            self._listener = listener

    def _unlisten(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            listener = self._listener
            if listener is None:
                time.sleep(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                mode = self.mode
                self._sockets.add(client)
            if mode == "silent":
                continue  # held open, never answered, closed by the next mode change
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                with contextlib.suppress(OSError):
                    client.close()
                continue
            with self._lock:
                self._sockets.add(upstream)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select(list(peers), [], [], 0.5)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._sockets.discard(a)
                self._sockets.discard(b)


def create_admin_token(database_url: str, username: str) -> str:
    """An admin user and its API token, through the project's own management command."""
    out = subprocess.run(
        [sys.executable, "manage.py", "create_user", username, "--role", "admin"],
        cwd=ROOT, env={**os.environ, "DATABASE_URL": database_url}, check=True, timeout=300,
        capture_output=True, text=True,
    )  # fmt: skip
    for line in out.stdout.splitlines():
        if line.startswith("token="):
            return line.split("=", 1)[1].strip()
    raise RuntimeError(f"create_user printed no token: {out.stdout!r}")


class Probe:
    """Requests against the live server, classified: ok, 503 (clean), error (500s, hangs, wrong bodies)."""

    def __init__(self, base: str, token: str, timeout: float = 30.0):
        import requests

        self.base, self.timeout = base, timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self.errors: list[str] = []
        self.max_503_s = 0.0
        self.acknowledged: list[str] = []  # names whose POST answered 201
        self.refused: list[str] = []  # names whose POST answered 503

    def get(self, path: str) -> int:
        import requests

        started = time.monotonic()
        try:
            answer = self.session.get(self.base + path, timeout=self.timeout)
        except requests.RequestException as exc:
            self.errors.append(f"GET {path}: {exc.__class__.__name__}")
            return 0
        return self._classify(f"GET {path}", answer, time.monotonic() - started)

    def post_dataset(self) -> int:
        import requests

        name = f"fault-{uuid.uuid4().hex[:10]}"
        started = time.monotonic()
        try:
            answer = self.session.post(
                self.base + "/api/v1/datasets/", json={"name": name}, timeout=self.timeout
            )
        except requests.RequestException as exc:
            self.errors.append(f"POST datasets: {exc.__class__.__name__}")
            return 0
        code = self._classify("POST datasets", answer, time.monotonic() - started)
        if code == 201:
            self.acknowledged.append(name)
        elif code == 503:
            self.refused.append(name)
        return code

    def _classify(self, what: str, answer, elapsed: float) -> int:
        code = answer.status_code
        if code == 503:
            self.max_503_s = max(self.max_503_s, elapsed)
            if "Retry-After" not in answer.headers:
                self.errors.append(f"{what}: 503 without Retry-After")
            if what.endswith("/health"):
                if not str(answer.json().get("database", "")).startswith("error"):
                    self.errors.append(f"{what}: 503 but database reported {answer.text[:200]}")
            elif not answer.json().get("detail"):
                self.errors.append(f"{what}: 503 without a detail: {answer.text[:200]}")
        elif code >= 500 or code not in {200, 201}:
            self.errors.append(f"{what}: {code} {answer.text[:200]}")
        return code

    def until_ok(self, path: str = "/api/v1/datasets/", timeout: float = 60.0) -> float:
        """Seconds until ``path`` answers 200 (raises TimeoutError)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.get(path) == 200:
                return time.monotonic() - started
            time.sleep(0.1)
        raise TimeoutError(f"{path} did not answer 200 within {timeout:.0f} s")


def count_datasets(admin_url: str, names: list[str]) -> int:
    if not names:
        return 0
    parts = urlsplit(admin_url)
    conn = admin_connect(admin_url, dbname=parts.path.lstrip("/"))
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM catalog_dataset WHERE name = ANY(%s)", (names,))
            return int(cursor.fetchone()[0])
    finally:
        conn.close()


def run(quick: bool) -> dict:
    outage_s = 3.0 if quick else 10.0
    repeats = 1 if quick else 3
    server = base_url()
    target = urlsplit(server)
    work = Path(tempfile.mkdtemp(prefix="bench-faults-pg-"))
    result: dict = {"outage_s": outage_s, "repeats": repeats, "connect_timeout_s": CONNECT_TIMEOUT_S}
    web = None
    with (
        private_database(server) as (dbname, db_url),
        PgRelay(target.hostname or "127.0.0.1", target.port or 5432) as relay,
    ):
        try:
            token = create_admin_token(db_url, "faults-admin")
            relayed = with_database(server, dbname, host="127.0.0.1", port=relay.port)
            port = free_port()
            env = web_env(
                database_url=relayed, media_root=work / "media", db_connect_timeout=CONNECT_TIMEOUT_S
            )
            web = start_web(env, port, work / "web.log", args=("--timeout", "120"))
            web_pid = web.pid
            probe = Probe(f"http://127.0.0.1:{port}", token)
            probe.until_ok()
            admin = admin_connect(server)
            recover: dict[str, list[float]] = {"terminate": [], "refused": [], "silent": []}
            answers: dict[str, dict[int, int]] = {"terminate": {}, "refused": {}, "silent": {}}
            try:
                for _ in range(repeats):
                    # 1. backends killed under a warm server
                    probe.post_dataset()
                    terminate_backends(admin, dbname)
                    started = time.monotonic()
                    for _ in range(3):
                        code = probe.post_dataset()
                        answers["terminate"][code] = answers["terminate"].get(code, 0) + 1
                    probe.until_ok()
                    recover["terminate"].append(time.monotonic() - started)
                    # 2./3. the link refused, then silent, for outage_s each
                    for mode in ("refused", "silent"):
                        relay.set_mode(mode)
                        end = time.monotonic() + outage_s
                        while time.monotonic() < end:
                            for code in (
                                probe.get("/health"),
                                probe.get("/api/v1/datasets/"),
                                probe.post_dataset(),
                            ):
                                answers[mode][code] = answers[mode].get(code, 0) + 1
                            time.sleep(0.05)  # a client retrying, not a flood
                        relay.set_mode("up")
                        recover[mode].append(probe.until_ok())
            finally:
                admin.close()
            stored_ack = count_datasets(db_url, probe.acknowledged)
            stored_refused = count_datasets(db_url, probe.refused)
            lost = (
                len(probe.errors)
                + (len(probe.acknowledged) - stored_ack)
                + stored_refused
                + int(web.poll() is not None or web.pid != web_pid)
            )
            worst = max(max(v) for v in recover.values())
            result.update(
                recovered=web.poll() is None and lost == 0,
                seconds_to_recover=round(worst, 3),
                lost=lost,
                seconds_to_recover_by_fault={k: [round(x, 3) for x in v] for k, v in recover.items()},
                answers={k: {str(c): n for c, n in sorted(v.items())} for k, v in answers.items()},
                max_503_seconds=round(probe.max_503_s, 3),
                writes_acknowledged=len(probe.acknowledged),
                writes_refused=len(probe.refused),
                refused_writes_stored=stored_refused,
                acknowledged_writes_missing=len(probe.acknowledged) - stored_ack,
                errors=probe.errors[:20],
                web_restarted=False,
            )
        finally:
            stop_process(web, 20)
            shutil.rmtree(work, ignore_errors=True)
    return result
