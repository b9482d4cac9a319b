"""Webhook burst under API load, nothing lost: ``python -m bench load [--quick]``.

Everything is real and on loopback: a Label Studio server (a copy of the migrated template, free port),
the platform behind gunicorn (3 processes x 4 threads, gthread: ``GUNICORN_WORKERS``/``GUNICORN_THREADS``
of deploy/k8s/base/config.env), one Celery worker (prefork, 2 processes, queue ``default``: the
``worker-cpu`` of compose/k8s with ``CPU_WORKER_CONCURRENCY=2``) on a private Redis database + key
prefix, PostgreSQL from DATABASE_URL.

1. A round of N samples (200, quick 30) is pushed to Label Studio; the project's own webhook is removed
   and the oracle answers every task (N real annotations, ground-truth brush masks).
2. C API clients (20, quick 5; annotator and admin tokens) loop over the read/list endpoints
   (datasets, samples with filters, one sample, rounds, one round, its selection, detectors, users/me)
   from before the burst until every delivery is processed.
3. N signed deliveries (the shared-secret header, the real annotation payloads) plus every 10th one a
   second time (a duplicate, in the same burst) are fired at once from one thread each.
4. The worker fetches each annotation from Label Studio and stores the mask. When every delivery is
   settled, each annotation must have exactly one Mask row, equal to the ground truth.

Reports ``lost`` (annotations without a mask), ``duplicates`` (extra mask rows), ``wrong`` (masks
different from the ground truth), p50/p95/p99 of webhook receipt and of API latency, throughput
(API requests/s, deliveries/s during the burst, masks/s from the burst to the last mask) and status
counts per side (``error:<Exception>`` for a request that got no answer). ``lost``, ``duplicates``,
``wrong`` and 5xx counts are the invariants; times on a shared machine are noise-prone.

``run_load`` is shared with ``tests/integration/test_load.py`` (smaller sizes, same checks).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from bench.common import labeling_round
from bench.harness.brokers import delete_keys, redis_db_url
from bench.harness.labelstudio import LabelStudio
from bench.harness.ports import free_port
from bench.harness.processes import ROOT, service_env, start_web, start_worker, stop_processes
from bench.harness.scratch import SCRATCH_REDIS_DB
from bench.harness.waits import wait_until

WEB_WORKERS, WEB_THREADS = 3, 4  # deploy/k8s/base/config.env
WORKER_CONCURRENCY = 2
DUPLICATE_EVERY = 10  # every 10th delivery is sent twice in the same burst


def _percentiles(values: list[float]) -> dict:
    import numpy as np

    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    array = np.asarray(values)
    return {
        "p50": round(float(np.percentile(array, 50)), 1),
        "p95": round(float(np.percentile(array, 95)), 1),
        "p99": round(float(np.percentile(array, 99)), 1),
        "max": round(float(array.max()), 1),
    }


@contextmanager
def platform_stack(
    *, env: dict, web_port: int, work: Path, web_workers: int, web_threads: int, concurrency: int
):
    """gunicorn + one Celery worker process (prefork, in a session of its own) with ``env``; both
    stopped with their process groups (SIGTERM, then SIGKILL) on exit. Yields the folder of their logs."""
    procs = []
    try:
        procs.append(start_worker(env, work / "worker.log", f"load-{os.getpid()}", queues="default", pool=None,
                                  concurrency=concurrency, loglevel="WARNING", new_session=True))  # fmt: skip
        procs.append(start_web(env, web_port, work / "web.log", workers=web_workers, threads=web_threads,
                               args=("--backlog", "512"), healthy=True))  # fmt: skip
        yield work
    finally:
        stop_processes(procs)


def run_load(
    *,
    media: Path,
    ls_url: str,
    ls_token: str,
    database_url: str,
    redis_url: str,
    deliveries: int,
    clients: int,
    work: Path,
    web_workers: int = WEB_WORKERS,
    web_threads: int = WEB_THREADS,
    concurrency: int = WORKER_CONCURRENCY,
    settle_timeout_s: float = 900,
) -> dict:
    """The load run itself; Django must be set up on the same database as ``database_url``."""
    import numpy as np
    import requests
    from django.conf import settings
    from django.db.models import Count

    from accounts.services import user_create, user_token
    from catalog.models import Mask
    from labeling.client import WEBHOOK_SECRET_HEADER, LabelStudioClient
    from labeling.masks import read_mask_png
    from labeling.models import LabelingProject, WebhookDelivery
    from labeling.oracle import oracle_answer
    from labeling.provisioning import round_push_tasks

    secret = secrets.token_hex(16)
    web_port = free_port()
    base = f"http://127.0.0.1:{web_port}"
    saved = {
        k: getattr(settings, k, None)
        for k in (
            "MEDIA_ROOT",
            "LABEL_STUDIO_URL",
            "LABEL_STUDIO_TOKEN",
            "WEBHOOK_SECRET",
            "LABELING_WEBHOOK_URL",
        )
    }
    settings.MEDIA_ROOT, settings.LABEL_STUDIO_URL, settings.LABEL_STUDIO_TOKEN = media, ls_url, ls_token
    settings.WEBHOOK_SECRET = secret
    settings.LABELING_WEBHOOK_URL = f"{base}/api/v1/labeling/webhook"
    env = service_env(
        database_url=database_url,
        media_root=media,
        redis_url=redis_url,
        prefix=f"bench-load-{os.getpid()}:",
        LABEL_STUDIO_URL=ls_url,
        LABEL_STUDIO_TOKEN=ls_token,
        WEBHOOK_SECRET=secret,
        LABELING_WEBHOOK_URL=settings.LABELING_WEBHOOK_URL,
        DEBUG="true",
        LOG_LEVEL="WARNING",
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)
    dataset, users, ls_project_id = None, [], None
    try:
        with platform_stack(
            env=env, web_port=web_port, work=work, web_workers=web_workers, web_threads=web_threads,
            concurrency=concurrency,
        ):  # fmt: skip
            client = LabelStudioClient(url=ls_url, token=ls_token)
            dataset, round_obj = labeling_round(media, deliveries)
            suffix = secrets.token_hex(3)
            users = [
                user_create(username=f"load-admin-{suffix}", password=secrets.token_urlsafe(12), role="admin"),
                user_create(username=f"load-annotator-{suffix}", password=secrets.token_urlsafe(12), role="annotator"),
            ]  # fmt: skip
            tokens = [user_token(user=u) for u in users]
            round_push_tasks(round_id=round_obj.pk, client=client)
            project = LabelingProject.objects.get(round=round_obj)
            ls_project_id = project.ls_project_id
            client.webhook_delete(project.ls_webhook_id)  # the deliveries below are the only ones
            oracle_answer(round_id=round_obj.pk, client=client)
            annotations = [
                a for t in client.tasks_iter(project_id=project.ls_project_id) for a in t["annotations"]
            ]
            annotation_ids = sorted(a["id"] for a in annotations)
            bodies = [
                {"action": "ANNOTATION_CREATED", "annotation": a, "project": {"id": project.ls_project_id}}
                for a in annotations
            ]
            bodies += bodies[::DUPLICATE_EVERY]  # same annotation twice, in the same burst
            url = f"{base}/api/v1/labeling/webhook"
            headers = {WEBHOOK_SECRET_HEADER: secret}
            sample_ids = list(round_obj.selections.values_list("sample_id", flat=True))
            reads = [
                "/api/v1/datasets/",
                f"/api/v1/samples/?dataset={dataset.pk}&page_size=50",
                f"/api/v1/samples/?dataset={dataset.pk}&label=fake&split=train&page=2&page_size=20",
                f"/api/v1/rounds/{round_obj.pk}/",
                "/api/v1/rounds/",
                f"/api/v1/rounds/{round_obj.pk}/selection/",
                "/api/v1/detectors/",
                "/api/v1/users/me/",
            ] + [f"/api/v1/samples/{sid}/" for sid in sample_ids[:8]]

            # Warm-up (not measured): each gunicorn process imports DRF and the Celery app on first use.
            warm = [
                {"action": "ANNOTATION_CREATED", "annotation": {"id": 10**12 + i, "updated_at": "warm"},
                 "project": {"id": project.ls_project_id}}
                for i in range(2 * web_workers * 4)
            ]  # fmt: skip
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda b: requests.post(url, json=b, headers=headers, timeout=60), warm))
                list(pool.map(
                    lambda p: requests.get(base + p, headers={"Authorization": f"Token {tokens[0]}"}, timeout=60),
                    reads,
                ))  # fmt: skip

            stop = threading.Event()
            api_results: list[tuple[str, float]] = []
            lock = threading.Lock()

            def api_client(index: int) -> None:
                session = requests.Session()
                session.headers["Authorization"] = f"Token {tokens[index % len(tokens)]}"
                step = index
                while not stop.is_set():
                    path = reads[step % len(reads)]
                    step += 1
                    started = time.perf_counter()
                    try:
                        status = str(session.get(base + path, timeout=60).status_code)
                    except requests.RequestException as exc:
                        status = f"error:{type(exc).__name__}"
                    with lock:
                        api_results.append((status, (time.perf_counter() - started) * 1000))

            barrier = threading.Barrier(len(bodies))
            session_local = threading.local()

            def deliver(body: dict) -> tuple[str, float]:
                session = getattr(session_local, "s", None) or requests.Session()
                session_local.s = session
                try:
                    barrier.wait(timeout=60)
                except threading.BrokenBarrierError:
                    pass
                started = time.perf_counter()
                try:
                    status = str(session.post(url, json=body, headers=headers, timeout=60).status_code)
                except requests.RequestException as exc:
                    status = f"error:{type(exc).__name__}"
                return status, (time.perf_counter() - started) * 1000

            api_threads = [
                threading.Thread(target=api_client, args=(i,), daemon=True) for i in range(clients)
            ]
            api_t0 = time.perf_counter()
            for thread in api_threads:
                thread.start()
            time.sleep(1.0)  # the API load is on before the burst starts
            burst_t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
                replies = list(pool.map(deliver, bodies))
            burst_s = time.perf_counter() - burst_t0

            def settled() -> bool:
                rows = WebhookDelivery.objects.filter(ls_project_id=project.ls_project_id)
                return not rows.filter(status=WebhookDelivery.Status.PENDING).exists() and rows.filter(
                    ls_annotation_id__in=annotation_ids
                ).count() >= len(annotation_ids)

            wait_until(settled, settle_timeout_s, what="every delivery settled")
            sync_s = time.perf_counter() - burst_t0
            stop.set()
            for thread in api_threads:
                thread.join(timeout=90)
            api_s = time.perf_counter() - api_t0

            per_annotation = dict(
                Mask.objects.filter(ls_annotation_id__in=annotation_ids)
                .values_list("ls_annotation_id")
                .annotate(n=Count("id"))
                .values_list("ls_annotation_id", "n")
            )
            lost = sum(1 for a in annotation_ids if per_annotation.get(a, 0) == 0)
            duplicates = sum(n - 1 for n in per_annotation.values() if n > 1)
            wrong = 0
            for mask in Mask.objects.filter(ls_annotation_id__in=annotation_ids).select_related("sample"):
                got = read_mask_png(media / mask.path)
                wrong += int(not np.array_equal(got, read_mask_png(media / mask.sample.gt_mask_path)))
            webhook_status = Counter(status for status, _ in replies)
            api_status = Counter(status for status, _ in api_results)
            server_errors = sum(
                n for counts in (webhook_status, api_status) for s, n in counts.items() if s.startswith("5")
            )
            return {
                "annotations": len(annotation_ids),
                "deliveries": len(bodies),
                "duplicate_deliveries": len(bodies) - len(annotation_ids),
                "api_clients": clients,
                "stored": sum(per_annotation.values()),
                "lost": lost,
                "duplicates": duplicates,
                "wrong": wrong,
                "server_errors": server_errors,
                "webhook_status": dict(sorted(webhook_status.items())),
                "api_status": dict(sorted(api_status.items())),
                "webhook_receipt_ms": _percentiles([ms for _, ms in replies]),
                "api_latency_ms": _percentiles([ms for _, ms in api_results]),
                "api_requests": len(api_results),
                "api_requests_per_s": round(len(api_results) / api_s, 1),
                "burst_s": round(burst_s, 2),
                "deliveries_per_s": round(len(bodies) / burst_s, 1),
                "sync_s": round(sync_s, 2),
                "masks_per_s": round(sum(per_annotation.values()) / sync_s, 2),
                "web": f"gunicorn {web_workers}x{web_threads} gthread",
                "worker": f"1 celery process, prefork {concurrency}",
            }
    finally:
        for key, value in saved.items():
            setattr(settings, key, value)
        if ls_project_id is not None:
            WebhookDelivery.objects.filter(ls_project_id=ls_project_id).delete()
        if dataset is not None:
            LabelingProject.objects.filter(round__dataset=dataset).delete()
            dataset.delete()
        for user in users:
            user.delete()


def run(quick: bool) -> dict:
    from bench.common import django_setup

    django_setup()
    from django.conf import settings

    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    media = work / "media"
    labelstudio = LabelStudio(ROOT / "var" / "labelstudio" / f"bench-load-{os.getpid()}", media)
    scratch_redis = redis_db_url(settings.REDIS_URL, SCRATCH_REDIS_DB)
    try:
        labelstudio.start()
        return run_load(
            media=media,
            ls_url=labelstudio.url,
            ls_token=labelstudio.token,
            database_url=settings.DATABASE_URL,
            redis_url=scratch_redis,
            deliveries=30 if quick else 200,
            clients=5 if quick else 20,
            work=work,
        )
    finally:
        delete_keys(scratch_redis, f"bench-load-{os.getpid()}:")  # run_load's prefix
        labelstudio.close()
        shutil.rmtree(work, ignore_errors=True)
