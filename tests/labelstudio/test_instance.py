"""One Label Studio per install (``ls.sh``'s database record) and a platform that notices a reset or
replaced Label Studio (``labeling.instance``): no round fails, and re-provisioning loses no mask."""

from __future__ import annotations

import numpy as np
import pytest
from django.conf import settings

from tests.labelstudio.lsfixtures import latest_mask, make_round, spare_labelstudio

pytestmark = [pytest.mark.labelstudio, pytest.mark.django_db(transaction=True)]


def test_the_state_directory_decides_the_database_not_the_shell(labelstudio_server, platform_media_root):
    spare = spare_labelstudio(platform_media_root, "restart")
    try:
        spare.start()  # first start from a shell without DATABASE_URL: SQLite in its data/, recorded
        record = (spare.home / "database.env").read_text()
        assert "# key: sqlite:" in record and (spare.home / "database.env").stat().st_mode & 0o077 == 0
        project = spare.client().project_create(
            title="kept across restarts", description="", model_version="x"
        )
        spare.stop()
        refused = spare.script("start", extra_env={"DATABASE_URL": "postgresql://127.0.0.1:5432/test"},
                               check=False)  # fmt: skip
        assert (
            refused.returncode != 0 and "refusing to start" in refused.stderr and "sqlite:" in refused.stderr
        )
        spare.start(fresh=False)  # a plain shell again: the record decides, the same instance comes back
        assert spare.client().project_get(project)["title"] == "kept across restarts"
        assert "db=sqlite:" in spare.script("status").stdout
    finally:
        spare.close()


def test_a_reset_label_studio_is_noticed_and_reprovisioning_loses_no_mask(labeling_live, platform_media_root):
    from catalog.models import Mask
    from labeling.client import _cached
    from labeling.ingest import annotation_ingest
    from labeling.instance import WrongInstance, instance_check, instance_reprovision, instance_state
    from labeling.masks import brush_result
    from labeling.models import LabelingProject
    from labeling.provisioning import round_push_tasks
    from labeling.reconcile import project_reconcile
    from rounds.config import validate_config
    from rounds.models import AnnotationTask, Round
    from rounds.phases.common import RoundStopped
    from rounds.workflow import round_push

    client = labeling_live
    live, samples = make_round(platform_media_root, name="before-reset", fakes=3, reals=0,
                               config=validate_config({"labeling": "label_studio"}))  # fmt: skip
    round_push_tasks(round_id=live.pk, client=client)
    assert instance_check(client=client).current and instance_state()["state"] == "ok"
    first = AnnotationTask.objects.filter(round=live).order_by("pk").first()
    drawn = np.zeros((32, 40), bool)
    drawn[4:20, 6:30] = True
    created = client.annotation_create(task_id=first.ls_task_id, result=[brush_result(drawn)])
    annotation_ingest(client.annotation_get(created["id"]))
    masks_before = list(Mask.objects.filter(sample__dataset=live.dataset).values_list("pk", "path"))
    assert len(masks_before) == 1

    spare = spare_labelstudio(platform_media_root, "replaced")
    original_url = settings.LABEL_STUDIO_URL
    try:
        spare.start()  # an empty Label Studio, same admin token: what a restart on a new database gives
        settings.LABEL_STUDIO_URL = spare.url
        _cached.cache_clear()
        fresh = spare.client()
        waiting, _ = make_round(platform_media_root, name="after-reset", fakes=1, reals=0,
                                config=validate_config({"labeling": "label_studio"}))  # fmt: skip
        Round.objects.filter(pk=waiting.pk).update(state="selecting")
        with pytest.raises(RoundStopped):  # the push stops with the reason; the round does not fail
            round_push(round_id=waiting.pk)
        waiting.refresh_from_db()
        assert waiting.state == "selecting" and waiting.error == ""
        assert waiting.progress["labeling"]["state"] == "wrong_instance"
        assert "reset or replaced" in waiting.progress["labeling"]["reason"]
        assert instance_state()["state"] == "wrong_instance"
        from django.test import Client

        from tests.integration.rounds_helpers import make_user

        browser = Client()
        browser.force_login(make_user("instance-admin", "admin"))
        assert b'id="wrong-instance"' in browser.get("/").content  # said on the dashboard
        assert browser.get("/health").json()["details"]["label_studio"] == "wrong_instance"
        api = browser.get("/api/v1/labeling/instance").json()
        assert api["state"] == "wrong_instance" and api["url"] == spare.url
        with pytest.raises(WrongInstance):
            instance_check(client=fresh)
        project = LabelingProject.objects.get(round=live)
        assert project_reconcile(project=project, client=fresh)["wrong_instance"]  # nothing forgotten
        assert (
            list(Mask.objects.filter(sample__dataset=live.dataset).values_list("pk", "path")) == masks_before
        )
        Round.objects.filter(pk=waiting.pk).update(state="cancelled")  # keep the worker out of this test

        result = instance_reprovision(client=fresh)
        assert result["reprovisioned"] and live.pk in result["rounds"]
        assert instance_state()["state"] == "ok"
        new_project = LabelingProject.objects.get(round=live)
        tasks = fresh.tasks_brief(project_id=new_project.ls_project_id)
        assert sorted(t["data"]["sample_id"] for t in tasks) == sorted(s.pk for s in samples[1:])  # open ones
        first.refresh_from_db()
        assert first.status == "annotated" and first.ls_task_id < 0  # archived, not re-pushed
        assert (
            list(Mask.objects.filter(sample__dataset=live.dataset).values_list("pk", "path")) == masks_before
        )
        assert project_reconcile(project=new_project, client=fresh)["forgotten"] == 0
        row, mask = latest_mask(platform_media_root, samples[0])
        assert row.pk == masks_before[0][0] and mask.any()
        live.refresh_from_db()
        assert live.state == "annotating"
        # A new annotation in the new instance arrives as a new mask version, not as the old one's update.
        # (Its webhook is removed first: the test's worker still talks to the session's Label Studio.)
        fresh.webhook_delete(new_project.ls_webhook_id)
        open_task = AnnotationTask.objects.filter(round=live, ls_task_id__gt=0).order_by("pk").first()
        created = fresh.annotation_create(task_id=open_task.ls_task_id, result=[brush_result(drawn)])
        assert annotation_ingest(fresh.annotation_get(created["id"])) == "stored"
        assert Mask.objects.filter(sample__dataset=live.dataset).count() == 2
    finally:
        settings.LABEL_STUDIO_URL = original_url
        _cached.cache_clear()
        spare.close()
