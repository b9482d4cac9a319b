"""Against a real Label Studio server, the live platform server and a real Celery worker process.

selection -> tasks with drafted predictions -> oracle annotations -> webhooks -> Mask rows equal to the
ground truth; duplicates; reconciliation across a Label Studio outage; bad input; annotators; agreement.
"""

from __future__ import annotations

import io
import json
import time
import uuid

import numpy as np
import pytest
import requests
from PIL import Image

from bench.harness.waits import wait_until
from tests.labelstudio.lsfixtures import Person, gt_of, latest_mask, ls_script, make_round

pytestmark = [pytest.mark.labelstudio, pytest.mark.django_db(transaction=True)]


def _annotated(round_obj, count):
    from rounds.models import AnnotationTask

    def done():
        return AnnotationTask.objects.filter(round=round_obj, status="annotated").count() >= count

    return done


def test_selection_to_exact_masks_through_webhooks(labeling_live, platform_media_root, live_server):
    from catalog.models import Mask
    from labeling.masks import decode_brush_rle
    from labeling.models import LabelingProject, WebhookDelivery
    from labeling.oracle import oracle_answer
    from labeling.provisioning import round_push_tasks
    from rounds.models import AnnotationTask

    client = labeling_live
    round_obj, samples = make_round(platform_media_root, name="flow")
    draft = np.zeros((32, 40), np.uint8)
    draft[5:20, 6:30] = 255
    draft_path = platform_media_root / "rounds" / str(round_obj.pk) / "drafts" / f"{samples[0].pk}.png"
    draft_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draft).save(draft_path)

    first = round_push_tasks(round_id=round_obj.pk, client=client)
    assert first["imported"] == 4
    assert round_push_tasks(round_id=round_obj.pk, client=client)["imported"] == 0  # idempotent
    project = LabelingProject.objects.get(round=round_obj)
    assert client.project_get(project.ls_project_id)["model_version"] == project.model_version
    assert len(client.tasks_brief(project_id=project.ls_project_id)) == 4
    task0 = AnnotationTask.objects.get(round=round_obj, sample=samples[0])
    prediction = client.task_get(task0.ls_task_id)["predictions"][0]
    assert prediction["score"] == pytest.approx(max(0.45, 0.55))
    rle = prediction["result"][0]["value"]["rle"]
    assert np.array_equal(decode_brush_rle(rle, 40, 32), draft > 0)

    counts = oracle_answer(round_id=round_obj.pk, client=client)
    assert counts["answered"] == 4
    wait_until(_annotated(round_obj, 4), 60, what="4 annotated tasks")
    for sample in samples:
        row, mask = wait_until(
            lambda s=sample: latest_mask(platform_media_root, s)[0] and latest_mask(platform_media_root, s),
            60,
        )
        assert row.source == Mask.Source.ORACLE and row.ls_annotation_id
        assert np.array_equal(mask, gt_of(platform_media_root, sample)), sample.external_id
    assert oracle_answer(round_id=round_obj.pk, client=client)["already"] == 4

    # the same webhook delivered twice -> one delivery processed, one mask version
    annotation = client.annotations_list(task0.ls_task_id)[0]
    body = {
        "action": "ANNOTATION_CREATED",
        "annotation": annotation,
        "project": {"id": project.ls_project_id},
    }
    headers = {"X-Forgerylab-Webhook-Secret": labeling_live_secret()}
    url = f"{live_server.url}/api/v1/labeling/webhook"
    versions = Mask.objects.filter(sample=samples[0]).count()
    answers = [requests.post(url, json=body, headers=headers, timeout=10).json() for _ in range(2)]
    assert answers[0]["duplicates"] + answers[1]["duplicates"] >= 1
    assert WebhookDelivery.objects.filter(ls_annotation_id=annotation["id"]).count() == 1
    assert Mask.objects.filter(sample=samples[0]).count() == versions

    # an update in Label Studio -> a new version; a deletion -> the sample leaves the masked set
    smaller = gt_of(platform_media_root, samples[1]).copy()
    smaller[:, :10] = False
    from labeling.masks import brush_result

    task1 = AnnotationTask.objects.get(round=round_obj, sample=samples[1])
    ann1 = client.annotations_list(task1.ls_task_id)[0]
    client.annotation_update(ann1["id"], result=[brush_result(smaller)])
    wait_until(
        lambda: np.array_equal(latest_mask(platform_media_root, samples[1])[1], smaller),
        60,
        what="updated mask",
    )
    client.annotation_delete(ann1["id"])
    from catalog.models import Sample
    from labeling.models import AnnotationRecord
    from labeling.reconcile import project_reconcile

    project.refresh_from_db()
    project_reconcile(project=project, client=client)  # the deletion webhook or this, whichever is first
    wait_until(
        lambda: not Sample.objects.get(pk=samples[1].pk).has_mask, 60, what="deleted annotation forgotten"
    )
    assert AnnotationRecord.objects.get(ls_annotation_id=ann1["id"]).deleted
    assert project_reconcile(project=project, client=client)["stored"] == 0  # nothing resurrected


def labeling_live_secret() -> str:
    from django.conf import settings

    return settings.WEBHOOK_SECRET


def test_reconciliation_recovers_after_label_studio_outage(labeling_live, platform_media_root):
    from labeling.models import LabelingProject
    from labeling.oracle import oracle_answer
    from labeling.provisioning import round_push_tasks
    from workers.tasks.labeling import project_reconcile_task

    client = labeling_live
    round_obj, samples = make_round(platform_media_root, name="outage", fakes=3, reals=0)
    round_push_tasks(round_id=round_obj.pk, client=client)
    project = LabelingProject.objects.get(round=round_obj)
    client.webhook_delete(project.ls_webhook_id)  # every webhook of this project is now missed
    oracle_answer(round_id=round_obj.pk, client=client, dilate_px=1)
    ls_script("stop")
    try:
        result = project_reconcile_task.delay(project.pk)  # fails, marks degraded, retries with backoff
        wait_until(
            lambda: LabelingProject.objects.get(pk=project.pk).sync_state == "degraded",
            60,
            what="degraded sync state",
        )
    finally:
        ls_script("start", platform_media_root)
    counts = result.get(timeout=120)
    assert counts["stored"] == 3
    project.refresh_from_db()
    assert project.sync_state == "ok" and project.sync_failures == 0
    for sample in samples:
        _, mask = latest_mask(platform_media_root, sample)
        gt = gt_of(platform_media_root, sample)
        assert mask is not None and (mask >= gt).all() and mask.sum() > gt.sum()  # dilated by 1 px


def test_bad_input_is_refused_and_nothing_is_stored(labeling_live, platform_media_root, live_server):
    from catalog.models import Mask
    from labeling.masks import brush_result
    from labeling.models import LabelingProject, WebhookDelivery
    from labeling.provisioning import round_push_tasks
    from rounds.models import AnnotationTask

    client = labeling_live
    url = f"{live_server.url}/api/v1/labeling/webhook"
    good = {"X-Forgerylab-Webhook-Secret": labeling_live_secret()}
    body = {"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "task": 1}, "project": {"id": 1}}
    assert requests.post(url, json=body, timeout=10).status_code == 401
    assert (
        requests.post(url, json=body, headers={"X-Forgerylab-Webhook-Secret": "nope"}, timeout=10).status_code
        == 403
    )
    unknown = {**body, "project": {"id": 987654}}
    assert requests.post(url, json=unknown, headers=good, timeout=10).status_code == 404
    assert requests.post(url, json={"action": 3}, headers=good, timeout=10).status_code == 400
    malformed = {**body, "annotation": {"id": "x"}}
    assert requests.post(url, json=malformed, headers=good, timeout=10).status_code == 400

    round_obj, samples = make_round(platform_media_root, name="badinput", fakes=3, reals=0)
    round_push_tasks(round_id=round_obj.pk, client=client)
    project = LabelingProject.objects.get(round=round_obj)
    tasks = {t.sample_id: t for t in AnnotationTask.objects.filter(round=round_obj)}
    rle_result = brush_result(np.ones((32, 40), bool))
    broken = {**rle_result, "value": {**rle_result["value"], "rle": rle_result["value"]["rle"][:6]}}
    wrong_size = brush_result(np.ones((30, 40), bool))
    bad = [
        client.annotation_create(task_id=tasks[samples[0].pk].ls_task_id, result=[broken]),
        client.annotation_create(task_id=tasks[samples[1].pk].ls_task_id, result=[wrong_size]),
    ]
    # a task the platform never created, and one for a sample outside the round's selection
    stray = client.task_create(
        project_id=project.ls_project_id, data={"image": "x", "sample_id": samples[2].pk}
    )
    bad.append(client.annotation_create(task_id=stray, result=[rle_result]))
    from catalog.models import Sample

    outsider = Sample.objects.create(
        dataset=round_obj.dataset, external_id="out", path="datasets/badinput/images/out.png", sha256="0" * 64,
        width=40, height=32, label="fake",
    )  # fmt: skip
    outsider_task = client.task_create(
        project_id=project.ls_project_id, data={"image": "x", "sample_id": outsider.pk}
    )
    AnnotationTask.objects.create(
        round=round_obj, sample=outsider, ls_project_id=project.ls_project_id, ls_task_id=outsider_task
    )
    bad.append(client.annotation_create(task_id=outsider_task, result=[rle_result]))

    def settled():
        rows = WebhookDelivery.objects.filter(ls_annotation_id__in=[a["id"] for a in bad])
        return rows.count() == 4 and all(r.status == "rejected" for r in rows) and rows

    # "unsure" without a stroke is recorded (the sample stays in the pool for review), no mask
    unsure = client.annotation_create(
        task_id=tasks[samples[2].pk].ls_task_id,
        result=[
            {"from_name": "verdict", "to_name": "image", "type": "choices", "value": {"choices": ["unsure"]}}
        ],
    )
    from labeling.models import AnnotationRecord

    record = wait_until(
        lambda: AnnotationRecord.objects.filter(ls_annotation_id=unsure["id"]).first(), 60, what="unsure"
    )
    assert record.verdict == "unsure" and record.mask is None
    rows = {r.ls_annotation_id: r.message for r in wait_until(settled, 60, what="4 rejected deliveries")}
    messages = [rows[a["id"]] for a in bad]
    assert "decode" in messages[0] or "RLE" in messages[0]
    assert "40x30" in messages[1]
    assert "unknown Label Studio task" in messages[2]
    assert "not in round" in messages[3]
    assert not Mask.objects.filter(sample__dataset=round_obj.dataset).exists()


def test_annotators_join_through_the_invite_and_agreement_is_computed(labeling_live, platform_media_root):
    """Three annotators are created; each follows what the platform shows them (invite link, email),
    signs up with a password of their own, presses "I have signed up" and is linked; their masks on a
    3-annotator task give the agreement."""
    from rest_framework.test import APIClient

    from accounts.services import user_create
    from labeling.masks import brush_result
    from labeling.models import AnnotatorAccount, SampleAgreement
    from labeling.provisioning import round_push_tasks
    from rounds.models import AnnotationTask

    client = labeling_live
    tag = uuid.uuid4().hex[:6]  # Label Studio's users outlive the test database
    users = [user_create(username=f"ann{i}-{tag}", password="Annot8tor-pass", role="annotator", email=f"ann{i}-{tag}@t.local") for i in range(3)]  # fmt: skip
    accounts = wait_until(
        lambda: AnnotatorAccount.objects.filter(user__in=users, status="invited").count() == 3,
        60,
        what="invitations recorded by the worker",
    )
    assert not AnnotatorAccount.objects.filter(user__in=users, ls_user_id__isnull=False).exists()
    emails = {u["email"] for u in client.users_list()}
    assert not {u.email for u in users} & emails  # nobody was given an account they cannot log into
    for index, user in enumerate(users):
        api = APIClient()
        assert api.login(username=user.username, password="Annot8tor-pass")
        shown = api.get("/api/v1/labeling/me").json()
        assert shown["status"] == "invited" and shown["email"] == user.email and shown["invite_url"]
        person = Person(shown["email"], f"Own-Choice-{index}-pass")
        assert person.sign_up(shown["invite_url"])
        linked = api.post("/api/v1/labeling/me").json()
        assert linked["status"] == "joined" and linked["ls_user_id"]
        assert person.log_in()  # the password the person chose logs in
    accounts = list(AnnotatorAccount.objects.filter(user__in=users).order_by("user_id"))
    assert all(a.status == "joined" for a in accounts)

    round_obj, samples = make_round(
        platform_media_root, name="agree", fakes=1, reals=0, config={"annotators_per_task": 3}
    )
    round_push_tasks(round_id=round_obj.pk, client=client)
    task = AnnotationTask.objects.get(round=round_obj)
    base = np.zeros((32, 40), bool)
    drawn = [base.copy() for _ in range(3)]
    drawn[0][5:20, 5:20] = True
    drawn[1][5:20, 8:23] = True
    drawn[2][25:30, 30:38] = True  # the outlier
    by_user = {a.user_id: a.ls_user_id for a in accounts}
    for user, mask in zip(users, drawn, strict=True):
        client.annotation_create(
            task_id=task.ls_task_id, result=[brush_result(mask)], completed_by=by_user[user.pk]
        )
    agreement = wait_until(
        lambda: SampleAgreement.objects.filter(round=round_obj, annotators=3).first(),
        60,
        what="3-way agreement",
    )
    assert len(agreement.pairwise_iou) == 3
    assert agreement.low_agreement  # the outlier drags the mean IoU below 0.5
    row, consensus = latest_mask(platform_media_root, samples[0])
    assert row.pk == agreement.consensus_mask_id
    assert np.array_equal(consensus, drawn[0] & drawn[1])  # majority of 3


def test_annotator_lifecycle_remove_restore_and_password_reset(
    labeling_live, platform_media_root, celery_worker_proc
):
    """Losing the role removes the Label Studio membership (its projects answer 403); getting it back
    waits for the admin's restore, then links again; a forgotten password is reset by the admin
    command; ``labeling_annotator --password`` is gone (it never set a password that logs in)."""
    from django.contrib.auth.models import Group
    from django.core.management import CommandError, call_command

    from accounts.services import user_create
    from labeling.models import AnnotatorAccount
    from labeling.provisioning import annotator_link, invite_url, project_ensure

    client = labeling_live
    email = f"cycle-{uuid.uuid4().hex[:6]}@t.local"
    user = user_create(username="cycle", password="Cycle-pass-1", role="annotator", email=email)
    wait_until(lambda: AnnotatorAccount.objects.filter(user=user).exists(), 60, what="the invitation")
    person = Person(email, "Cycle-own-pass-1")
    assert person.sign_up(invite_url(client=client))
    assert annotator_link(user_id=user.pk, client=client).status == "joined"
    round_obj, _ = make_round(platform_media_root, name="cycle", fakes=1, reals=0)
    project = project_ensure(round_id=round_obj.pk, client=client)
    assert person.log_in() and person.project_status(project.ls_project_id) == 200

    user.groups.remove(Group.objects.get(name="annotator"))  # the admin takes the role away
    wait_until(
        lambda: AnnotatorAccount.objects.get(user=user).status == "removed", 60, what="membership removed"
    )
    assert person.project_status(project.ls_project_id) == 403
    assert email not in {u["email"] for u in client.users_list()}

    user.groups.add(Group.objects.get(name="annotator"))  # back: still removed until the admin restores
    time.sleep(2)
    assert annotator_link(user_id=user.pk, client=client).status == "removed"
    ls_script("restore-member", args=(email,))
    assert annotator_link(user_id=user.pk, client=client).status == "joined"
    assert person.log_in() and person.project_status(project.ls_project_id) == 200

    user.is_active = False  # deactivation removes the membership too
    user.save()
    wait_until(
        lambda: AnnotatorAccount.objects.get(user=user).status == "removed",
        60,
        what="removed on deactivation",
    )
    ls_script("restore-member", args=(email,))
    user.is_active = True
    user.save()
    wait_until(
        lambda: AnnotatorAccount.objects.get(user=user).status == "joined", 60, what="linked on reactivation"
    )

    ls_script("reset-password", args=(email,), extra_env={"LS_NEW_PASSWORD": "Reset-by-admin-9"})
    assert not person.log_in()
    assert Person(email, "Reset-by-admin-9").log_in()
    with pytest.raises(CommandError, match="unrecognized arguments"):
        call_command("labeling_annotator", "cycle", "--password", "anything")
    out = io.StringIO()
    call_command("labeling_annotator", "cycle", stdout=out)
    assert json.loads(out.getvalue())["status"] == "joined"
