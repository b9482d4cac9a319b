"""Fault scenario ``ls_outage``: the platform and then Label Studio go down in the middle of a mask sync.

Everything is real and on loopback: a Label Studio server of our own (a copy of the migrated test
template, free port), the platform behind gunicorn, one Celery worker and Celery beat (reconciliation
every ``LABELING_RECONCILE_SECONDS``=5 s) on a private Redis database + key prefix, a private PostgreSQL
database (migrated, dropped afterwards). A round of N samples (quick 12, full 60) is pushed to Label
Studio and the oracle annotator answers through Label Studio's API:

1. the first third while the platform is unreachable for webhooks (the webhook points at a closed port):
   those webhooks are lost;
2. the second third with webhooks flowing;
3. Label Studio is stopped; the lost webhooks of step 1 are delivered late (the worker cannot fetch the
   annotations: the deliveries retry) and reconciliation fails for ``outage_s`` seconds;
4. Label Studio comes back; the last third is answered.

``seconds_to_recover``: from Label Studio answering again to the last mask stored. ``lost``: samples
without their mask + duplicated Mask versions + masks that differ from the ground truth + deliveries
rejected or still pending after settling. The functions (``point_webhook``, ``webhook_bodies``,
``deliver``, ``mask_report``) are shared with ``tests/labelstudio/test_faults_labelstudio.py``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from bench.harness.brokers import DEFAULT_REDIS_URL, delete_keys, redis_db_url
from bench.harness.databases import base_url, private_database
from bench.harness.labelstudio import LabelStudio
from bench.harness.ports import free_port
from bench.harness.processes import ROOT, start_beat, start_web, start_worker, stop_processes, web_env
from bench.harness.waits import http_ok, wait_until

SCENARIO = "ls_outage"
BENCH_REDIS_DB = "13"


def dead_url() -> str:
    """A webhook URL where nothing listens (the platform 'down' as Label Studio sees it)."""
    return f"http://127.0.0.1:{free_port()}/api/v1/labeling/webhook"


def point_webhook(client, project, url: str) -> int:
    """Replace the project's Label Studio webhook by one to ``url`` (same secret and actions)."""
    from labeling.client import LabelStudioRejected
    from labeling.models import LabelingProject
    from labeling.provisioning import webhook_secret

    if project.ls_webhook_id:
        with contextlib.suppress(LabelStudioRejected):
            client.webhook_delete(project.ls_webhook_id)
    hook = client.webhook_create(project_id=project.ls_project_id, url=url, secret=webhook_secret())
    LabelingProject.objects.filter(pk=project.pk).update(ls_webhook_id=hook)
    project.ls_webhook_id = hook
    return hook


def webhook_bodies(client, project) -> list[dict]:
    """The ANNOTATION_CREATED bodies Label Studio sends, for every annotation of the project now."""
    bodies = []
    for task in client.tasks_iter(project_id=project.ls_project_id):
        for annotation in task.get("annotations") or []:
            annotation.setdefault("task", task["id"])
            bodies.append(
                {
                    "action": "ANNOTATION_CREATED",
                    "annotation": annotation,
                    "project": {"id": project.ls_project_id},
                }
            )
    return bodies


def deliver(url: str, secret: str, bodies: list[dict]) -> int:
    """POST webhook bodies to the platform as Label Studio does; returns how many were accepted."""
    import requests

    from labeling.client import WEBHOOK_SECRET_HEADER

    accepted = 0
    with requests.Session() as session:
        for body in bodies:
            answer = session.post(url, json=body, headers={WEBHOOK_SECRET_HEADER: secret}, timeout=30)
            answer.raise_for_status()
            accepted += int(answer.json().get("accepted", 0))
    return accepted


def mask_report(media_root: Path, samples) -> dict:
    """One annotation per sample: exactly one Mask version each, equal to the ground truth."""
    import numpy as np
    from PIL import Image

    from catalog.models import Mask

    report = {"missing": 0, "duplicated": 0, "wrong": 0}
    for sample in samples:
        rows = list(Mask.objects.filter(sample_id=sample.pk).order_by("-version"))
        if not rows:
            report["missing"] += 1
            continue
        report["duplicated"] += len(rows) - 1
        stored = np.asarray(Image.open(Path(media_root) / rows[0].path).convert("L")) >= 128
        if sample.gt_mask_path:
            truth = np.asarray(Image.open(Path(media_root) / sample.gt_mask_path).convert("L")) >= 128
        else:
            truth = np.zeros((sample.height, sample.width), bool)
        report["wrong"] += int(not np.array_equal(stored, truth))
    return report


def run(quick: bool) -> dict:
    from bench.common import labeling_round

    count = 12 if quick else 60
    outage_s = 5.0 if quick else 20.0
    work = Path(tempfile.mkdtemp(prefix="bench-faults-ls-"))
    media = work / "media"
    media.mkdir()
    labelstudio = LabelStudio(ROOT / "var" / "labelstudio" / f"bench-faults-{os.getpid()}", media)
    web_port = free_port()
    secret = secrets.token_hex(16)
    procs = []
    redis_url = redis_db_url(os.environ.get("REDIS_URL", DEFAULT_REDIS_URL), BENCH_REDIS_DB)
    prefix = f"bench-faults-ls-{os.getpid()}:"
    with private_database(base_url()) as (_dbname, db_url):
        try:
            labelstudio.start()
            ls_url, token = labelstudio.url, labelstudio.token
            hook_url = f"http://127.0.0.1:{web_port}/api/v1/labeling/webhook"
            shared = {
                "LABEL_STUDIO_URL": ls_url,
                "LABEL_STUDIO_TOKEN": token,
                "WEBHOOK_SECRET": secret,
                "LABELING_WEBHOOK_URL": hook_url,
                "REDIS_URL": redis_url,
                "CELERY_KEY_PREFIX": prefix,
                "LABELING_RECONCILE_SECONDS": "5",
            }
            os.environ.update({**shared, "DATABASE_URL": db_url, "MEDIA_ROOT": str(media)})
            for key in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
                os.environ.pop(key, None)
            env = web_env(database_url=db_url, media_root=media, **shared, LOG_LEVEL="INFO")
            procs.append(start_web(env, web_port, work / "web.log", args=("--timeout", "120")))
            procs.append(start_worker(env, work / "services.log", f"bench-faults-ls-{os.getpid()}",
                                      queues="default", pool="threads", concurrency=2))  # fmt: skip
            procs.append(start_beat(env, work / "beat", work / "services.log"))

            from bench.common import django_setup

            django_setup(migrate=False, scratch=False)  # the private database, migrated already
            from django.conf import settings

            settings.MEDIA_ROOT = media
            settings.LABEL_STUDIO_URL, settings.LABEL_STUDIO_TOKEN = ls_url, token
            settings.WEBHOOK_SECRET, settings.LABELING_WEBHOOK_URL = secret, hook_url

            from labeling.client import LabelStudioClient
            from labeling.models import LabelingProject, WebhookDelivery
            from labeling.oracle import oracle_answer
            from labeling.provisioning import round_push_tasks

            client = LabelStudioClient(url=ls_url, token=token)
            _dataset, round_obj = labeling_round(media, count)
            samples = list(round_obj.selections.select_related("sample").order_by("rank"))
            samples = [s.sample for s in samples]
            round_push_tasks(round_id=round_obj.pk, client=client)
            project = LabelingProject.objects.get(round=round_obj)
            third = count // 3
            from catalog.models import Mask

            def masks_stored() -> int:
                return Mask.objects.filter(sample__in=samples).count()

            point_webhook(client, project, dead_url())
            oracle_answer(round_id=round_obj.pk, client=client, limit=third)
            late = webhook_bodies(client, project)
            point_webhook(client, project, hook_url)
            oracle_answer(round_id=round_obj.pk, client=client, limit=third)
            wait_until(lambda: masks_stored() >= third, 120, 0.3, what="the webhook masks")
            labelstudio.stop()
            down_at = time.monotonic()
            accepted = deliver(hook_url, secret, late)
            wait_until(
                lambda: LabelingProject.objects.get(pk=project.pk).sync_state == "degraded",
                60,
                0.3,
                what="reconciliation to notice the outage",
            )
            during = {
                "stored": masks_stored(),
                "deliveries": {
                    s: WebhookDelivery.objects.filter(ls_project_id=project.ls_project_id, status=s).count()
                    for s in ("stored", "pending", "rejected", "deleted")
                },
            }
            time.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))
            labelstudio.start(fresh=False)  # same home and data: only the process was down
            wait_until(lambda: http_ok(f"{ls_url}/health"), 120, 0.3, what="Label Studio")
            back_at = time.monotonic()
            outage = back_at - down_at
            oracle_answer(round_id=round_obj.pk, client=client)
            wait_until(lambda: masks_stored() >= count, 300, 0.3, what="every mask")
            seconds_to_recover = time.monotonic() - back_at
            wait_until(
                lambda: (
                    not WebhookDelivery.objects.filter(
                        ls_project_id=project.ls_project_id, status="pending"
                    ).exists()
                ),
                300,
                0.3,
                what="every delivery settled",
            )
            time.sleep(6)  # one more reconciliation pass: nothing may be stored twice
            report = mask_report(media, samples)
            statuses = {
                s: WebhookDelivery.objects.filter(ls_project_id=project.ls_project_id, status=s).count()
                for s in ("stored", "unchanged", "rejected", "deleted", "pending")
            }
            project.refresh_from_db()
            lost = report["missing"] + report["duplicated"] + report["wrong"] + statuses["rejected"]
            lost += statuses["deleted"] + statuses["pending"]
            return {
                "recovered": lost == 0 and project.sync_state == "ok",
                "seconds_to_recover": round(seconds_to_recover, 2),
                "lost": lost,
                "annotations": count,
                "webhooks_lost_while_platform_down": len(late),
                "late_deliveries_accepted": accepted,
                "label_studio_down_s": round(outage, 2),
                "while_down": during,
                "masks": report,
                "deliveries": statuses,
                "sync_state": project.sync_state,
            }
        finally:
            stop_processes(reversed(procs))  # gunicorn with its process group (master + workers)
            labelstudio.close()
            with contextlib.suppress(Exception):  # the run's queues and results
                delete_keys(redis_url, prefix)
            shutil.rmtree(work, ignore_errors=True)
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
