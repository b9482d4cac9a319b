"""Cross-dataset evaluation: a round trains on one dataset and is also scored on other datasets' test
splits (frame and video AUC), chosen in the round config and checked at launch."""

from __future__ import annotations

import pytest

from bench.harness.waits import wait_until
from tests.integration.rounds_helpers import (
    TINY_CONFIG,
    annotate_selection_with_ground_truth,
    import_generated_dataset,
    make_user,
)

pytestmark = [pytest.mark.integration]


@pytest.mark.django_db(transaction=True)
def test_a_round_is_scored_on_other_datasets(celery_worker_proc, platform_media_root):
    from rest_framework.test import APIClient

    from catalog.models import Dataset
    from rounds.models import Round

    home = import_generated_dataset(platform_media_root, "xd-home", count=96, seed=0)
    away = import_generated_dataset(platform_media_root, "xd-away", count=64, seed=5)
    empty = Dataset.objects.create(name="xd-empty")
    client = APIClient()
    client.force_authenticate(make_user("xd-admin", "admin"))

    def launch(test_datasets):
        config = {**TINY_CONFIG, "detectors": ["lae"], "test_datasets": test_datasets}
        return client.post("/api/v1/rounds/", {"dataset": home.pk, "config": config}, format="json")

    # A malformed list is a 400, an unknown dataset a 404, a dataset that cannot be evaluated on a 409.
    for bad, status, reason in (([home.pk], 409, "own dataset"), ([999999], 404, "no dataset"),
                                ([empty.pk], 409, "no real and fake"), (["xd-away"], 400, "list of dataset ids")):  # fmt: skip
        answer = launch(bad)
        assert answer.status_code == status and reason in str(answer.json()), answer.json()
    answer = launch([away.pk])
    assert answer.status_code == 201, answer.content
    round_id = answer.json()["id"]

    def state():
        return Round.objects.get(pk=round_id)

    wait_until(lambda: state().state in ("annotating", "failed"), 240, describe=lambda: state().error)
    annotate_selection_with_ground_truth(round_id, platform_media_root)
    wait_until(lambda: state().state in ("done", "failed"), 240, describe=lambda: state().error)
    assert state().state == "done", state().error
    metrics = client.get(f"/api/v1/rounds/{round_id}/").json()["metrics"]["lae"]
    cross = metrics["cross_dataset"]["xd-away"]
    expected = away.samples.filter(split="test").count() or away.samples.count()
    assert cross["dataset"] == away.pk and cross["n"] == expected
    assert cross["auc"] is None or 0.0 <= cross["auc"] <= 1.0
    assert "video_auc" in cross and "n_videos" in cross
