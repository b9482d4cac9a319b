"""Webhook receipt against the web server's own ceiling, and mask sync: ``python -m bench webhooks [--quick]``.

Everything is real and on loopback: a Label Studio server (its own copy of the migrated test template,
free port), the platform behind gunicorn (2 processes x 16 threads, DEBUG off, as deployed), one Celery
worker process (4 threads) on a private Redis database + key prefix, the benchmark's scratch database.

1. A round of N samples (200, quick 40) is pushed to Label Studio; the project's webhook is removed and
   the oracle answers every task (N real annotations with ground-truth brush masks).
2. Bursts of 200 requests in flight (one thread each, released by a barrier), alternating 7 times: a
   trivial authenticated POST on the same server (``bench.webhook_site``: the same secret header, the
   JSON body parsed, 200) and the receiver (the real annotations first, then deletions of annotations
   that never existed, bodies of the same size: the same insert). ``ratio_to_trivial`` = the receiver's
   throughput / the trivial endpoint's (median of the 7 pairs, goal >= 0.8), ``p95_ratio_to_trivial``
   the same for p95 latency (goal <= 1.25): goals that do not depend on the machine.
   ``burst_spread``: max - min of the 7 throughput ratios (one burst is ~0.4 s: single pairs are noisy).
3. Only then the worker starts (on one 2-core machine it would take the receiver's cores; deployed, it
   runs elsewhere): it fetches each annotation from Label Studio and stores its mask; we wait until
   every delivery is settled.

Also reported: ``stored`` (Mask rows created), ``lost`` (real annotations without a mask; goal 0),
``duplicates`` (a second mask of one annotation; goal 0), ``exact`` (masks equal to the ground truth),
the receipt's sequential p50/p95 (one request at a time) and ``sync_per_s`` (deliveries settled per
second once the worker runs).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.harness.brokers import delete_keys, redis_db_url
from bench.harness.labelstudio import LabelStudio
from bench.harness.ports import free_port
from bench.harness.processes import ROOT, service_env, start_web, start_worker, stop_processes
from bench.harness.scratch import SCRATCH_REDIS_DB
from bench.harness.waits import wait_until

CONCURRENCY = 200
# The web server as deployed: DEBUG off (no query log), plain HTTP on loopback behind no proxy.
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "SECURE_SSL_REDIRECT": "false",
    "SECURE_HSTS_SECONDS": "0",
}


def _django() -> None:
    from bench.common import django_setup

    django_setup()


def _burst(url: str, bodies: list[dict], headers: dict, sessions: list) -> dict:
    """All ``bodies`` at once from one thread each (bounded to 200), released together by a barrier."""
    import numpy as np

    width = min(len(bodies), CONCURRENCY)
    barrier = threading.Barrier(width)
    marks: dict[str, float] = {}

    def deliver(item: tuple[int, dict]) -> tuple[int, float, float]:
        index, body = item
        session = sessions[index % len(sessions)]
        try:
            barrier.wait(timeout=30)
        except threading.BrokenBarrierError:
            pass
        marks.setdefault("start", time.perf_counter())
        started = time.perf_counter()
        answer = session.post(url, json=body, headers=headers, timeout=60)
        ended = time.perf_counter()
        return answer.status_code, (ended - started) * 1000, ended

    with ThreadPoolExecutor(max_workers=width) as pool:
        replies = list(pool.map(deliver, enumerate(bodies)))
    latencies = np.array([ms for _, ms, _ in replies])
    wall = max(end for _, _, end in replies) - marks["start"]
    return {
        "requests": len(bodies),
        "http_200": sum(1 for code, _, _ in replies if code == 200),
        "per_s": round(len(bodies) / wall, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p95_ms": round(float(np.percentile(latencies, 95)), 1),
        "max_ms": round(float(latencies.max()), 1),
    }


def run(quick: bool) -> dict:
    import numpy as np
    import requests
    from django.conf import settings

    from bench.common import labeling_round

    _django()
    count = 40 if quick else 200
    repeats = 7
    work = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    media = work / "media"
    labelstudio = LabelStudio(ROOT / "var" / "labelstudio" / f"bench-{os.getpid()}", media)
    web_port = free_port()
    secret = secrets.token_hex(16)
    procs = []
    dataset = None
    scratch_redis, prefix = (
        redis_db_url(settings.REDIS_URL, SCRATCH_REDIS_DB),
        f"bench-webhooks-{os.getpid()}:",
    )
    try:
        labelstudio.start()
        settings.MEDIA_ROOT = media
        settings.LABEL_STUDIO_URL = labelstudio.url
        settings.LABEL_STUDIO_TOKEN = labelstudio.token
        settings.WEBHOOK_SECRET = secret
        settings.LABELING_WEBHOOK_URL = f"http://127.0.0.1:{web_port}/api/v1/labeling/webhook"
        env = service_env(
            database_url=settings.DATABASE_URL,
            media_root=media,
            redis_url=scratch_redis,
            prefix=prefix,
            LABEL_STUDIO_URL=settings.LABEL_STUDIO_URL,
            LABEL_STUDIO_TOKEN=settings.LABEL_STUDIO_TOKEN,
            WEBHOOK_SECRET=secret,
            LOG_LEVEL="WARNING",
        )
        web_settings = {**env, **PRODUCTION, "DJANGO_SETTINGS_MODULE": "bench.webhook_settings"}
        procs.append(start_web(web_settings, web_port, work / "web.log", workers=2, threads=16,
                               args=("--backlog", "512"), timeout=60, healthy=True))  # fmt: skip

        from catalog.models import Mask
        from labeling.client import LabelStudioClient
        from labeling.models import LabelingProject, LabelStudioInstance, WebhookDelivery
        from labeling.oracle import oracle_answer
        from labeling.provisioning import round_push_tasks

        # Each run starts its own Label Studio: forget the one an earlier run (--repeat) recorded in this
        # scratch database.
        LabelStudioInstance.objects.all().delete()
        client = LabelStudioClient(url=settings.LABEL_STUDIO_URL, token=settings.LABEL_STUDIO_TOKEN)
        dataset, round_obj = labeling_round(media, count)
        round_push_tasks(round_id=round_obj.pk, client=client)
        project = LabelingProject.objects.get(round=round_obj)
        client.webhook_delete(project.ls_webhook_id)  # deliveries below are the only ones
        oracle_answer(round_id=round_obj.pk, client=client)
        annotations = [
            a for t in client.tasks_iter(project_id=project.ls_project_id) for a in t["annotations"]
        ]
        real = [
            {"action": "ANNOTATION_CREATED", "annotation": a, "project": {"id": project.ls_project_id}}
            for a in annotations
        ]

        def synthetic(base: int, n: int) -> list[dict]:
            # Deletions of annotations that never existed, as large as the real deliveries: the receipt
            # is the same insert, and the worker settles them without asking Label Studio.
            return [
                {"action": "ANNOTATIONS_DELETED", "annotations": [{**real[i % len(real)]["annotation"], "id": base + i}],
                 "project": {"id": project.ls_project_id}}
                for i in range(n)
            ]  # fmt: skip

        url = settings.LABELING_WEBHOOK_URL
        trivial_url = f"http://127.0.0.1:{web_port}/bench/trivial"
        headers = {"X-Forgerylab-Webhook-Secret": secret}
        sessions = [requests.Session() for _ in range(CONCURRENCY)]
        # Warm-up (not measured): the first requests of each gunicorn process import DRF, the Celery app
        # and open database and broker connections; every session opens its keep-alive connection.
        warm = synthetic(10**12, CONCURRENCY)
        _burst(url, warm, headers, sessions)
        _burst(trivial_url, warm, headers, sessions)
        # One at a time (same path: insert + enqueue): the receiver's own cost, without queueing.
        solo_ms = []
        for body in synthetic(2 * 10**12, 20):
            started = time.perf_counter()
            sessions[0].post(url, json=body, headers=headers, timeout=60)
            solo_ms.append((time.perf_counter() - started) * 1000)
        # Alternating bursts of the same size; the first receiver burst carries the real annotations.
        # The worker is not running yet: on this one machine it would take the receiver's cores (in a
        # deployment it runs elsewhere); it starts after the bursts and drains the queue.
        # Every burst is CONCURRENCY requests; the quick run has fewer real annotations and fills its
        # first burst with synthetic ones (the burst, not the mask sync, is what the ratio measures).
        trivial, receiver = [], []
        for repeat in range(repeats):
            fill = synthetic((3 + repeat) * 10**12, CONCURRENCY - (len(real) if repeat == 0 else 0))
            trivial.append(_burst(trivial_url, real + fill[: CONCURRENCY - len(real)], headers, sessions))
            receiver.append(_burst(url, (real if repeat == 0 else []) + fill, headers, sessions))
        sample_ids = list(round_obj.selections.values_list("sample_id", flat=True))

        t0 = time.perf_counter()
        procs.append(start_worker(env, work / "worker.log", f"bench-{os.getpid()}", queues="default",
                                  pool="threads", concurrency=4, loglevel="WARNING"))  # fmt: skip
        sent = len(warm) + len(solo_ms) + repeats * CONCURRENCY

        def settled() -> bool:
            deliveries = WebhookDelivery.objects.filter(ls_project_id=project.ls_project_id)
            return (
                deliveries.count() >= sent
                and not deliveries.filter(status=WebhookDelivery.Status.PENDING).exists()
            )

        wait_until(settled, 900, what="all deliveries settled")
        sync_s = time.perf_counter() - t0
        stored = Mask.objects.filter(sample_id__in=sample_ids, ls_annotation_id__isnull=False).count()
        duplicates = stored - len(
            {*Mask.objects.filter(sample_id__in=sample_ids).values_list("ls_annotation_id", flat=True)}
        )
        exact = 0
        from labeling.masks import read_mask_png

        for mask in Mask.objects.filter(sample_id__in=sample_ids).select_related("sample"):
            got = read_mask_png(media / mask.path)
            exact += int(np.array_equal(got, read_mask_png(media / mask.sample.gt_mask_path)))
        ratios = [r["per_s"] / t["per_s"] for r, t in zip(receiver, trivial, strict=True)]
        p95_ratios = [r["p95_ms"] / t["p95_ms"] for r, t in zip(receiver, trivial, strict=True)]
        ratio, p95_ratio = float(np.median(ratios)), float(np.median(p95_ratios))
        lost = len(real) - stored
        non_200 = sum(b["requests"] - b["http_200"] for b in receiver + trivial)
        return {
            "goals": {
                "ratio_to_trivial": {"goal": ">= 0.8", "value": round(ratio, 3), "meets_goal": ratio >= 0.8},
                "p95_ratio_to_trivial": {
                    "goal": "<= 1.25",
                    "value": round(p95_ratio, 3),
                    "meets_goal": p95_ratio <= 1.25,
                },
                "lost": {"goal": "== 0", "value": lost, "meets_goal": lost == 0},
                "duplicates": {"goal": "== 0", "value": duplicates, "meets_goal": duplicates == 0},
            },
            "ratio_to_trivial": round(ratio, 3),
            "p95_ratio_to_trivial": round(p95_ratio, 3),
            "burst_spread": round(max(ratios) - min(ratios), 3),
            "ratios": [round(x, 3) for x in ratios],
            "p95_ratios": [round(x, 3) for x in p95_ratios],
            "receiver_bursts": receiver,
            "trivial_bursts": trivial,
            "deliveries": len(real),
            "burst": CONCURRENCY,
            "non_200": non_200,
            "stored": stored,
            "lost": lost,
            "duplicates": duplicates,
            "exact": exact,
            "p95_receipt_ms": receiver[0]["p95_ms"],
            "sequential_p50_receipt_ms": round(float(np.percentile(solo_ms, 50)), 1),
            "sequential_p95_receipt_ms": round(float(np.percentile(solo_ms, 95)), 1),
            "sync_s": round(sync_s, 2),
            "sync_per_s": round(sent / sync_s, 2),
            "web": "gunicorn 2x16 gthread",
            "worker": "1 celery process, 4 threads, started after the bursts",
        }
    finally:
        stop_processes(procs)
        delete_keys(scratch_redis, prefix)
        labelstudio.close()
        if dataset is not None:
            dataset.delete()
        shutil.rmtree(work, ignore_errors=True)
