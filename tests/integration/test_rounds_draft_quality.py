"""Draft quality through a real round and worker: the drafts are written with ``labeling: none`` too, the
ground-truth oracle's masks come back through the direct path, and the round's API body reports the IoU
of the drafts with them (when annotation ends) and with the ground truth (when the round evaluates)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from bench.harness.waits import wait_until
from tests.integration import rounds_helpers as helpers

pytestmark = pytest.mark.integration


def _check_block(block: dict, selected: int) -> None:
    assert block["count"] + block["skipped"] == selected, block
    assert block["skipped"] == sum(block["skip_reasons"].values())
    for value in (block["mean"], block["median"]):
        assert (value is None) if block["count"] == 0 else (0.0 <= value <= 1.0), block


@pytest.mark.django_db(transaction=True)
def test_draft_quality_of_a_round_with_the_ground_truth_oracle(celery_worker_proc, platform_media_root):
    from rounds.models import Round, Selection
    from rounds.phases.drafts import draft_relative

    dataset = helpers.import_generated_dataset(platform_media_root, "drafts", count=64)
    client = APIClient()
    client.force_authenticate(helpers.make_user("drafts-admin", "admin"))
    config = {**helpers.TINY_CONFIG, "detectors": ["lae"], "scoring": "in_process"}
    response = client.post("/api/v1/rounds/", {"dataset": dataset.pk, "config": config}, format="json")
    assert response.status_code == 201, response.content
    round_id = response.json()["id"]

    def state():
        return Round.objects.get(pk=round_id).state

    def describe():
        r = Round.objects.get(pk=round_id)
        return f"state={r.state} error={r.error[:800]}\n{celery_worker_proc.log_tail(40)}"

    wait_until(lambda: state() in ("annotating", "failed", "done"), 240, describe=describe)
    assert state() == "annotating", describe()
    detail = client.get(f"/api/v1/rounds/{round_id}/").json()
    assert detail["draft_quality"] is None  # measured when annotation ends
    selected = list(Selection.objects.filter(round_id=round_id).values_list("sample_id", flat=True))
    assert len(selected) == 4 and detail["progress"]["labeling"] == {"tasks": 0, "drafts": 4}
    drafts = [platform_media_root / draft_relative(round_id, sample_id) for sample_id in selected]
    assert all(path.is_file() for path in drafts)
    drafts[0].unlink()  # bad data: a sample without a draft is skipped and counted, never a crash

    helpers.annotate_selection_with_ground_truth(round_id, platform_media_root)
    wait_until(lambda: state() != "annotating", 120, describe=describe)
    early = client.get(f"/api/v1/rounds/{round_id}/").json()
    quality = early["draft_quality"]
    assert quality is not None and quality["selected"] == 4, early
    _check_block(quality["submitted"], 4)
    assert quality["submitted"]["skip_reasons"].get("draft_missing") == 1
    if early["state"] in ("retraining", "evaluating"):  # not evaluated yet: no ground truth read
        assert quality["ground_truth"] is None

    wait_until(lambda: state() in ("done", "failed"), 240, describe=describe)
    assert state() == "done", describe()
    quality = client.get(f"/api/v1/rounds/{round_id}/").json()["draft_quality"]
    assert quality["selected"] == 4
    for kind in ("submitted", "ground_truth"):
        _check_block(quality[kind], 4)
        assert set(quality[kind]["skip_reasons"]) <= {"draft_missing", "both_empty"}, quality
        assert quality[kind]["skip_reasons"]["draft_missing"] == 1
    # The oracle submits the ground truth: both comparisons see the same masks.
    assert quality["submitted"] == quality["ground_truth"], quality
    assert Round.objects.get(pk=round_id).progress["draft_quality"] == quality
