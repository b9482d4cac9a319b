"""A round whose detectors train data-parallel (``train_processes`` 2: torchrun inside the worker's task,
gloo on this CPU-only machine; one rank per GPU on a multi-GPU node): both detectors (LAE through DDP,
SJEDD's own training step through gradient averaging) train, retrain on the masks, and the round finishes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.harness.waits import wait_until
from tests.integration.rounds_helpers import (
    TINY_CONFIG,
    annotate_selection_with_ground_truth,
    import_generated_dataset,
    make_user,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_round_config_rejects_bad_train_processes():
    from forgery_site.errors import InvalidInput
    from rounds.config import validate_config

    assert validate_config({"train_processes": 2})["train_processes"] == 2
    assert validate_config({})["train_processes"] is None
    for bad in (0, 65, "2", True, 1.5):
        with pytest.raises(InvalidInput):
            validate_config({"train_processes": bad})


@pytest.mark.django_db(transaction=True)
def test_round_trains_data_parallel_with_two_processes(celery_worker_proc, platform_media_root):
    from rest_framework.test import APIClient

    from rounds.models import Round

    dataset = import_generated_dataset(platform_media_root, "ddp-round", count=64)
    client = APIClient()
    client.force_authenticate(make_user("ddp-admin", "admin"))
    config = {**TINY_CONFIG, "scoring": "in_process", "train_processes": 2}
    response = client.post("/api/v1/rounds/", {"dataset": dataset.pk, "config": config}, format="json")
    assert response.status_code == 201, response.content
    round_id = response.json()["id"]

    def state():
        return Round.objects.get(pk=round_id)

    def describe():
        r = state()
        return f"state={r.state} error={r.error[-1500:]}\n{celery_worker_proc.log_tail(40)}"

    wait_until(lambda: state().state in ("annotating", "failed", "done"), 420, describe=describe)
    assert state().state == "annotating", describe()
    trained = state().progress["models"]["scoring"]
    assert {name: info["train_processes"] for name, info in trained.items()} == {"lae": 2, "sjedd": 2}
    for name in ("lae", "sjedd"):
        out = Path(platform_media_root) / trained[name]["model"]
        assert out.is_file()
        records = [json.loads(x) for x in (out.parent / "metrics.jsonl").read_text().splitlines()]
        assert records and all(r["world_size"] == 2 for r in records)  # rank 0 alone wrote the log

    annotate_selection_with_ground_truth(round_id, platform_media_root)
    wait_until(lambda: state().state in ("done", "failed"), 420, describe=describe)
    assert state().state == "done", describe()
    final = state().progress["models"]["final"]
    assert {name: info["train_processes"] for name, info in final.items()} == {"lae": 2, "sjedd": 2}
    assert all(info["masks"] == 4 for info in final.values())
