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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCENARIO = "ls_outage"
ROOT = Path(__file__).resolve().parents[2]
BENCH_REDIS_DB = "13"


def dead_url() -> str:
    """A webhook URL where nothing listens (the platform 'down' as Label Studio sees it)."""
    from bench.faults.pg_drop import free_port

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


def _wait(predicate, timeout: float, what: str, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def run(quick: bool) -> dict:
    from bench.faults.pg_drop import free_port, private_database, start_web, stop_process, web_env
    from bench.webhooks import _ls_start, _ls_stop, _make_round, _up

    count = 12 if quick else 60
    outage_s = 5.0 if quick else 20.0
    base_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    work = Path(tempfile.mkdtemp(prefix="bench-faults-ls-"))
    media = work / "media"
    media.mkdir()
    ls_home = ROOT / "var" / "labelstudio" / f"bench-faults-{os.getpid()}"
    ls_port, web_port = free_port(), free_port()
    secret = secrets.token_hex(16)
    procs: list[subprocess.Popen] = []
    web = None
    with private_database(base_url) as (_dbname, db_url):
        try:
            _ls_start(ls_home, ls_port, media)
            ls_url = f"http://127.0.0.1:{ls_port}"
            token = (ls_home / "admin_token").read_text().strip()
            hook_url = f"http://127.0.0.1:{web_port}/api/v1/labeling/webhook"
            redis_base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
            redis_url = redis_base.rsplit("/", 1)[0] + f"/{BENCH_REDIS_DB}"
            shared = {
                "LABEL_STUDIO_URL": ls_url,
                "LABEL_STUDIO_TOKEN": token,
                "WEBHOOK_SECRET": secret,
                "LABELING_WEBHOOK_URL": hook_url,
                "REDIS_URL": redis_url,
                "CELERY_KEY_PREFIX": f"bench-faults-ls-{os.getpid()}:",
                "LABELING_RECONCILE_SECONDS": "5",
            }
            os.environ.update({**shared, "DATABASE_URL": db_url, "MEDIA_ROOT": str(media)})
            for key in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
                os.environ.pop(key, None)
            env = web_env(database_url=db_url, media_root=media, extra={**shared, "LOG_LEVEL": "INFO"})
            log = open(work / "services.log", "ab")  # noqa: SIM115 - closed with the processes
            web = start_web(env, web_port, work / "web.log")
            procs.append(web)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", "default",
                 "--pool=threads", "--concurrency=2", "-n", f"bench-faults-ls-{os.getpid()}@%h",
                 "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            ))  # fmt: skip
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat", "--loglevel=INFO",
                 "-s", str(work / "celerybeat-schedule")],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            ))  # fmt: skip

            from bench.common import django_setup

            django_setup(migrate=False)
            from django.conf import settings

            settings.MEDIA_ROOT = media
            settings.LABEL_STUDIO_URL, settings.LABEL_STUDIO_TOKEN = ls_url, token
            settings.WEBHOOK_SECRET, settings.LABELING_WEBHOOK_URL = secret, hook_url

            from labeling.client import LabelStudioClient
            from labeling.models import LabelingProject, WebhookDelivery
            from labeling.oracle import oracle_answer
            from labeling.provisioning import round_push_tasks

            client = LabelStudioClient(url=ls_url, token=token)
            _dataset, round_obj = _make_round(media, count)
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
            _wait(lambda: masks_stored() >= third, 120, "the webhook masks")
            _ls_stop(ls_home)
            down_at = time.monotonic()
            accepted = deliver(hook_url, secret, late)
            _wait(
                lambda: LabelingProject.objects.get(pk=project.pk).sync_state == "degraded",
                60,
                "reconciliation to notice the outage",
            )
            during = {
                "stored": masks_stored(),
                "deliveries": {
                    s: WebhookDelivery.objects.filter(ls_project_id=project.ls_project_id, status=s).count()
                    for s in ("stored", "pending", "rejected", "deleted")
                },
            }
            time.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))
            _ls_restart(ls_home, ls_port, media)  # same home and data: only the process was down
            _wait(lambda: _up(f"{ls_url}/health"), 120, "Label Studio")
            back_at = time.monotonic()
            outage = back_at - down_at
            oracle_answer(round_id=round_obj.pk, client=client)
            _wait(lambda: masks_stored() >= count, 300, "every mask")
            seconds_to_recover = time.monotonic() - back_at
            _wait(
                lambda: (
                    not WebhookDelivery.objects.filter(
                        ls_project_id=project.ls_project_id, status="pending"
                    ).exists()
                ),
                300,
                "every delivery settled",
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
            for proc in reversed(procs):
                if proc is web:
                    stop_process(proc)  # its own process group (gunicorn master + worker)
                else:
                    _stop(proc)
            _ls_stop(ls_home)
            import shutil

            shutil.rmtree(ls_home, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()


def _ls_restart(home: Path, port: int, media: Path) -> None:
    """Start the stopped server again on its own data (``bench.webhooks._ls_start`` would reset it)."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"LS_HOME": str(home), "LS_PORT": str(port), "MEDIA_ROOT": str(media)})
    subprocess.run(
        ["bash", str(ROOT / "deploy" / "labelstudio" / "ls.sh"), "start"], env=env, check=True, timeout=900
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
