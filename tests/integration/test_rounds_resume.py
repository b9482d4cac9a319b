"""A worker killed (SIGKILL) in the middle of a round's training: the task is redelivered to a new worker
(``acks_late``), training resumes from the last per-epoch checkpoint instead of starting over, and the
round finishes with exactly one set of Selection rows."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from bench.harness.brokers import redis_db_url
from bench.harness.databases import settings_url
from bench.harness.processes import service_env, start_worker, stop_processes, unique_name
from bench.harness.waits import wait_until
from tests.integration.rounds_helpers import (
    TINY_CONFIG,
    annotate_selection_with_ground_truth,
    import_generated_dataset,
    make_user,
)

pytestmark = pytest.mark.integration


def _worker(env: dict, log: Path):
    return start_worker(env, log, unique_name("resume"), app="tests.integration.rounds_killable_app")


@pytest.mark.django_db(transaction=True)
def test_killed_worker_resumes_training_and_the_round_finishes(platform_media_root, tmp_path):
    from celery import Celery
    from django.conf import settings
    from django.db import connection

    from rounds.launch import round_launch
    from rounds.models import Round, Selection

    dataset = import_generated_dataset(platform_media_root, "resume", count=160, size=32)
    admin = make_user("resume-admin", "admin")
    epochs = 4
    config = {**TINY_CONFIG, "detectors": ["lae"], "epochs": epochs, "retrain_epochs": 1, "batch_size": 4,
              "scoring": "in_process"}  # fmt: skip
    round_ = round_launch(dataset=dataset, config=config, user=admin)

    prefix = f"rounds-resume-{os.getpid()}:"
    redis_url = redis_db_url(settings.REDIS_URL, os.environ.get("TEST_REDIS_DB", "15"))
    env = service_env(database_url=settings_url(connection.settings_dict), media_root=platform_media_root,
                      redis_url=redis_url, prefix=prefix, TEST_VISIBILITY_TIMEOUT="5")  # fmt: skip
    log = tmp_path / "workers.log"
    sender = Celery(
        broker=redis_url, broker_transport_options={"global_keyprefix": prefix, "visibility_timeout": 5}
    )
    first = _worker(env, log)
    second = None
    try:
        sender.send_task("workers.tasks.rounds.round_start", args=(round_.pk,), queue="default")
        checkpoint = (
            platform_media_root / "rounds" / str(dataset.pk) / "r1" / "train" / "lae" / "checkpoint.pt"
        )

        def describe():
            r = Round.objects.get(pk=round_.pk)
            return f"{r.state} {r.error[:500]} {r.progress}\n{log.read_text(errors='replace')[-3000:]}"

        # Kill once the first epoch's checkpoint exists and training is still going.
        wait_until(lambda: checkpoint.exists(), 180, 0.05, describe=describe)
        r = Round.objects.get(pk=round_.pk)
        assert r.state == "training", describe()
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        killed_at_epoch = torch_epoch(checkpoint)
        assert killed_at_epoch < epochs, "training finished before the kill; make it longer"

        second = _worker(env, log)
        wait_until(
            lambda: Round.objects.get(pk=round_.pk).state in ("annotating", "failed"),
            240,
            0.5,
            describe=describe,
        )
        assert Round.objects.get(pk=round_.pk).state == "annotating", describe()
        annotate_selection_with_ground_truth(round_.pk, platform_media_root)
        wait_until(
            lambda: Round.objects.get(pk=round_.pk).state in ("done", "failed"), 240, 0.5, describe=describe
        )
        r = Round.objects.get(pk=round_.pk)
        assert r.state == "done", describe()

        assert r.progress["phases"]["training"]["attempts"] >= 2  # the redelivered task ran training again
        # Resumed, not restarted: one metrics line per epoch, each epoch once.
        lines = [json.loads(x) for x in (checkpoint.parent / "metrics.jsonl").read_text().splitlines()]
        assert [x["epoch"] for x in lines] == list(range(epochs))
        selections = Selection.objects.filter(round=r)
        assert selections.count() == config["budget_count"]
        assert selections.values("sample").distinct().count() == config["budget_count"]
    finally:
        stop_processes([first, second])


def torch_epoch(path: Path) -> int:
    """Completed epochs recorded in a trainer checkpoint (weights_only load: plain tensors/containers)."""
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=True)["state"]["epoch"])
