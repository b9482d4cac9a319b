"""Machinery shared by the fault scenarios and their integration tests (tests/integration/test_faults_workers.py).

Everything runs on loopback and is owned by the caller: a private Redis on a free port (AOF, fsync
always), Celery worker and beat processes of the platform's app, a temporary MEDIA_ROOT. The scenario
bodies (``worker_kill_scenario``, ``redis_restart_scenario``) need Django set up on a database the
worker processes also use (the test database in tests, a private database in the benchmark) and return
the same result dict either way: ``recovered``, ``seconds_to_recover``, ``lost`` and details.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = ("done", "failed", "cancelled")

# Tiny models: the recovery machinery is under test, not detector quality. Long enough training (several
# per-epoch checkpoints) that a kill lands mid-training.
BASE_CONFIG = {
    "detectors": ["lae"],
    "image_size": 32,
    "batch_size": 4,
    "budget_count": 4,
    "budget_total": 1.0,  # tiny datasets: 4 masks a round is more than 3% of them
    "poll_interval_s": 0.5,
    "labeling": "none",
    "scoring": "in_process",
    "detector_config": {"lae": {"depth": 2, "width": 4, "latent_channels": 8, "groups": 2}},
    "active": {"strategies": ["entropy"], "shard_size": 32},
}


# ----------------------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.2, describe=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s: {describe()}")
        time.sleep(interval)


class PrivateRedis:
    """A redis-server of our own on 127.0.0.1:<free port>, persisting every write (AOF, fsync always)."""

    def __init__(self, directory: Path, port: int | None = None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "redis.log"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 30) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
                   "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--dir", str(self.dir),
                   "--daemonize", "no", "--logfile", str(self.log)]  # fmt: skip
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.ping, timeout, 0.05, lambda: self.log.read_text(errors="replace")[-2000:])

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1).ping())
        except (redis.RedisError, OSError):
            return False

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM: Redis flushes the AOF and exits (a clean shutdown, as an orchestrator's restart does)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def restart(self, down_s: float = 0.0) -> float:
        """Stop, stay down ``down_s`` seconds, start on the same port and directory; returns the outage."""
        started = time.monotonic()
        self.stop()
        time.sleep(down_s)
        self.start()
        return time.monotonic() - started


def stop_process(proc: subprocess.Popen | None, timeout: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def start_worker(env: dict[str, str], log: Path, name: str) -> subprocess.Popen:
    """One platform worker process on every queue (solo pool, as the gpu worker runs)."""
    command = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", "gpu,cpu,default",
               "--pool=solo", "--loglevel=INFO", "-n", f"{name}-{os.getpid()}-{time.time_ns()}@%h",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
    handle = open(log, "ab")  # noqa: SIM115 - the child keeps it; closed when the process ends
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)


class Supervisor:
    """Restarts a process that exits, as systemd ``Restart=always``, compose ``restart: unless-stopped``
    or a Kubernetes Deployment do in production (a Celery worker can exit with "Unrecoverable error" when
    the broker disappears while it holds unacknowledged messages: kombu fails to restore them on a closed
    connection). Records each exit; ``replace`` swaps in a new process on purpose (a deliberate kill)."""

    def __init__(self, start: Callable[[], subprocess.Popen], interval: float = 0.5):
        import threading

        self._start, self._interval = start, interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.proc = start()
        self.exits: list[int] = []
        self._thread = threading.Thread(target=self._watch, name="faults-supervisor", daemon=True)
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


def start_beat(env: dict[str, str], directory: Path, log: Path) -> subprocess.Popen:
    """Celery beat (it schedules ``rounds_watchdog`` every ``ROUNDS_WATCHDOG_INTERVAL_S``)."""
    directory.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat", "--loglevel=INFO",
               "-s", str(directory / "celerybeat-schedule"), "--pidfile", str(directory / "beat.pid")]  # fmt: skip
    handle = open(log, "ab")  # noqa: SIM115 - the child keeps it
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)


def worker_env(*, database_url: str, media_root: Path, redis_url: str, prefix: str, **extra: str) -> dict:
    """Environment of worker/beat processes: every Redis use (broker, results, cache) on ``redis_url``."""
    parts = urlsplit(redis_url)
    cache_url = urlunsplit(parts._replace(path="/2"))
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url,
           "CELERY_RESULT_BACKEND": redis_url, "CACHE_URL": cache_url, "CELERY_KEY_PREFIX": prefix,
           "MEDIA_ROOT": str(media_root), "IMPORT_ROOTS": "", "HF_HUB_OFFLINE": "1", "LOG_LEVEL": "INFO",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}  # fmt: skip
    env.update({k: str(v) for k, v in extra.items()})
    return env


def sender(redis_url: str, prefix: str):
    """A Celery client publishing to the scenario's broker under its key prefix."""
    from celery import Celery

    return Celery(broker=redis_url, broker_transport_options={"global_keyprefix": prefix})


def launch(dataset, admin, config: dict, redis_url: str, prefix: str):
    from rounds.launch import round_launch

    round_ = round_launch(dataset=dataset, config=config, user=admin)
    client = sender(redis_url, prefix)
    try:
        client.send_task("workers.tasks.rounds.round_start", args=(round_.pk,), queue="default")
    finally:
        client.close()
    return round_


# ---------------------------------------------------------------------------------------- accounting
def row_accounting(round_id: int) -> dict:
    """What the round left behind, and ``lost``: missing or duplicated Selection / Mask / DetectorVersion
    rows, plus 1 when the round did not finish."""
    from django.db.models import Count

    from catalog.models import Mask
    from modelhub.models import DetectorVersion
    from rounds.models import Round, Selection

    round_ = Round.objects.get(pk=round_id)
    config = round_.config
    selections = Selection.objects.filter(round_id=round_id)
    selected = list(selections.values_list("sample_id", flat=True))
    expected = int(config.get("budget_count") or 0)
    masks = dict(
        Mask.objects.filter(sample_id__in=selected)
        .values("sample_id")
        .annotate(n=Count("id"))
        .values_list("sample_id", "n")
    )
    versions = dict(
        DetectorVersion.objects.filter(round_id=round_id)
        .values("kind")
        .annotate(n=Count("id"))
        .values_list("kind", "n")
    )
    detectors = list(config.get("detectors") or [])
    missing_selections = max(0, expected - len(set(selected)))
    duplicate_selections = len(selected) - len(set(selected)) + max(0, len(set(selected)) - expected)
    missing_masks = sum(1 for s in set(selected) if masks.get(s, 0) == 0)
    duplicate_masks = sum(max(0, n - 1) for n in masks.values())
    missing_versions = sum(1 for d in detectors if versions.get(d, 0) == 0)
    duplicate_versions = sum(max(0, n - 1) for n in versions.values())
    unfinished = 0 if round_.state == "done" else 1
    lost = (missing_selections + duplicate_selections + missing_masks + duplicate_masks + missing_versions
            + duplicate_versions + unfinished)  # fmt: skip
    return {
        "state": round_.state,
        "error": round_.error[:500],
        "selections": len(selected),
        "masks": sum(masks.values()),
        "detector_versions": sum(versions.values()),
        "missing": {
            "selections": missing_selections,
            "masks": missing_masks,
            "detector_versions": missing_versions,
        },
        "duplicated": {
            "selections": duplicate_selections,
            "masks": duplicate_masks,
            "detector_versions": duplicate_versions,
        },  # fmt: skip
        "unfinished": unfinished,
        "attempts": {
            p: (v or {}).get("attempts") for p, v in ((round_.progress or {}).get("phases") or {}).items()
        },
        "watchdog": (round_.progress or {}).get("watchdog"),
        "lost": lost,
    }


def metrics_epochs(media_root: Path, round_, phase: str, detector: str) -> list[int]:
    path = Path(media_root) / "rounds" / str(round_.dataset_id) / f"r{round_.number}" / phase / detector
    lines = (path / "metrics.jsonl").read_text().splitlines() if (path / "metrics.jsonl").exists() else []
    return [json.loads(x)["epoch"] for x in lines if x.strip()]


def checkpoint_path(media_root: Path, round_, phase: str, detector: str) -> Path:
    return (
        Path(media_root)
        / "rounds"
        / str(round_.dataset_id)
        / f"r{round_.number}"
        / phase
        / detector
        / "checkpoint.pt"
    )


def _state(round_id: int) -> str:
    from rounds.models import Round

    return Round.objects.values_list("state", flat=True).get(pk=round_id)


def _attempts(round_id: int, phase: str) -> int:
    from rounds.models import Round

    progress = Round.objects.values_list("progress", flat=True).get(pk=round_id) or {}
    return int(((progress.get("phases") or {}).get(phase) or {}).get("attempts") or 0)


def _log_tail(path: Path, chars: int = 6000) -> str:
    """The end of a process log without beat's once-a-second scheduling lines."""
    if not path.exists():
        return ""
    lines = [x for x in path.read_text(errors="replace").splitlines() if "Sending due task" not in x]
    return "\n".join(lines)[-chars:]


def _describe(round_id: int, logs: list[Path], procs: dict | None = None) -> Callable[[], str]:
    def describe() -> str:
        from rounds.models import Round

        r = Round.objects.get(pk=round_id)
        alive = {name: p.poll() for name, p in (procs or {}).items()}
        tails = "\n".join(f"--- {p.name}\n{_log_tail(p)}" for p in logs)
        return (f"round {round_id} {r.state} {r.error[:500]} {json.dumps(r.progress)[:1500]}\n"
                f"process exit codes (None = running): {alive}\n{tails}")  # fmt: skip

    return describe


# ------------------------------------------------------------------------------------------ scenarios
def worker_kill_scenario(*, dataset, admin, media_root: Path, database_url: str, workdir: Path,
                         quick: bool = True, stall_s: float = 6.0) -> dict:  # fmt: skip
    """SIGKILL the (only) worker mid-training, start a replacement (as an orchestrator restarts a dead
    pod), then SIGKILL it again mid-retraining; the broker's visibility timeout is the production one
    (hours), so the round resumes through the watchdog (beat) re-sending the step of a round that no
    worker holds. Annotation is the ground-truth oracle, stored the moment the round annotates."""
    from rounds.demo_oracle import store_ground_truth_masks

    workdir.mkdir(parents=True, exist_ok=True)
    epochs, retrain_epochs = (4, 3) if quick else (6, 4)
    config = {**BASE_CONFIG, "epochs": epochs, "retrain_epochs": retrain_epochs}
    redis = PrivateRedis(workdir / "redis")
    redis.start()
    prefix = f"faults-kill-{os.getpid()}:"
    env = worker_env(database_url=database_url, media_root=media_root, redis_url=redis.url(), prefix=prefix,
                     ROUNDS_STALL_S=stall_s, ROUNDS_WATCHDOG_INTERVAL_S=1)  # fmt: skip
    env.pop("CELERY_VISIBILITY_TIMEOUT", None)  # the production default: redelivery alone would take hours
    logs = [workdir / "worker.log", workdir / "beat.log"]
    worker = Supervisor(lambda: start_worker(env, logs[0], "kill"))
    beat = start_beat(env, workdir / "beat", logs[1])
    kills: list[dict] = []
    round_id = None
    try:
        round_ = launch(dataset, admin, config, redis.url(), prefix)
        round_id = round_.pk
        describe = _describe(round_id, logs, {"worker": worker, "beat": beat})
        for phase, sub, state in (("training", "train", "training"), ("retraining", "retrain", "retraining")):
            checkpoint = checkpoint_path(media_root, round_, sub, "lae")
            if phase == "retraining":
                # annotate as soon as the round asks, so it moves on to retraining
                wait_until(
                    lambda: _state(round_id) in ("annotating", "retraining") + TERMINAL, 300, 0.1, describe
                )
                store_ground_truth_masks(round_id)
            wait_until(lambda c=checkpoint: c.exists() or _state(round_id) in TERMINAL, 300, 0.05, describe)
            if _state(round_id) != state:
                raise RuntimeError(f"{phase} finished before the kill: {describe()}")
            before = _attempts(round_id, phase)
            epoch_at_kill = len(metrics_epochs(media_root, round_, sub, "lae"))
            killed = time.monotonic()
            worker.kill()  # SIGKILL, and the replacement starts (an orchestrator restarting the pod)
            wait_until(lambda b=before, p=phase: _attempts(round_id, p) > b or _state(round_id) in TERMINAL,
                       300, 0.1, describe)  # fmt: skip
            resumed = time.monotonic() - killed
            wait_until(lambda s=state: _state(round_id) != s, 300, 0.1, describe)
            kills.append({"phase": phase, "epochs_done_at_kill": epoch_at_kill,
                          "seconds_to_resume": round(resumed, 2),
                          "seconds_to_phase_end": round(time.monotonic() - killed, 2)})  # fmt: skip
        wait_until(lambda: _state(round_id) in TERMINAL, 300, 0.2, describe)
        if _state(round_id) == "annotating":  # pragma: no cover - ordering guard
            store_ground_truth_masks(round_id)
        accounting = row_accounting(round_id)
        from rounds.models import Round

        round_ = Round.objects.get(pk=round_id)
        train_epochs = metrics_epochs(media_root, round_, "train", "lae")
        retrain_epochs_seen = metrics_epochs(media_root, round_, "retrain", "lae")
        repeated = (len(train_epochs) - len(set(train_epochs))) + (
            len(retrain_epochs_seen) - len(set(retrain_epochs_seen))
        )
        return {
            "recovered": accounting["state"] == "done",
            "seconds_to_recover": max(k["seconds_to_resume"] for k in kills),
            "lost": accounting["lost"],
            "kills": kills,
            "epochs_repeated": repeated,
            "train_epochs": train_epochs,
            "retrain_epochs": retrain_epochs_seen,
            "worker_unplanned_exits": worker.exits,
            "stall_s": stall_s,
            "accounting": accounting,
        }
    finally:
        worker.stop()
        stop_process(beat)
        redis.stop()


def redis_restart_scenario(*, dataset, admin, media_root: Path, database_url: str, workdir: Path,
                           quick: bool = True, stall_s: float = 6.0, down_s: float = 2.0) -> dict:  # fmt: skip
    """Restart the private Redis (SIGTERM, stay down ``down_s``, start on the same port and AOF directory)
    twice: while the worker trains (a task in flight, its late ack pending), and while the round annotates
    (its poll loop lives in countdown messages the worker holds). Then the oracle annotates and the round
    must finish with exactly one set of rows."""
    from rounds.demo_oracle import store_ground_truth_masks

    workdir.mkdir(parents=True, exist_ok=True)
    epochs = 4 if quick else 6
    config = {**BASE_CONFIG, "epochs": epochs, "retrain_epochs": 1}
    redis = PrivateRedis(workdir / "redis")
    redis.start()
    prefix = f"faults-redis-{os.getpid()}:"
    env = worker_env(database_url=database_url, media_root=media_root, redis_url=redis.url(), prefix=prefix,
                     ROUNDS_STALL_S=stall_s, ROUNDS_WATCHDOG_INTERVAL_S=1)  # fmt: skip
    env.pop("CELERY_VISIBILITY_TIMEOUT", None)
    logs = [workdir / "worker.log", workdir / "beat.log"]
    worker = Supervisor(lambda: start_worker(env, logs[0], "redis"))
    beat = start_beat(env, workdir / "beat", logs[1])
    restarts: list[dict] = []
    try:
        round_ = launch(dataset, admin, config, redis.url(), prefix)
        round_id = round_.pk
        describe = _describe(round_id, logs, {"worker": worker, "beat": beat})
        # 1. mid-training: the training task is in flight (unacknowledged) when Redis goes away.
        checkpoint = checkpoint_path(media_root, round_, "train", "lae")
        wait_until(lambda: checkpoint.exists() or _state(round_id) in TERMINAL, 300, 0.05, describe)
        if _state(round_id) != "training":
            raise RuntimeError(f"training finished before the restart: {describe()}")
        fault = time.monotonic()
        outage = redis.restart(down_s)
        wait_until(lambda: _state(round_id) not in ("training",), 300, 0.1, describe)
        wait_until(lambda: _state(round_id) in ("annotating",) + TERMINAL, 300, 0.1, describe)
        restarts.append({"during": "training", "down_s": round(outage, 2),
                         "seconds_to_next_step": round(time.monotonic() - fault, 2)})  # fmt: skip
        # 2. while annotating: the poll loop's countdown message is held by the worker when Redis goes away.
        if _state(round_id) != "annotating":
            raise RuntimeError(f"the round did not reach annotating: {describe()}")
        time.sleep(1.0)  # let a poll message be in the worker's hands
        fault = time.monotonic()
        outage = redis.restart(down_s)
        store_ground_truth_masks(round_id)
        wait_until(lambda: _state(round_id) != "annotating", 300, 0.1, describe)
        restarts.append({"during": "annotating", "down_s": round(outage, 2),
                         "seconds_to_next_step": round(time.monotonic() - fault, 2)})  # fmt: skip
        wait_until(lambda: _state(round_id) in TERMINAL, 300, 0.2, describe)
        accounting = row_accounting(round_id)
        import redis as redis_lib

        aof = sorted(p.name for p in (workdir / "redis").rglob("*.aof*"))
        pending = redis_lib.Redis(host="127.0.0.1", port=redis.port).llen(f"{prefix}gpu")
        return {
            "recovered": accounting["state"] == "done",
            "seconds_to_recover": max(r["seconds_to_next_step"] for r in restarts),
            "lost": accounting["lost"],
            "restarts": restarts,
            "aof_files": aof,
            "gpu_queue_left": pending,
            "worker_exits": worker.exits,
            "stall_s": stall_s,
            "accounting": accounting,
        }
    finally:
        worker.stop()
        stop_process(beat)
        redis.stop()


# ------------------------------------------------------------------------------------------ benchmark
def bench_environment(name: str):
    """Context for a benchmark scenario: a private database (created, migrated, dropped), a temporary
    MEDIA_ROOT, a generated dataset imported, an admin user. Yields a dict of those."""
    from contextlib import contextmanager

    @contextmanager
    def context():
        import psycopg2

        base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
        parts = urlsplit(base)
        db_name = f"{parts.path.lstrip('/')}_faults_{name}_{os.getpid()}"
        url = urlunsplit(parts._replace(path=f"/{db_name}"))
        media = Path(tempfile.mkdtemp(prefix=f"faults-{name}-"))

        def admin_sql(sql: str) -> None:
            conn = psycopg2.connect(base)
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(sql)
            conn.close()

        admin_sql(f'CREATE DATABASE "{db_name}"')
        os.environ.update({"DATABASE_URL": url, "MEDIA_ROOT": str(media), "IMPORT_ROOTS": "",
                           "HF_HUB_OFFLINE": "1", "LOG_LEVEL": "WARNING"})  # fmt: skip
        try:
            from bench.common import django_setup

            django_setup()
            from django.contrib.auth.models import Group, User

            from catalog.services import dataset_get_or_create, import_job_create, import_job_run
            from ml.data.generate import generate_dataset

            generate_dataset(media / "datasets" / name, 160, 32, 0)
            dataset = dataset_get_or_create(name=name)
            job = import_job_run(job_id=import_job_create(dataset=dataset, source=f"datasets/{name}/manifest.jsonl",
                                                           format="manifest").pk)  # fmt: skip
            if job.status != "succeeded":
                raise RuntimeError(f"dataset import failed: {job.message}")
            admin = User.objects.create(username=f"faults-{name}", is_superuser=True)
            admin.groups.add(Group.objects.get_or_create(name="admin")[0])
            yield {"dataset": dataset, "admin": admin, "media_root": media, "database_url": url,
                   "workdir": media / "work"}  # fmt: skip
        finally:
            from django.db import connections

            connections.close_all()
            admin_sql(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            shutil.rmtree(media, ignore_errors=True)

    return context()
