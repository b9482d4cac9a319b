"""A whole round through the real Label Studio: the worker trains, scores and pushes the selection as
Label Studio tasks; the oracle annotator answers them through Label Studio's API; the webhooks bring the
masks back as Mask rows; the round retrains with them, evaluates and registers a DetectorVersion."""

from __future__ import annotations

import pytest

from bench.harness.waits import wait_until
from tests.integration.rounds_helpers import TINY_CONFIG, import_generated_dataset, make_user

pytestmark = [pytest.mark.integration, pytest.mark.labelstudio]


@pytest.mark.django_db(transaction=True)
def test_round_through_label_studio(labeling_live, platform_media_root, live_server, celery_worker_proc):
    from django.conf import settings

    from catalog.models import Mask
    from labeling.models import LabelingProject
    from labeling.oracle import oracle_answer
    from modelhub.models import DetectorVersion
    from rounds.launch import round_launch
    from rounds.models import AnnotationTask, Round
    from workers.enqueue import dispatch_round

    client = labeling_live
    dataset = import_generated_dataset(platform_media_root, "ls-round", count=64, size=32)
    admin = make_user("ls-round-admin", "admin")
    config = {**TINY_CONFIG, "detectors": ["lae"], "labeling": "label_studio", "budget_count": 3}
    round_ = round_launch(dataset=dataset, config=config, user=admin)
    dispatch_round(round_.pk)

    def describe():
        r = Round.objects.get(pk=round_.pk)
        return f"{r.state} {r.error[:800]} {r.progress}\n{celery_worker_proc.log_tail(30)}"

    wait_until(
        lambda: Round.objects.get(pk=round_.pk).state in ("annotating", "failed"), 240, what="annotating"
    )
    assert Round.objects.get(pk=round_.pk).state == "annotating", describe()
    tasks = AnnotationTask.objects.filter(round=round_, ls_task_id__isnull=False)
    assert tasks.count() == 3
    project = LabelingProject.objects.get(round=round_)
    assert len(client.tasks_brief(project_id=project.ls_project_id)) == 3
    # The detector's draft masks were written for the selection and ride along as brush predictions.
    drafts = list((platform_media_root / "rounds" / str(round_.pk) / "drafts").glob("*.png"))
    assert len(drafts) == 3
    assert Round.objects.get(pk=round_.pk).progress["labeling"]["drafts"] == 3
    for task in tasks:
        prediction = client.task_get(task.ls_task_id)["predictions"][0]
        assert 0.0 <= prediction["score"] <= 1.0
        brush = [r for r in prediction["result"] if r["type"] == "brushlabels"]
        assert all(r["value"]["rle"] for r in brush)

    # The session's worker started before the live server's port was known, so the project it created
    # points its webhook at the default URL; point it at this test's live server (what the deployment's
    # LABELING_WEBHOOK_URL does for real workers).
    client.webhook_delete(project.ls_webhook_id)
    project.ls_webhook_id = client.webhook_create(
        project_id=project.ls_project_id, url=settings.LABELING_WEBHOOK_URL, secret=settings.WEBHOOK_SECRET
    )
    project.save(update_fields=["ls_webhook_id"])

    assert oracle_answer(round_id=round_.pk, client=client)["answered"] == 3
    wait_until(lambda: Round.objects.get(pk=round_.pk).state in ("done", "failed"), 240, what="done")
    r = Round.objects.get(pk=round_.pk)
    assert r.state == "done", describe()
    masks = Mask.objects.filter(sample__annotation_tasks__round=r)
    assert masks.count() == 3 and all(m.ls_annotation_id for m in masks)  # came back from Label Studio
    assert (
        r.progress["annotation"]["masked"] == 3 and r.progress["phases"]["annotating"]["reason"] == "complete"
    )
    version = DetectorVersion.objects.get(round=r, kind="lae")
    assert sorted(version.config["lineage"]["masks"]) == sorted(masks.values_list("pk", flat=True))
    assert r.progress["metrics"]["lae"]["masks_used"] == 3
    # Draft quality: the drafts against the masks that came back through Label Studio and the ground truth.
    quality = r.progress["draft_quality"]
    assert quality["selected"] == 3
    for block in (quality["submitted"], quality["ground_truth"]):
        assert block["count"] + block["skipped"] == 3, quality
        assert set(block["skip_reasons"]) <= {"both_empty"}, quality
        assert block["count"] == 0 or (0.0 <= block["mean"] <= 1.0 and 0.0 <= block["median"] <= 1.0), quality
