"""The webhook receipt's dispatch: one SQL statement per delivery, at most a couple of dispatch tasks per
burst, and every pending delivery handed to exactly one delivery task (real PostgreSQL and Redis)."""

from __future__ import annotations

import threading

import pytest
from rest_framework.test import APIClient

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SECRET = "dispatch-test-secret-0123456789abcdef"


@pytest.fixture
def project(settings):
    from catalog.models import Dataset
    from labeling import apis
    from labeling.models import LabelingProject
    from rounds.models import Round

    settings.WEBHOOK_SECRET = SECRET
    apis._covered_until = 0.0
    # A dispatch flag another test's delivery set (it lives 250 ms) must not cover this test's first one.
    apis._flag().delete(apis.dispatch_flag_key())
    dataset = Dataset.objects.create(name="dispatch")
    round_ = Round.objects.create(dataset=dataset, number=1, state="annotating")
    return LabelingProject.objects.create(round=round_, ls_project_id=4242)


def _post(client: APIClient, body: dict):
    return client.post(
        "/api/v1/labeling/webhook", body, format="json", HTTP_X_FORGERYLAB_WEBHOOK_SECRET=SECRET
    )


def _delivery(annotation_id: int, project_id: int = 4242, stamp: str = "2026-12-01T10:00:00Z") -> dict:
    return {"action": "ANNOTATION_CREATED", "annotation": {"id": annotation_id, "updated_at": stamp},
            "project": {"id": project_id}}  # fmt: skip


def test_a_burst_is_recorded_row_by_row_and_schedules_one_dispatch(project, monkeypatch):
    from labeling.models import WebhookDelivery
    from workers import enqueue

    scheduled = []  # what the receipt sends (the broker itself is not part of this test)
    monkeypatch.setattr(enqueue, "publish", lambda name, **kw: scheduled.append({"name": name, **kw}))
    client = APIClient()
    answers = [_post(client, _delivery(1000 + i)) for i in range(40)]
    assert {a.status_code for a in answers} == {200}
    assert all(a.json() == {"accepted": 1, "duplicates": 0} for a in answers)
    rows = WebhookDelivery.objects.filter(ls_project_id=4242)
    assert rows.count() == 40 and set(rows.values_list("status", flat=True)) == {"pending"}
    assert not rows.filter(dispatched_at__isnull=False).exists()
    assert len(scheduled) == 1 and scheduled[0]["countdown"] > 0  # a burst, one dispatch (same process)
    assert scheduled[0]["name"] == "workers.tasks.labeling.webhook_dispatch_task" and scheduled[0]["quick"]

    again = _post(client, _delivery(1000))  # the same delivery again: a duplicate, nothing new
    assert again.json() == {"accepted": 0, "duplicates": 1}
    unknown = _post(client, _delivery(7, project_id=999))
    assert unknown.status_code == 404 and "unknown Label Studio project 999" in unknown.json()["detail"]
    deleted = _post(
        client, {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 1000}, {"id": 1001}, {"id": 1000}],
                 "project": {"id": 4242}},
    )  # fmt: skip
    assert deleted.json() == {"accepted": 2, "duplicates": 1}
    assert rows.count() == 42


def test_after_the_window_a_new_delivery_asks_redis_and_finds_the_flag(project, monkeypatch):
    from labeling import apis
    from workers import enqueue

    scheduled = []
    monkeypatch.setattr(enqueue, "publish", lambda name, **kw: scheduled.append({"name": name, **kw}))
    client = APIClient()
    _post(client, _delivery(1))
    assert len(scheduled) == 1
    apis._covered_until = 0.0  # as another web process would: it has not scheduled anything itself
    _post(client, _delivery(2))
    assert len(scheduled) == 1  # the flag is still set: the scheduled dispatch will see this row
    apis._covered_until = 0.0
    apis._flag().delete(apis.dispatch_flag_key())
    _post(client, _delivery(3))
    assert len(scheduled) == 2  # flag gone: this delivery schedules the next dispatch


def test_each_pending_delivery_is_claimed_once_even_by_concurrent_dispatchers(project):
    from django.db import connection

    from labeling.deliveries import deliveries_claim, deliveries_unclaim
    from labeling.models import WebhookDelivery

    WebhookDelivery.objects.bulk_create(
        WebhookDelivery(action="ANNOTATION_CREATED", ls_project_id=4242, ls_annotation_id=i)
        for i in range(1, 401)
    )
    WebhookDelivery.objects.filter(ls_annotation_id__lte=10).update(status="stored")  # settled: never claimed
    claimed: list[list[int]] = []
    barrier = threading.Barrier(4)

    def claim() -> None:
        barrier.wait()
        try:
            claimed.append(deliveries_claim(limit=50))
            while ids := deliveries_claim(limit=50):
                claimed.append(ids)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for ids in claimed for i in ids]
    pending = set(WebhookDelivery.objects.filter(status="pending").values_list("pk", flat=True))
    assert len(every) == len(set(every)) == 390 and set(every) == pending
    assert deliveries_claim() == []
    some = sorted(every)[:5]
    deliveries_unclaim(some)  # the broker failed while enqueueing these: the next dispatch takes them
    assert deliveries_claim() == some


def test_the_dispatch_task_hands_every_claimed_delivery_to_a_delivery_task(project, monkeypatch):
    from labeling.models import WebhookDelivery
    from workers.tasks.labeling import webhook_delivery_task, webhook_dispatch_task

    WebhookDelivery.objects.bulk_create(
        WebhookDelivery(action="ANNOTATION_CREATED", ls_project_id=4242, ls_annotation_id=i)
        for i in range(1, 31)
    )
    sent: list[int] = []

    def delay(delivery_id: int) -> None:
        if len(sent) == 12:
            sent.append(-1)
            raise ConnectionError("broker went away")
        sent.append(delivery_id)

    monkeypatch.setattr(webhook_delivery_task, "delay", delay)
    with pytest.raises(ConnectionError):
        webhook_dispatch_task.run()
    handed = [i for i in sent if i > 0]
    assert len(handed) == 12
    # What was not enqueued is given back, so the retry (or the next dispatch) sends it.
    assert WebhookDelivery.objects.filter(dispatched_at__isnull=True).count() == 18
    sent.clear()
    monkeypatch.setattr(webhook_delivery_task, "delay", sent.append)
    assert webhook_dispatch_task.run() == 18
    assert sorted(sent + handed) == sorted(WebhookDelivery.objects.values_list("pk", flat=True))


def test_a_dead_database_connection_costs_a_retry_not_a_delivery(project, monkeypatch):
    """The receipt skips Django's per-request SELECT 1 health check: its statement is the check. A
    connection the server has dropped (here: terminated) is replaced and the delivery stored."""
    from django.db import connection

    from bench.harness.databases import admin_connect, settings_url
    from labeling.models import WebhookDelivery
    from workers import enqueue

    monkeypatch.setattr(enqueue, "publish", lambda name, **kw: None)
    client = APIClient()
    assert _post(client, _delivery(501)).json() == {"accepted": 1, "duplicates": 0}
    pid = connection.connection.get_backend_pid()
    killer = admin_connect(settings_url(connection.settings_dict))  # a separate connection
    try:
        with killer.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        killer.close()
    answer = _post(client, _delivery(502))
    assert answer.status_code == 200 and answer.json() == {"accepted": 1, "duplicates": 0}
    assert connection.connection.get_backend_pid() != pid
    assert set(WebhookDelivery.objects.values_list("ls_annotation_id", flat=True)) == {501, 502}
