"""The Celery app: a real worker process answers the health task; queues and delivery settings."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.django_db(transaction=True)
def test_worker_health_task_round_trip(celery_worker_proc):
    from django.db import connection

    result = celery_worker_proc.app.send_task("workers.tasks.core.health").get(timeout=30)
    assert result["ok"] is True and result["database"] == connection.settings_dict["NAME"]


def test_queues_routing_and_at_least_once_delivery():
    from workers.celery_app import TASK_MODULES, app

    assert "workers.tasks.core" in TASK_MODULES
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1
    router = app.amqp.router
    assert router.route({}, "workers.tasks.scoring.score_shard")["queue"].name == "gpu"
    assert router.route({}, "workers.tasks.core.dataset_import_task")["queue"].name == "cpu"
    assert router.route({}, "workers.tasks.core.health")["queue"].name == "default"
    app.loader.import_default_modules()  # what a worker does at start: the task modules register
    import_task = app.tasks["workers.tasks.core.dataset_import_task"]
    assert import_task.max_retries == 5 and import_task.retry_backoff
