"""Label Studio outages mid-sync, against a real Label Studio server, the live platform and a real worker.

The scenario (shared with ``bench/faults/ls_outage.py``):

1. the platform is unreachable for Label Studio's webhooks (the project's webhook points at a closed
   port) while the oracle answers the first tasks: those webhooks are lost;
2. the webhook is back; the next answers arrive by webhook and are stored;
3. Label Studio stops; the webhooks of step 1 arrive late (delivered while Label Studio is down, so the
   worker cannot fetch the annotations: the deliveries must stay pending and retry, not be rejected or
   taken for deletions) and reconciliation fails (sync "degraded");
4. Label Studio is back; the last tasks are answered; reconciliation and the retried deliveries must
   leave exactly one mask per annotation, equal to what was drawn, and no pending or rejected delivery.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.faults import ls_outage
from bench.harness.waits import wait_until
from tests.labelstudio.lsfixtures import gt_of, latest_mask, ls_script, make_round

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_label_studio_and_webhook_target_down_mid_sync_every_mask_recovered_once(
    labeling_live, platform_media_root, live_server, celery_worker_proc
):
    from django.conf import settings

    from catalog.models import Mask
    from labeling.deliveries import delivery_process
    from labeling.models import LabelingProject, WebhookDelivery
    from labeling.oracle import oracle_answer
    from labeling.provisioning import round_push_tasks
    from labeling.reconcile import project_reconcile
    from workers.tasks.labeling import project_reconcile_task, reconcile_task

    def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
        return wait_until(predicate, timeout, 0.3, what=what,
                          describe=lambda: f"--- worker log:\n{celery_worker_proc.log_tail(80)}")  # fmt: skip

    client = labeling_live
    round_obj, samples = make_round(platform_media_root, name="ls-outage", fakes=6, reals=2)
    round_push_tasks(round_id=round_obj.pk, client=client)
    project = LabelingProject.objects.get(round=round_obj)
    live_url = f"{live_server.url}/api/v1/labeling/webhook"

    # 1. the platform is down for Label Studio: these webhooks go nowhere
    ls_outage.point_webhook(client, project, ls_outage.dead_url())
    assert oracle_answer(round_id=round_obj.pk, client=client, limit=3)["answered"] == 3
    lost_webhooks = ls_outage.webhook_bodies(client, project)
    assert len(lost_webhooks) == 3
    assert not WebhookDelivery.objects.filter(ls_project_id=project.ls_project_id).exists()

    # 2. webhooks flow again
    ls_outage.point_webhook(client, project, live_url)
    assert oracle_answer(round_id=round_obj.pk, client=client, limit=2)["answered"] == 2
    wait_for(lambda: Mask.objects.filter(sample__in=samples).count() == 2, what="2 masks by webhook")

    # 3. Label Studio down: late webhooks cannot be fetched, reconciliation cannot read
    ls_script("stop")
    try:
        accepted = ls_outage.deliver(live_url, settings.WEBHOOK_SECRET, lost_webhooks)
        assert accepted == 3
        project_reconcile_task.delay(project.pk)  # fails, marks the sync degraded, retries with backoff
        wait_for(
            lambda: LabelingProject.objects.get(pk=project.pk).sync_state == "degraded",
            what="degraded sync state",
        )
        late_ids = [body["annotation"]["id"] for body in lost_webhooks]
        late = WebhookDelivery.objects.filter(ls_annotation_id__in=late_ids)
        wait_for(lambda: late.filter(attempts__gte=1).count() == 3, what="the late deliveries tried")
        statuses = set(
            WebhookDelivery.objects.filter(ls_project_id=project.ls_project_id).values_list(
                "status", flat=True
            )
        )
        assert statuses <= {"pending", "stored"}, statuses  # nothing rejected, nothing taken for a deletion
        assert set(late.values_list("status", flat=True)) == {"pending"}  # retried with backoff, not dropped
        assert Mask.objects.filter(sample__in=samples).count() == 2
    finally:
        ls_script("start", platform_media_root)

    # 4. back: the remaining answers arrive by webhook, the beat's reconciliation pass recovers the rest
    assert oracle_answer(round_id=round_obj.pk, client=client)["answered"] == 3
    reconcile_task.delay()  # what beat sends every LABELING_RECONCILE_SECONDS
    wait_for(lambda: Mask.objects.filter(sample__in=samples).count() >= 8, timeout=120, what="8 masks")
    # The late deliveries still retry with backoff (up to minutes); their next attempt is run here, as the
    # worker would: the annotation is already stored, so it settles without a second mask version.
    for delivery_id in late.filter(status="pending").values_list("pk", flat=True):
        assert delivery_process(delivery_id=delivery_id, client=client) in {"unchanged", "done"}
    pending = WebhookDelivery.objects.filter(ls_project_id=project.ls_project_id, status="pending")
    wait_for(lambda: not pending.exists(), timeout=120, what="the step-4 webhooks processed by the worker")
    project.refresh_from_db()
    assert project_reconcile(project=project, client=client)["stored"] == 0  # nothing left to recover
    project.refresh_from_db()
    assert project.sync_state == "ok" and project.sync_failures == 0
    report = ls_outage.mask_report(platform_media_root, samples)
    assert report == {"missing": 0, "duplicated": 0, "wrong": 0}, report
    for sample in samples:
        row, mask = latest_mask(platform_media_root, sample)
        assert row.ls_annotation_id and np.array_equal(mask, gt_of(platform_media_root, sample))
    rejected = WebhookDelivery.objects.filter(ls_project_id=project.ls_project_id, status="rejected")
    assert not rejected.exists(), list(rejected.values_list("message", flat=True))


def test_push_interrupted_after_label_studio_imported_the_tasks_loses_no_mask(
    labeling_live, platform_media_root, live_server
):
    """Label Studio imports a batch but its answer never arrives (it went down while answering): the
    push's transaction rolls back, so the platform records none of the tasks. Annotators still see and
    answer them in Label Studio; their webhooks name tasks the platform does not know. Reconciliation
    must adopt the tasks (by their sample id) and store every mask once; a later push imports nothing."""
    from catalog.models import Sample
    from labeling.client import LabelStudioClient, LabelStudioUnavailable
    from labeling.models import LabelingProject, WebhookDelivery
    from labeling.oracle import oracle_account, oracle_result
    from labeling.provisioning import round_push_tasks
    from labeling.reconcile import project_reconcile
    from rounds.models import AnnotationTask

    class AnswerLost(LabelStudioClient):
        def tasks_import(self, *, project_id, tasks):
            super().tasks_import(project_id=project_id, tasks=tasks)
            raise LabelStudioUnavailable("Label Studio unreachable: connection reset while answering")

    round_obj, samples = make_round(platform_media_root, name="ls-push-cut", fakes=3, reals=1)
    with pytest.raises(LabelStudioUnavailable):
        round_push_tasks(round_id=round_obj.pk, client=AnswerLost(url=labeling_live.url))
    assert not AnnotationTask.objects.filter(round=round_obj, ls_task_id__isnull=False).exists()
    project = LabelingProject.objects.get(round=round_obj)
    briefs = labeling_live.tasks_brief(project_id=project.ls_project_id)
    assert len(briefs) == 4

    oracle = oracle_account(client=labeling_live)
    for brief in briefs:
        sample = Sample.objects.get(pk=brief["data"]["sample_id"])
        labeling_live.annotation_create(
            task_id=brief["id"], result=oracle_result(sample), completed_by=oracle.ls_user_id
        )
    deliveries = WebhookDelivery.objects.filter(ls_project_id=project.ls_project_id)
    wait_until(lambda: deliveries.filter(status="rejected").count() == 4, 60, what="4 rejected deliveries")
    assert ls_outage.mask_report(platform_media_root, samples)["missing"] == 4  # what was lost before

    counts = project_reconcile(project=project, client=labeling_live)
    assert counts["adopted"] == 4 and counts["stored"] == 4 and counts["rejected"] == 0, counts
    assert ls_outage.mask_report(platform_media_root, samples) == {"missing": 0, "duplicated": 0, "wrong": 0}
    assert round_push_tasks(round_id=round_obj.pk, client=labeling_live)["imported"] == 0
    assert len(labeling_live.tasks_brief(project_id=project.ls_project_id)) == 4
    project.refresh_from_db()
    assert project_reconcile(project=project, client=labeling_live)["stored"] == 0


def test_annotation_stored_by_webhook_during_a_reconciliation_read_is_kept_once(
    labeling_live, platform_media_root
):
    """Reconciliation lists Label Studio; while the listing is on its way back an annotator submits and
    the webhook path stores the mask. The annotation is missing from the listing but is not deleted:
    it must not be forgotten (the sample would drop out of training) nor stored again on the next pass
    (a duplicate mask version). Found by the ls_outage benchmark (2 worker threads)."""
    from catalog.models import Sample
    from labeling.client import LabelStudioClient
    from labeling.ingest import annotation_ingest
    from labeling.models import AnnotationRecord, LabelingProject
    from labeling.oracle import oracle_account, oracle_answer, oracle_result
    from labeling.provisioning import round_push_tasks
    from labeling.reconcile import project_reconcile
    from rounds.models import AnnotationTask

    round_obj, samples = make_round(platform_media_root, name="ls-read-race", fakes=2, reals=0)
    round_push_tasks(round_id=round_obj.pk, client=labeling_live)
    project = LabelingProject.objects.get(round=round_obj)
    labeling_live.webhook_delete(project.ls_webhook_id)  # the webhook path is played by the test below
    assert oracle_answer(round_id=round_obj.pk, client=labeling_live, limit=1)["answered"] == 1
    assert project_reconcile(project=project, client=labeling_live)["stored"] == 1
    second = AnnotationTask.objects.get(round=round_obj, sample=samples[1])
    oracle = oracle_account(client=labeling_live)

    class WebhookDuringRead(LabelStudioClient):
        def tasks_iter(self, *, project_id, page_size=100):
            listing = super().tasks_iter(project_id=project_id, page_size=page_size)
            created = labeling_live.annotation_create(
                task_id=second.ls_task_id, result=oracle_result(samples[1]), completed_by=oracle.ls_user_id
            )
            assert annotation_ingest({**created, "project": project.ls_project_id}) == "stored"
            return listing

    project.refresh_from_db()
    counts = project_reconcile(project=project, client=WebhookDuringRead(url=labeling_live.url))
    assert counts["forgotten"] == 0, counts
    assert not AnnotationRecord.objects.filter(task=second, deleted=True).exists()
    assert Sample.objects.get(pk=samples[1].pk).has_mask
    project.refresh_from_db()
    assert project_reconcile(project=project, client=labeling_live)["stored"] == 0
    assert ls_outage.mask_report(platform_media_root, samples) == {"missing": 0, "duplicated": 0, "wrong": 0}
