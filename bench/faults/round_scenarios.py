"""Round fault scenarios (``worker_kill``, ``redis_restart``), shared by ``python -m bench faults`` and
tests/integration/test_faults_workers.py.

Everything runs on loopback and is owned by the caller: a private Redis on a free port (AOF, fsync
always), Celery worker and beat processes of the platform's app, a temporary MEDIA_ROOT (the machinery
is ``bench.harness``). The scenario bodies (``worker_kill_scenario``, ``redis_restart_scenario``) need
Django set up on a database the worker processes also use (the test database in tests, a private
database in the benchmark: ``bench_environment``) and return the same result dict either way:
``recovered``, ``seconds_to_recover``, ``lost`` and details. This module is no scenario itself (it has
no ``SCENARIO``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from bench.harness.brokers import PrivateRedis
from bench.harness.databases import base_url, scratch_database
from bench.harness.processes import (
    Supervisor,
    log_tail,
    start_beat,
    start_worker,
    stop_process,
    unique_name,
    worker_env,
)
from bench.harness.waits import wait_until

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


# ------------------------------------------------------------------------------------------ the round
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


def _describe(round_id: int, logs: list[Path], procs: dict | None = None) -> Callable[[], str]:
    def describe() -> str:
        from rounds.models import Round

        r = Round.objects.get(pk=round_id)
        alive = {name: p.poll() for name, p in (procs or {}).items()}
        tails = "\n".join(f"--- {p.name}\n{log_tail(p, 6000, drop='Sending due task')}" for p in logs)
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
    worker = Supervisor(lambda: start_worker(env, logs[0], unique_name("kill")))
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
                wait_until(lambda: _state(round_id) in ("annotating", "retraining") + TERMINAL, 300, 0.1,
                           what="the round to annotate", describe=describe)  # fmt: skip
                store_ground_truth_masks(round_id)
            wait_until(lambda c=checkpoint: c.exists() or _state(round_id) in TERMINAL, 300, 0.05,
                       what=f"the first {phase} checkpoint", describe=describe)  # fmt: skip
            if _state(round_id) != state:
                raise RuntimeError(f"{phase} finished before the kill: {describe()}")
            before = _attempts(round_id, phase)
            epoch_at_kill = len(metrics_epochs(media_root, round_, sub, "lae"))
            killed = time.monotonic()
            worker.kill()  # SIGKILL, and the replacement starts (an orchestrator restarting the pod)
            wait_until(lambda b=before, p=phase: _attempts(round_id, p) > b or _state(round_id) in TERMINAL,
                       300, 0.1, what=f"{phase} to resume", describe=describe)  # fmt: skip
            resumed = time.monotonic() - killed
            wait_until(
                lambda s=state: _state(round_id) != s, 300, 0.1, what=f"{phase} to end", describe=describe
            )
            kills.append({"phase": phase, "epochs_done_at_kill": epoch_at_kill,
                          "seconds_to_resume": round(resumed, 2),
                          "seconds_to_phase_end": round(time.monotonic() - killed, 2)})  # fmt: skip
        wait_until(lambda: _state(round_id) in TERMINAL, 300, 0.2, what="the round to end", describe=describe)
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
    worker = Supervisor(lambda: start_worker(env, logs[0], unique_name("redis")))
    beat = start_beat(env, workdir / "beat", logs[1])
    restarts: list[dict] = []
    try:
        round_ = launch(dataset, admin, config, redis.url(), prefix)
        round_id = round_.pk
        describe = _describe(round_id, logs, {"worker": worker, "beat": beat})
        # 1. mid-training: the training task is in flight (unacknowledged) when Redis goes away.
        checkpoint = checkpoint_path(media_root, round_, "train", "lae")
        wait_until(lambda: checkpoint.exists() or _state(round_id) in TERMINAL, 300, 0.05,
                   what="the first training checkpoint", describe=describe)  # fmt: skip
        if _state(round_id) != "training":
            raise RuntimeError(f"training finished before the restart: {describe()}")
        fault = time.monotonic()
        outage = redis.restart(down_s)
        wait_until(
            lambda: _state(round_id) != "training", 300, 0.1, what="training to end", describe=describe
        )
        wait_until(lambda: _state(round_id) in ("annotating",) + TERMINAL, 300, 0.1,
                   what="the round to annotate", describe=describe)  # fmt: skip
        restarts.append({"during": "training", "down_s": round(outage, 2),
                         "seconds_to_next_step": round(time.monotonic() - fault, 2)})  # fmt: skip
        # 2. while annotating: the poll loop's countdown message is held by the worker when Redis goes away.
        if _state(round_id) != "annotating":
            raise RuntimeError(f"the round did not reach annotating: {describe()}")
        time.sleep(1.0)  # let a poll message be in the worker's hands
        fault = time.monotonic()
        outage = redis.restart(down_s)
        store_ground_truth_masks(round_id)
        wait_until(
            lambda: _state(round_id) != "annotating", 300, 0.1, what="annotation to end", describe=describe
        )
        restarts.append({"during": "annotating", "down_s": round(outage, 2),
                         "seconds_to_next_step": round(time.monotonic() - fault, 2)})  # fmt: skip
        wait_until(lambda: _state(round_id) in TERMINAL, 300, 0.2, what="the round to end", describe=describe)
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
@contextmanager
def bench_environment(name: str):
    """Context for a benchmark scenario: a private database ``<DATABASE_URL's>_faults_<name>_<pid>``
    (created, migrated, dropped), a temporary MEDIA_ROOT, a generated dataset imported, an admin user.
    Yields a dict of those."""
    server = base_url()
    media = Path(tempfile.mkdtemp(prefix=f"faults-{name}-"))
    db_name = f"{urlsplit(server).path.lstrip('/')}_faults_{name}_{os.getpid()}"
    try:
        with scratch_database(server, db_name) as url:
            os.environ.update({"DATABASE_URL": url, "MEDIA_ROOT": str(media), "IMPORT_ROOTS": "",
                               "HF_HUB_OFFLINE": "1", "LOG_LEVEL": "WARNING"})  # fmt: skip
            from bench.common import django_setup

            django_setup(scratch=False)  # this database: the worker processes use it too
            try:
                from django.contrib.auth.models import Group, User

                from catalog.services import dataset_get_or_create, import_job_create, import_job_run
                from ml.data.generate import generate_dataset

                generate_dataset(media / "datasets" / name, 160, 32, 0)
                dataset = dataset_get_or_create(name=name)
                job = import_job_run(job_id=import_job_create(dataset=dataset, format="manifest",
                                                               source=f"datasets/{name}/manifest.jsonl").pk)  # fmt: skip
                if job.status != "succeeded":
                    raise RuntimeError(f"dataset import failed: {job.message}")
                admin = User.objects.create(username=f"faults-{name}", is_superuser=True)
                admin.groups.add(Group.objects.get_or_create(name="admin")[0])
                yield {"dataset": dataset, "admin": admin, "media_root": media, "database_url": url,
                       "workdir": media / "work"}  # fmt: skip
            finally:
                from django.db import connections

                connections.close_all()
    finally:
        shutil.rmtree(media, ignore_errors=True)
