"""The operations view (workers, queues, live rounds) against real Celery workers and the real broker.

- The session's solo worker (``celery_worker_proc``) is listed with its queues, pool and pid.
- A second worker process (threads pool, so it answers while busy) runs a task that sleeps: the task is
  listed under ``active`` with its arguments and a growing runtime, counted as ``unacked`` on its queue,
  and named as the holder of the round it was called for; the round's PostgreSQL phase lock, taken here
  for real, shows as held.
- Messages published to a queue no worker consumes (two priorities: two Redis lists under the run's key
  prefix) add up to the queue's depth, with no consumer.
- Caching: a second call within ``OPERATIONS_CACHE_S`` is the same snapshot (no new broadcast).
- Broker unreachable: 503 with a sentence and Retry-After. Annotators get 403, anonymous 401.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.harness.ports import free_port
from bench.harness.processes import log_tail, service_env, start_worker, stop_process
from bench.harness.waits import wait_until
from tests.conftest import RUN_ID

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BUSY_QUEUE = f"ops-busy-{RUN_ID}"
IDLE_QUEUE = f"ops-idle-{RUN_ID}"
SOLO_QUEUE = f"ops-solo-{RUN_ID}"


def _prefix() -> str:
    from django.conf import settings

    return settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"]


def _client(role: str):
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from accounts.services import user_create

    client = APIClient()
    if role != "anonymous":
        user = user_create(username=f"ops-{role}", password="ops-password-123", role=role, update=True)
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get(user=user).key}")
    return client


@pytest.fixture
def fresh(settings):
    settings.OPERATIONS_CACHE_S = 0  # every call asks the workers
    settings.OPERATIONS_INSPECT_TIMEOUT_S = 1.0


@contextmanager
def _worker(celery_worker_proc, log_path: Path, *, queue: str, hostname: str, pool: str, concurrency: int):
    """Another real worker process (the platform's app plus a sleep task), same database, broker, prefix."""
    env = service_env(database_url=celery_worker_proc.database_url, media_root=celery_worker_proc.media_root,
                      redis_url=celery_worker_proc.redis_url, prefix=_prefix(), DEBUG="true")  # fmt: skip
    process = start_worker(env, log_path, hostname, queues=queue, pool=pool, concurrency=concurrency,
                           app="tests.integration.operations_app")  # fmt: skip
    app = celery_worker_proc.app

    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail(f"worker {hostname} exited with {process.returncode}:\n{log_tail(log_path)}")
        return hostname in (app.control.inspect(timeout=1.0, destination=[hostname]).ping() or {})

    try:
        wait_until(answers, 120, 0, what=f"worker {hostname} to answer", describe=lambda: log_tail(log_path))
        yield hostname
    finally:
        stop_process(process)


@pytest.fixture
def busy_worker(celery_worker_proc, tmp_path):
    """A threads-pool worker (2 slots): it answers inspect while it runs a task."""
    with _worker(
        celery_worker_proc, tmp_path / "busy.log", queue=BUSY_QUEUE, hostname=f"ops-busy-{RUN_ID}@testhost",
        pool="threads", concurrency=2,
    ) as hostname:  # fmt: skip
        yield hostname


@pytest.fixture
def solo_worker(celery_worker_proc, tmp_path):
    """A solo-pool worker, like the GPU workers: it cannot answer inspect while it runs a task."""
    with _worker(
        celery_worker_proc, tmp_path / "solo.log", queue=SOLO_QUEUE, hostname=f"ops-solo-{RUN_ID}@testhost",
        pool="solo", concurrency=1,
    ) as hostname:  # fmt: skip
        yield hostname


def test_the_session_worker_is_listed_with_its_queues(celery_worker_proc, fresh):
    response = _client("admin").get("/api/v1/operations/workers/")
    assert response.status_code == 200, response.content
    body = response.json()
    by_host = {w["hostname"]: w for w in body["workers"]}
    name = f"test-{RUN_ID}@"
    host = next((h for h in by_host if h.startswith(name)), None)
    assert host, f"{name}* not among {sorted(by_host)}"
    worker = by_host[host]
    assert worker["queues"] == ["cpu", "default", "gpu"]
    assert worker["pool"] == "solo" and worker["concurrency"] == 1
    assert worker["pid"] == celery_worker_proc.process.pid
    assert worker["processed"].get("workers.tasks.core.health", 0) >= 1  # the fixture's start-up check
    assert worker["processed_total"] >= 1 and worker["uptime_s"] >= 0 and worker["active"] == []
    assert worker["status"] == "online"
    # The queues endpoint names it as the consumer of the platform's three queues.
    queues = {q["name"]: q for q in _client("admin").get("/api/v1/operations/queues/").json()["queues"]}
    for queue in ("gpu", "cpu", "default"):
        assert host in queues[queue]["consumers"] and queues[queue]["platform"]
    assert response["Cache-Control"] == "no-store"


def test_a_running_task_is_active_unacked_and_holds_its_round(celery_worker_proc, busy_worker, fresh):
    from catalog.models import Dataset
    from rounds.models import Round
    from rounds.recovery import round_lock

    dataset = Dataset.objects.create(name="ops-rounds")
    round_ = Round.objects.create(dataset=dataset, number=1, state="training", progress={"phase": "training"})
    idle = Round.objects.create(
        dataset=dataset, number=2, state="annotating", progress={"phase": "annotating"}
    )
    Round.objects.create(dataset=dataset, number=3, state="done")  # not live: not listed
    admin = _client("admin")
    app = celery_worker_proc.app
    result = app.send_task(
        "tests.operations.sleep", args=(6.0, "x" * 300), kwargs={"round_id": round_.pk}, queue=BUSY_QUEUE
    )
    with round_lock(round_.pk) as held:  # the lock a worker takes while it runs one of the round's phases
        assert held

        def running():
            workers = {w["hostname"]: w for w in admin.get("/api/v1/operations/workers/").json()["workers"]}
            tasks = workers.get(busy_worker, {}).get("active", [])
            return next((t for t in tasks if t["id"] == result.id), None)

        task = wait_until(running, 30, 0.3, what="the sleeping task in active")
        body = admin.get("/api/v1/operations/workers/").json()
        worker = next(w for w in body["workers"] if w["hostname"] == busy_worker)
        assert worker["pool"] == "thread"
        assert worker["concurrency"] == 2 and worker["queues"] == [BUSY_QUEUE]
        assert task["name"] == "tests.operations.sleep" and task["queue"] == BUSY_QUEUE
        assert task["args"].startswith("6.0, 'xxx") and task["args"].endswith(f"round_id={round_.pk}")
        assert len(task["args"]) <= 160  # long arguments are shortened
        assert task["round_id"] == round_.pk and task["runtime_s"] is not None and task["runtime_s"] >= 0
        later = wait_until(running, 10, 0.3, what="a later answer")
        assert later["runtime_s"] >= task["runtime_s"]  # the runtime grows between answers
        rounds = {r["id"]: r for r in body["rounds"]}
        assert set(rounds) >= {round_.pk, idle.pk} and all(r["state"] != "done" for r in rounds.values())
        assert rounds[round_.pk]["phase"] == "training" and rounds[round_.pk]["lock_held"] is True
        assert rounds[round_.pk]["workers"] == [
            {"hostname": busy_worker, "task": "tests.operations.sleep", "task_id": result.id}
        ]
        assert rounds[idle.pk]["lock_held"] is False and rounds[idle.pk]["workers"] == []
        # Delivered and not acknowledged yet (acks_late): counted as unacked on its queue, not as waiting.
        queues = {q["name"]: q for q in admin.get("/api/v1/operations/queues/").json()["queues"]}
        assert queues[BUSY_QUEUE]["unacked"] == 1 and queues[BUSY_QUEUE]["depth"] == 0
        assert queues[BUSY_QUEUE]["consumers"] == [busy_worker]
    assert result.get(timeout=30) == 6.0
    after = admin.get("/api/v1/operations/workers/").json()
    worker = next(w for w in after["workers"] if w["hostname"] == busy_worker)
    assert worker["active"] == [] and worker["processed"]["tests.operations.sleep"] == 1

    def released():  # the server drops the lock when the lock's session ends (a moment after close)
        rounds = admin.get("/api/v1/operations/workers/").json()["rounds"]
        return {r["id"]: r for r in rounds}[round_.pk]["lock_held"] is False

    wait_until(released, 10, 0.3, what="the phase lock to be released")


def test_a_busy_solo_worker_is_shown_from_its_heartbeat(celery_worker_proc, solo_worker, fresh):
    """A solo pool runs the task in the loop that answers inspect: the worker stays listed, as busy."""
    from catalog.models import Dataset
    from rounds.models import Round

    round_ = Round.objects.create(
        dataset=Dataset.objects.create(name="ops-solo"),
        number=1,
        state="training",
        progress={"phase": "training"},
    )
    admin = _client("admin")
    result = celery_worker_proc.app.send_task(
        "tests.operations.sleep", args=(8.0,), kwargs={"round_id": round_.pk}, queue=SOLO_QUEUE
    )

    def busy():
        body = admin.get("/api/v1/operations/workers/").json()
        worker = {w["hostname"]: w for w in body["workers"]}.get(solo_worker)
        return (worker, body) if worker and worker["status"] == "busy" and worker["active"] else None

    worker, body = wait_until(busy, 30, 0.3, what="the solo worker listed as busy")
    assert worker["pool"] == "solo" and worker["concurrency"] == 1 and worker["queues"] == [SOLO_QUEUE]
    assert worker["processed_total"] is None and worker["heartbeat_age_s"] is not None
    [task] = worker["active"]
    assert (
        task["id"] == result.id and task["name"] == "tests.operations.sleep" and task["queue"] == SOLO_QUEUE
    )
    assert task["round_id"] == round_.pk and task["args"] == f"8.0, round_id={round_.pk}"
    holders = {r["id"]: r for r in body["rounds"]}[round_.pk]["workers"]
    assert holders == [{"hostname": solo_worker, "task": "tests.operations.sleep", "task_id": result.id}]
    assert result.get(timeout=30) == 8.0

    def online():
        workers = {w["hostname"]: w for w in admin.get("/api/v1/operations/workers/").json()["workers"]}
        worker = workers.get(solo_worker)
        return worker if worker and worker["status"] == "online" else None

    worker = wait_until(online, 30, 0.3, what="the solo worker answering again")
    assert worker["active"] == [] and worker["processed"] == {"tests.operations.sleep": 1}


def test_a_queue_nobody_consumes_shows_its_depth_across_priority_lists(celery_worker_proc, fresh):
    import redis

    from forgery_site.operations_queues import queue_list_keys

    app = celery_worker_proc.app
    client = redis.Redis.from_url(celery_worker_proc.redis_url)
    keys = queue_list_keys(IDLE_QUEUE, app)
    assert keys[0] == _prefix() + IDLE_QUEUE and keys[1] == _prefix() + IDLE_QUEUE + "\x06\x163"
    try:
        for _ in range(3):
            app.send_task("workers.tasks.core.health", queue=IDLE_QUEUE)
        app.send_task("workers.tasks.core.health", queue=IDLE_QUEUE, priority=5)
        app.send_task("workers.tasks.core.health", queue=IDLE_QUEUE, priority=9)
        lengths = [client.llen(key) for key in keys]
        assert sum(lengths) == 5 and sum(1 for n in lengths if n) == 3, lengths  # three Redis lists
        response = _client("admin").get("/api/v1/operations/queues/")
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["key_prefix"] == _prefix()
        queue = {q["name"]: q for q in body["queues"]}[IDLE_QUEUE]
        assert queue["depth"] == 5 and queue["consumers"] == [] and queue["platform"] is False
        assert sum(queue["by_priority"].values()) == 5 and len(queue["by_priority"]) == 3
        assert queue["unacked"] == 0
        names = [q["name"] for q in body["queues"]]
        assert names[:3] == ["cpu", "default", "gpu"]  # the platform's queues first
        assert not any("pidbox" in n or n.startswith("celeryev") for n in names)
    finally:
        client.delete(*keys)
    queue = {q["name"]: q for q in _client("admin").get("/api/v1/operations/queues/").json()["queues"]}
    assert queue[IDLE_QUEUE]["depth"] == 0


def test_workers_are_asked_once_per_cache_period(celery_worker_proc, settings):
    from forgery_site import operations

    settings.OPERATIONS_CACHE_S = 30
    admin = _client("admin")
    first = operations.workers_snapshot(fresh=True)
    second = admin.get("/api/v1/operations/workers/").json()
    assert second["fetched_at"] == first["fetched_at"] and second["stale"] is False
    assert second["age_s"] >= 0
    third = operations.workers_snapshot(fresh=True)  # an explicit refresh asks again
    assert third["fetched_at"] > first["fetched_at"]


def test_broker_unreachable_is_503_with_a_sentence(celery_worker_proc, fresh, monkeypatch):
    port = free_port()  # a local port nobody listens on
    monkeypatch.setattr(celery_worker_proc.app.conf, "broker_url", f"redis://127.0.0.1:{port}/0")
    admin = _client("admin")
    for url in ("/api/v1/operations/workers/", "/api/v1/operations/queues/"):
        response = admin.get(url)
        assert response.status_code == 503, (url, response.content)
        body = response.json()
        assert body["code"] == "broker_unavailable" and "cannot be reached" in body["detail"], body
        assert response["Retry-After"].isdigit()
    # The dashboard page still renders, with the sentence instead of the tables.
    from django.test import Client

    from accounts.services import user_create

    page_client = Client()
    page_client.force_login(user_create(username="ops-page-admin", password="ops-password-123", role="admin"))
    page = page_client.get("/workers/")
    assert page.status_code == 200 and b"cannot be reached" in page.content


def test_annotators_and_anonymous_are_refused(celery_worker_proc):
    annotator, anonymous = _client("annotator"), _client("anonymous")
    for url in ("/api/v1/operations/workers/", "/api/v1/operations/queues/"):
        assert annotator.get(url).status_code == 403
        assert anonymous.get(url).status_code == 401


def test_the_schema_documents_both_endpoints_for_admins():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    for path, component in (
        ("/api/v1/operations/workers/", "Workers"),
        ("/api/v1/operations/queues/", "Queues"),
    ):
        responses = schema["paths"][path]["get"]["responses"]
        # its own 200 and 503, and the shared errors every authenticated operation documents
        assert {"200", "503", "401", "403", "429"} <= set(responses)
        assert "404" not in responses  # no object in the path
        assert responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith(component)
    worker = schema["components"]["schemas"]["Worker"]["properties"]
    assert {
        "hostname",
        "queues",
        "pool",
        "concurrency",
        "active",
        "processed_total",
        "pid",
        "uptime_s",
    } <= set(worker)


def test_round_of_running_tasks_and_argument_summaries():
    from forgery_site.operations_workers import args_summary, round_of

    assert round_of({"name": "workers.tasks.rounds.round_train", "args": [7], "kwargs": {}}) == 7
    assert round_of({"name": "workers.tasks.scoring.score_shard", "args": [7, 0, 0, 64], "kwargs": {}}) == 7
    assert (
        round_of({"name": "workers.tasks.scoring.select_round", "args": [[{"n": 1}], 7], "kwargs": {}}) == 7
    )
    assert round_of({"name": "workers.tasks.labeling.round_push_tasks_task", "args": [7], "kwargs": {}}) == 7
    assert round_of({"name": "anything.else", "args": [], "kwargs": {"round_id": 7}}) == 7
    assert round_of({"name": "workers.tasks.core.dataset_import_task", "args": [7], "kwargs": {}}) is None
    assert round_of({"name": "workers.tasks.rounds.round_train", "args": [True], "kwargs": {}}) is None
    assert round_of({"name": "workers.tasks.rounds.round_train", "args": "(7,)", "kwargs": "{}"}) is None
    assert args_summary([1, "a"], {"k": [1, 2]}) == "1, 'a', k=[1, 2]"
    long = args_summary(["x" * 500] * 3, {})
    assert len(long) == 160 and long.endswith("…")
    assert args_summary("(1, 2)", "{}") == "(1, 2)"  # Celery's own reprs, when that is what arrives


def test_queue_lists_follow_the_transport_options():
    from celery import Celery

    from forgery_site.operations_queues import queue_list_keys

    app = Celery("ops-keys", set_as_current=False)
    assert queue_list_keys("gpu", app) == ["gpu", "gpu\x06\x163", "gpu\x06\x166", "gpu\x06\x169"]
    app.conf.broker_transport_options = {"global_keyprefix": "p:", "priority_steps": [0, 5], "sep": ":"}
    assert queue_list_keys("gpu", app) == ["p:gpu", "p:gpu:5"]
