"""Webhook receipt and mask sync throughput: ``python -m bench webhooks [--quick]``.

Everything is real and on loopback: a Label Studio server (its own copy of the migrated test template,
free port), the platform behind gunicorn (2 processes x 16 threads, as deployed), one Celery worker
process (4 threads) on a private Redis database + key prefix, PostgreSQL from DATABASE_URL.

1. A round of N samples (200, quick 20) is pushed to Label Studio; the project's webhook is removed and
   the oracle answers every task (N real annotations with ground-truth brush masks).
2. N webhook deliveries (the real annotation payloads) are fired at the receiver at once from N
   threads (bounded to 200) and the receipt latency of each is measured.
3. The worker fetches each annotation from Label Studio, decodes it and stores the mask; we wait
   until every delivery is settled.

Reports ``deliveries``, ``stored`` (Mask rows created), ``lost`` (deliveries without a mask; must be 0),
``p50/p95/max_receipt_ms`` (goal p95 < 200 ms), ``sync_per_s`` (masks stored per second from the first
delivery to the last mask) and ``exact`` (masks equal to the ground truth). The machine is shared, so
the absolute numbers are noise-prone; ``lost`` and ``exact`` are the invariants.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LS_SCRIPT = ROOT / "deploy" / "labelstudio" / "ls.sh"
TEMPLATE = ROOT / "var" / "labelstudio" / "test"
BENCH_REDIS_DB = "14"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _django() -> None:
    from bench.common import django_setup

    django_setup()


def _ls_start(home: Path, port: int, media: Path) -> None:
    """A Label Studio of our own: a copy of the migrated template when there is one (seconds, not minutes)."""
    template_db = TEMPLATE / "data" / "label_studio.sqlite3"
    (home / "data").mkdir(parents=True, exist_ok=True)
    if template_db.is_file() and (TEMPLATE / "ready").is_file():
        with (
            sqlite3.connect(template_db) as src,
            sqlite3.connect(home / "data" / "label_studio.sqlite3") as dst,
        ):
            src.backup(dst)
        for name in ("admin_token", "admin_password", "secret_key"):
            shutil.copy2(TEMPLATE / name, home / name)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"LS_HOME": str(home), "LS_PORT": str(port), "MEDIA_ROOT": str(media)})
    subprocess.run(["bash", str(LS_SCRIPT), "start"], env=env, check=True, timeout=900)


def _ls_stop(home: Path) -> None:
    subprocess.run(["bash", str(LS_SCRIPT), "stop"], env={**os.environ, "LS_HOME": str(home)}, check=False)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def _make_round(media: Path, count: int):
    import numpy as np
    from PIL import Image

    from catalog.models import Dataset, Sample
    from rounds.models import Round, Selection

    name = f"bench-webhooks-{uuid.uuid4().hex[:8]}"
    dataset = Dataset.objects.create(name=name)
    rng = np.random.default_rng(0)
    for index in range(count):
        rel, gt_rel = f"{name}/img/{index:04d}.png", f"{name}/gt/{index:04d}.png"
        for path in (media / rel, media / gt_rel):
            path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(media / rel)
        gt = np.zeros((64, 64), np.uint8)
        y, x = rng.integers(0, 32, 2)
        gt[y : y + 24, x : x + 20] = 255
        Image.fromarray(gt).save(media / gt_rel)
        sample = Sample.objects.create(
            dataset=dataset, external_id=f"s{index}", path=rel, sha256="0" * 64, width=64, height=64,
            label="fake", split="train", gt_mask_path=gt_rel,
        )  # fmt: skip
        if index == 0:
            round_obj = Round.objects.create(dataset=dataset, number=1, state="annotating")
        Selection.objects.create(
            round=round_obj, sample=sample, score=0.5, rank=index + 1, scores={"prob": 0.5}
        )
    return dataset, round_obj


def run(quick: bool) -> dict:
    import numpy as np
    import requests
    from django.conf import settings

    _django()
    count = 20 if quick else 200
    work = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    media, ls_home = work / "media", ROOT / "var" / "labelstudio" / f"bench-{os.getpid()}"
    ls_port, web_port = _free_port(), _free_port()
    token_file = ls_home / "admin_token"
    secret = secrets.token_hex(16)
    procs: list[subprocess.Popen] = []
    dataset = None
    try:
        _ls_start(ls_home, ls_port, media)
        settings.MEDIA_ROOT = media
        settings.LABEL_STUDIO_URL = f"http://127.0.0.1:{ls_port}"
        settings.LABEL_STUDIO_TOKEN = token_file.read_text().strip()
        settings.WEBHOOK_SECRET = secret
        settings.LABELING_WEBHOOK_URL = f"http://127.0.0.1:{web_port}/api/v1/labeling/webhook"
        redis_url = settings.REDIS_URL.rsplit("/", 1)[0] + f"/{BENCH_REDIS_DB}"
        env = {
            **os.environ,
            "DATABASE_URL": settings.DATABASE_URL,
            "REDIS_URL": redis_url,
            "CELERY_KEY_PREFIX": f"bench-webhooks-{os.getpid()}:",
            "MEDIA_ROOT": str(media),
            "LABEL_STUDIO_URL": settings.LABEL_STUDIO_URL,
            "LABEL_STUDIO_TOKEN": settings.LABEL_STUDIO_TOKEN,
            "WEBHOOK_SECRET": secret,
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}",
        }
        env.pop("CELERY_BROKER_URL", None)
        env.pop("CELERY_RESULT_BACKEND", None)
        logs = open(work / "services.log", "wb")  # noqa: SIM115 - closed with the processes
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "forgery_site.wsgi", "-b", f"127.0.0.1:{web_port}",
             "-w", "2", "-k", "gthread", "--threads", "16", "--backlog", "512"],
            cwd=ROOT, env=env, stdout=logs, stderr=subprocess.STDOUT,
        ))  # fmt: skip
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", "default",
             "--pool=threads", "--concurrency=4", "-n", f"bench-{os.getpid()}@%h", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "--loglevel=WARNING"],
            cwd=ROOT, env=env, stdout=logs, stderr=subprocess.STDOUT,
        ))  # fmt: skip
        _wait(lambda: _up(f"http://127.0.0.1:{web_port}/health"), 60, "gunicorn")

        from catalog.models import Mask
        from labeling.client import LabelStudioClient
        from labeling.models import LabelingProject, WebhookDelivery
        from labeling.oracle import oracle_answer
        from labeling.provisioning import round_push_tasks

        client = LabelStudioClient(url=settings.LABEL_STUDIO_URL, token=settings.LABEL_STUDIO_TOKEN)
        dataset, round_obj = _make_round(media, count)
        round_push_tasks(round_id=round_obj.pk, client=client)
        project = LabelingProject.objects.get(round=round_obj)
        client.webhook_delete(project.ls_webhook_id)  # deliveries below are the only ones
        oracle_answer(round_id=round_obj.pk, client=client)
        annotations = [
            a for t in client.tasks_iter(project_id=project.ls_project_id) for a in t["annotations"]
        ]
        bodies = [
            {"action": "ANNOTATION_CREATED", "annotation": a, "project": {"id": project.ls_project_id}}
            for a in annotations
        ]
        url = settings.LABELING_WEBHOOK_URL
        headers = {"X-Forgerylab-Webhook-Secret": secret}
        session_local = threading.local()

        def deliver(body: dict) -> tuple[int, float]:
            session = getattr(session_local, "s", None) or requests.Session()
            session_local.s = session
            try:
                barrier.wait(timeout=30)
            except threading.BrokenBarrierError:
                pass
            started = time.perf_counter()
            answer = session.post(url, json=body, headers=headers, timeout=30)
            return answer.status_code, (time.perf_counter() - started) * 1000

        # Warm-up (not measured): the first requests of each gunicorn process import DRF, the Celery app
        # and open broker connections. These name annotations that do not exist: settled as "deleted".
        warm = [
            {"action": "ANNOTATION_CREATED", "annotation": {"id": 10**12 + i, "updated_at": "warm"},
             "project": {"id": project.ls_project_id}}
            for i in range(32)
        ]  # fmt: skip
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda b: requests.post(url, json=b, headers=headers, timeout=60), warm))
        # One at a time (same path: insert + enqueue): the receiver's own cost, without queueing.
        solo = [
            {**b, "annotation": {**b["annotation"], "id": 2 * 10**12 + i}} for i, b in enumerate(warm[:20])
        ]
        solo_ms = []
        for body in solo:
            started = time.perf_counter()
            requests.post(url, json=body, headers=headers, timeout=60)
            solo_ms.append((time.perf_counter() - started) * 1000)
        warm += solo
        barrier = threading.Barrier(min(len(bodies), 200))
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=min(len(bodies), 200)) as pool:
            replies = list(pool.map(deliver, bodies))
        sample_ids = list(round_obj.selections.values_list("sample_id", flat=True))

        def settled() -> bool:
            return not WebhookDelivery.objects.filter(
                ls_project_id=project.ls_project_id, status=WebhookDelivery.Status.PENDING
            ).exists() and WebhookDelivery.objects.filter(ls_project_id=project.ls_project_id).count() >= len(
                bodies
            )

        _wait(settled, 600, "all deliveries settled")
        sync_s = time.perf_counter() - t0
        stored = Mask.objects.filter(sample_id__in=sample_ids, ls_annotation_id__isnull=False).count()
        exact = 0
        from labeling.masks import read_mask_png

        for mask in Mask.objects.filter(sample_id__in=sample_ids).select_related("sample"):
            got = read_mask_png(media / mask.path)
            exact += int(np.array_equal(got, read_mask_png(media / mask.sample.gt_mask_path)))
        latencies = np.array([ms for _, ms in replies])
        p95 = float(np.percentile(latencies, 95))
        return {
            "goals": {
                "p95_receipt_ms": {"goal": "<= 200", "value": round(p95, 1), "meets_goal": p95 <= 200},
                "lost": {"goal": "== 0", "value": len(bodies) - stored, "meets_goal": stored == len(bodies)},
            },
            "deliveries": len(bodies),
            "concurrency": min(len(bodies), 200),
            "http_200": sum(1 for code, _ in replies if code == 200),
            "stored": stored,
            "lost": len(bodies) - stored,
            "exact": exact,
            "p50_receipt_ms": round(float(np.percentile(latencies, 50)), 1),
            "p95_receipt_ms": round(float(np.percentile(latencies, 95)), 1),
            "max_receipt_ms": round(float(latencies.max()), 1),
            "sequential_p50_receipt_ms": round(float(np.percentile(solo_ms, 50)), 1),
            "sequential_p95_receipt_ms": round(float(np.percentile(solo_ms, 95)), 1),
            "sync_s": round(sync_s, 2),
            "sync_per_s": round(stored / sync_s, 2),
            "web": "gunicorn 2x16 gthread",
            "worker": "1 celery process, 4 threads",
        }
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        _ls_stop(ls_home)
        shutil.rmtree(ls_home, ignore_errors=True)
        if dataset is not None:
            dataset.delete()
        shutil.rmtree(work, ignore_errors=True)


def _up(url: str) -> bool:
    import requests

    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
