"""Processes of the platform on loopback: their environments, starting them, waiting until they serve,
stopping them (and everything they started)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench.harness.waits import http_answers, http_ok, wait_until

ROOT = Path(__file__).resolve().parents[2]
CELERY_APP = "workers.celery_app"


class ProcessExited(RuntimeError):
    """A process we wait for exited instead of becoming ready."""


# ------------------------------------------------------------------------------------------- stopping
def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leads_group(proc: subprocess.Popen) -> bool:
    """Started in a session of its own (``start_new_session=True``): its children are in its group."""
    try:
        return os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        return False


def _signal(proc: subprocess.Popen, sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group:
            try:
                os.killpg(proc.pid, sig)
                return
            except ProcessLookupError:
                pass
        proc.send_signal(sig)


def stop_processes(
    procs: Iterable[subprocess.Popen | None], timeout: float = 30, *, group: bool | None = None
) -> None:
    """SIGTERM every live process at once, wait up to ``timeout`` s for each, SIGKILL what is left.

    A process that leads its own process group (started with ``start_new_session=True``: gunicorn and
    its workers, a prefork Celery pool) is signalled as a group, so no child outlives it; ``group``
    forces either way."""
    live = [p for p in procs if p is not None and p.poll() is None]
    groups = {id(p): _leads_group(p) if group is None else group for p in live}
    for proc in live:
        _signal(proc, signal.SIGTERM, groups[id(proc)])
    for proc in live:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL, groups[id(proc)])
            proc.wait(10)


def stop_process(proc: subprocess.Popen | None, timeout: float = 30, *, group: bool | None = None) -> None:
    """``stop_processes`` for one process; None or an exited process is fine."""
    stop_processes([proc], timeout, group=group)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc (Linux), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log_tail(path: Path, chars: int = 3000, *, drop: str | None = None) -> str:
    """The end of a process log (lines containing ``drop`` left out: beat's once-a-second lines)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    if drop:
        text = "\n".join(line for line in text.splitlines() if drop not in line)
    return text[-chars:]


# ------------------------------------------------------------------------------------------ environment
def service_env(
    *,
    database_url: str,
    media_root: Path,
    redis_url: str | None = None,
    prefix: str | None = None,
    **extra: object,
) -> dict[str, str]:
    """The environment of a platform process (web, worker, beat) on the given database and MEDIA_ROOT.

    With ``redis_url``: broker and results there (CELERY_BROKER_URL / CELERY_RESULT_BACKEND follow
    REDIS_URL); ``prefix``: its Celery key prefix. ``extra``: more variables (str() of each value)."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "MEDIA_ROOT": str(media_root),
        "IMPORT_ROOTS": "",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT / "platform"), str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
        env.pop("CELERY_BROKER_URL", None)
        env.pop("CELERY_RESULT_BACKEND", None)
    if prefix is not None:
        env["CELERY_KEY_PREFIX"] = prefix
    env.update({k: str(v) for k, v in extra.items()})
    return env


def worker_env(*, database_url: str, media_root: Path, redis_url: str, prefix: str, **extra: object) -> dict:
    """Worker/beat processes with every Redis use (broker, results, cache in DB 2) on ``redis_url``'s
    server: a private redis-server that a fault scenario restarts."""
    cache_url = urlunsplit(urlsplit(redis_url)._replace(path="/2"))
    env = service_env(database_url=database_url, media_root=media_root, redis_url=redis_url, prefix=prefix)
    env.update({"CELERY_BROKER_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url, "CACHE_URL": cache_url,
                "LOG_LEVEL": "INFO"})  # fmt: skip
    env.update({k: str(v) for k, v in extra.items()})
    return env


def web_env(*, database_url: str, media_root: Path, db_connect_timeout: int = 2, **extra: object) -> dict:
    """A web process (DEBUG, local-memory cache) whose database connections give up after
    ``db_connect_timeout`` seconds (libpq's minimum is 2): a dead database costs a 503, not a hang."""
    env = service_env(database_url=database_url, media_root=media_root)
    env.update({"DEBUG": "true", "CACHE_URL": "locmem://", "LOG_LEVEL": "WARNING",
                "DB_CONNECT_TIMEOUT": str(db_connect_timeout)})  # fmt: skip
    env.update({k: str(v) for k, v in extra.items()})
    return env


# --------------------------------------------------------------------------------------------- starting
def unique_name(prefix: str) -> str:
    """A worker name nobody else uses (a restarted worker must not share its predecessor's)."""
    return f"{prefix}-{os.getpid()}-{time.time_ns()}"


def start_worker(
    env: dict,
    log: Path,
    name: str,
    *,
    queues: str = "gpu,cpu,default",
    pool: str | None = "solo",
    concurrency: int | None = None,
    loglevel: str = "INFO",
    app: str = CELERY_APP,
    new_session: bool = False,
) -> subprocess.Popen:
    """A Celery worker process named ``name@<host>`` (``name`` as given when it has an ``@``) consuming
    ``queues``; without gossip, mingle and heartbeat (nothing to talk to on one machine). Output is
    appended to ``log``. ``pool=None``: Celery's default (prefork)."""
    command = [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queues]
    if pool is not None:
        command.append(f"--pool={pool}")
    if concurrency is not None:
        command.append(f"--concurrency={concurrency}")
    command += [f"--loglevel={loglevel}", "-n", name if "@" in name else f"{name}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
    with open(log, "ab") as handle:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=new_session
        )


def start_beat(env: dict, directory: Path, log: Path) -> subprocess.Popen:
    """Celery beat (schedule and pid file in ``directory``)."""
    directory.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "celery", "-A", CELERY_APP, "beat", "--loglevel=INFO",
               "-s", str(directory / "celerybeat-schedule"), "--pidfile", str(directory / "beat.pid")]  # fmt: skip
    with open(log, "ab") as handle:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)


def wait_worker_ready(
    app, proc: subprocess.Popen, *, queue: str = "default", timeout: float = 120, log: Path | None = None
) -> dict:
    """Until the worker answers ``workers.tasks.core.health`` on ``queue`` (its answer is returned).
    ``ProcessExited`` when it exits first, ``TimeoutError`` after ``timeout`` seconds."""
    errors: list[BaseException] = []

    def answer():
        if proc.poll() is not None:
            raise ProcessExited(f"the worker exited with {proc.returncode}:\n{log_tail(log) if log else ''}")
        try:
            return app.send_task("workers.tasks.core.health", queue=queue).get(timeout=10)
        except Exception as exc:  # not up yet
            errors.append(exc)
            return None

    def describe() -> str:
        return f"last error: {errors[-1]!r}\n{log_tail(log) if log else ''}" if errors else ""

    return wait_until(answer, timeout, 0.1, what=f"a worker answering on queue {queue!r}", describe=describe)


def start_web(
    env: dict,
    port: int,
    log: Path,
    *,
    workers: int = 1,
    threads: int = 4,
    args: Iterable[str] = (),
    timeout: float = 90,
    healthy: bool = False,
) -> subprocess.Popen:
    """gunicorn (gthread) serving the platform on 127.0.0.1:``port`` in a session of its own; returns once
    ``/health`` answers at all (``healthy``: answers 200). Stopped again when it never does."""
    command = [sys.executable, "-m", "gunicorn", "forgery_site.wsgi", "-b", f"127.0.0.1:{port}",
               "-w", str(workers), "-k", "gthread", "--threads", str(threads), *args]  # fmt: skip
    with open(log, "ab") as handle:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    probe = http_ok if healthy else http_answers
    url = f"http://127.0.0.1:{port}/health"

    def up() -> bool:
        if proc.poll() is not None:
            raise ProcessExited(f"gunicorn exited with {proc.returncode}:\n{log_tail(log)}")
        return probe(url)

    try:
        wait_until(up, timeout, 0.3, what=f"gunicorn to answer {url}", describe=lambda: log_tail(log))
    except BaseException:
        stop_process(proc)
        raise
    return proc


class Supervisor:
    """Restarts a process that exits, as systemd ``Restart=always``, compose ``restart: unless-stopped``
    or a Kubernetes Deployment do in production (a Celery worker can exit with "Unrecoverable error" when
    the broker disappears while it holds unacknowledged messages: kombu fails to restore them on a closed
    connection). Records each exit; ``kill`` swaps in a new process on purpose (a deliberate kill)."""

    def __init__(self, start: Callable[[], subprocess.Popen], interval: float = 0.5):
        self._start, self._interval = start, interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.proc = start()
        self.exits: list[int] = []
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                if self.proc.poll() is not None:
                    self.exits.append(self.proc.returncode)
                    self.proc = self._start()

    def kill(self) -> None:
        """SIGKILL the current process and start its replacement at once."""
        with self._lock:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
            self.proc = self._start()

    def poll(self):
        return self.proc.poll()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            stop_process(self.proc)
