"""Round workflow against real PostgreSQL, Redis and a Celery worker process: the full loop with tiny
models (annotations written as Mask rows, the way the ingest stores them), plus the rules of the state
machine: illegal transitions refused, concurrent launches serialized, annotators cannot launch/cancel."""

from __future__ import annotations

import threading

import pytest
from rest_framework.test import APIClient

from bench.harness.waits import wait_until
from tests.integration.rounds_helpers import (
    TINY_CONFIG,
    annotate_selection_with_ground_truth,
    import_generated_dataset,
    make_user,
)

pytestmark = pytest.mark.integration


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.django_db(transaction=True)
def test_rules_validation_roles_illegal_transitions_and_serialized_launches(
    celery_worker_proc, platform_media_root, monkeypatch
):
    # The session worker is requested first: it configures this process's Celery app before any API
    # call imports it (an app used before the fixture keeps its first broker/result settings).
    from django.db import connection

    from forgery_site.errors import Conflict
    from rounds.models import Round
    from rounds.services import round_transition

    dataset = import_generated_dataset(platform_media_root, "rules", count=48)
    admin, annotator = make_user("rules-admin", "admin"), make_user("rules-annotator", "annotator")
    # Nothing runs the rounds in this test: record what the API schedules instead of sending it.
    scheduled: list[int] = []
    monkeypatch.setattr("rounds.apis._schedule", scheduled.append)

    # Bad config: every problem reported at once, nothing created.
    bad = _client(admin).post(
        "/api/v1/rounds/", {"dataset": dataset.pk, "config": {"detectors": ["nope"], "epochs": 0, "x": 1}},
        format="json",
    )  # fmt: skip
    assert bad.status_code == 400, bad.content
    assert {"detectors", "epochs", "x"} <= set(bad.json()["errors"]), bad.json()
    assert not Round.objects.exists()

    # An annotator can neither launch nor cancel.
    denied = _client(annotator).post("/api/v1/rounds/", {"dataset": dataset.pk}, format="json")
    assert denied.status_code == 403

    # Concurrent launches on one dataset: the Dataset row lock lets exactly one through; the other gets 409.
    # (No worker here: the rounds stay ``created``.)
    results: list[int] = []
    barrier = threading.Barrier(2)

    def launch():
        try:
            barrier.wait()
            response = _client(admin).post("/api/v1/rounds/", {"dataset": dataset.pk, "config": TINY_CONFIG},
                                           format="json")  # fmt: skip
            results.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=launch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [201, 409], results
    round_ = Round.objects.get(dataset=dataset)
    assert round_.number == 1 and round_.state == "created"
    assert scheduled == [round_.pk]  # only the launch that got through is scheduled

    assert _client(annotator).post(f"/api/v1/rounds/{round_.pk}/cancel/").status_code == 403

    # Illegal transitions are refused by the state machine and by the actions.
    with pytest.raises(Conflict):
        round_transition(round_id=round_.pk, to_state="annotating")
    closed = _client(admin).post(f"/api/v1/rounds/{round_.pk}/close-annotation/")
    assert closed.status_code == 409, closed.content
    assert _client(admin).post(f"/api/v1/rounds/{round_.pk}/retry/").status_code == 409
    assert _client(admin).post(f"/api/v1/rounds/{round_.pk}/cancel/").json()["state"] == "cancelled"
    again = _client(admin).post(f"/api/v1/rounds/{round_.pk}/cancel/")
    assert again.status_code == 409
    with pytest.raises(Conflict):
        round_transition(round_id=round_.pk, to_state="training")
    # The cancelled round no longer blocks the dataset.
    assert _client(admin).post("/api/v1/rounds/", {"dataset": dataset.pk, "config": {**TINY_CONFIG}},
                               format="json").json()["number"] == 2  # fmt: skip


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("scoring", ["distributed", "in_process"])
def test_full_round_loop_with_a_worker(celery_worker_proc, platform_media_root, scoring):
    from catalog.models import Mask
    from modelhub.models import DetectorVersion
    from rounds.models import Round, Selection

    dataset = import_generated_dataset(platform_media_root, f"loop-{scoring.replace('_', '-')}", count=96)
    admin = make_user("loop-admin", "admin")
    client = _client(admin)
    versions = {}
    for number in (1, 2):
        response = client.post(
            "/api/v1/rounds/",
            {"dataset": dataset.pk, "config": {**TINY_CONFIG, "scoring": scoring}},
            format="json",
        )
        assert response.status_code == 201, response.content
        round_id = response.json()["id"]

        def state(round_id=round_id):
            return Round.objects.get(pk=round_id)

        def describe(round_id=round_id):
            r = state(round_id)
            return f"state={r.state} error={r.error[:800]} progress={r.progress}\n{celery_worker_proc.log_tail(40)}"

        wait_until(lambda: state().state in ("annotating", "failed", "done"), 240, describe=describe)
        assert state().state == "annotating", describe()
        selected = Selection.objects.filter(round_id=round_id)
        assert selected.count() == 4
        assert selected.values("sample").distinct().count() == 4
        detail = client.get(f"/api/v1/rounds/{round_id}/").json()
        assert detail["annotation"]["selected"] == 4 and detail["annotation"]["finished"] is None
        if number == 1:  # round 2 starts from round 1's final models (warm start): no first training
            assert detail["progress"]["training"]["step"] > 0

        annotate_selection_with_ground_truth(round_id, platform_media_root)
        wait_until(lambda: state().state in ("done", "failed"), 240, describe=describe)
        assert state().state == "done", describe()

        detail = client.get(f"/api/v1/rounds/{round_id}/").json()
        phases = detail["progress"]["phases"]
        assert {"training", "scoring", "annotating", "retraining", "evaluating"} <= set(phases)
        assert all(p["seconds"] >= 0 for p in phases.values() if "seconds" in p)
        # The worker's device (this machine has no GPU: the CPU) reached every compute phase.
        devices = {name: phases[name].get("device", "") for name in ("selecting", "retraining", "evaluating")}
        if number == 1:
            devices["training"] = phases["training"].get("device", "")
        if scoring == "in_process":
            devices["scoring"] = phases["scoring"].get("device", "")
        else:
            devices["scoring"] = ", ".join(detail["progress"]["scoring"]["devices"])
        assert all(d.startswith("cpu (") for d in devices.values()), devices
        for name in ("lae", "sjedd"):
            metrics = detail["metrics"][name]  # tiny models, 1 epoch: only well-formed here (see below)
            assert metrics["seen"]["auc"] is None or 0.0 <= metrics["seen"]["auc"] <= 1.0
            assert metrics["masks_used"] == 4 * number
            version = DetectorVersion.objects.get(round_id=round_id, kind=name)
            lineage = version.config["lineage"]
            assert lineage["dataset"] == dataset.pk and lineage["round"] == round_id
            used = set(
                Mask.objects.filter(sample__selections__round__dataset=dataset).values_list("pk", flat=True)
            )
            assert set(lineage["masks"]) == used
            if number == 2:
                assert version.parent == versions[name]
            versions[name] = version
            assert version.metrics["phase_devices"]["evaluating"].startswith("cpu (")
            assert version.metrics["phase_devices"]["scoring"].startswith("cpu (")
        # Masks come from Mask rows: the mask files the retraining read are the collected ones.
        assert not any("gt" in m for m in Mask.objects.values_list("path", flat=True))

    curve = client.get(f"/api/v1/datasets/{dataset.pk}/efficiency/").json()["points"]
    assert [p["round"] for p in curve] == [1, 2]
    assert curve[1]["masked_fraction"] > curve[0]["masked_fraction"] > 0
    png = client.get(f"/api/v1/datasets/{dataset.pk}/efficiency/?image=true")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.django_db(transaction=True)
def test_a_round_trains_a_detector_that_learns_an_easy_dataset(celery_worker_proc, platform_media_root):
    """Through the worker: the round's LAE, with the round defaults (flips, warm-started retrain with the
    collected masks), reaches seen AUC >= 0.85 with a P(fake) that is not constant on an easy task."""
    from catalog.services import dataset_get_or_create, import_job_create, import_job_run
    from ml.data.generate import generate_dataset
    from rounds.models import Round

    out = platform_media_root / "datasets" / "easy"
    generate_dataset(out, 1200, 64, seed=0, protocol="lae_swap", frames_per_video=2, workers=2,
                     artefacts={"match_noise": False, "jpeg_quality": 60, "colour_transfer": False})  # fmt: skip
    dataset = dataset_get_or_create(name="easy")
    job = import_job_run(job_id=import_job_create(dataset=dataset, source="datasets/easy/manifest.jsonl",
                                                  format="manifest").pk)  # fmt: skip
    assert job.status == "succeeded", job.errors[:3]
    config = {
        **TINY_CONFIG,
        "detectors": ["lae"],
        "protocol": "in_domain",
        "image_size": 64,
        "batch_size": 32,
        "epochs": 10,
        "retrain_epochs": 2,
        "lr": 2e-3,
        "budget_count": 25,
        "detector_config": {"lae": {"depth": 3, "width": 8, "latent_channels": 32}},
    }
    client = _client(make_user("easy-admin", "admin"))
    response = client.post("/api/v1/rounds/", {"dataset": dataset.pk, "config": config}, format="json")
    assert response.status_code == 201, response.content
    round_id = response.json()["id"]

    def describe():
        r = Round.objects.get(pk=round_id)
        return f"state={r.state} error={r.error[:800]}\n{celery_worker_proc.log_tail(40)}"

    wait_until(
        lambda: Round.objects.get(pk=round_id).state in ("annotating", "failed"), 400, describe=describe
    )
    annotate_selection_with_ground_truth(round_id, platform_media_root)
    wait_until(lambda: Round.objects.get(pk=round_id).state in ("done", "failed"), 400, describe=describe)
    seen = client.get(f"/api/v1/rounds/{round_id}/").json()["metrics"]["lae"]["seen"]
    assert seen["auc"] >= 0.85 and seen["prob_std"] >= 0.05, seen
    assert seen["auc_se"] < 0.05


@pytest.mark.django_db(transaction=True)
def test_failed_phase_is_recorded_and_retry_finishes_the_round(celery_worker_proc, platform_media_root):
    from catalog.models import Sample
    from rounds.models import Round

    dataset = import_generated_dataset(platform_media_root, "retry", count=64)
    admin = make_user("retry-admin", "admin")
    client = _client(admin)
    # An image the training split needs goes missing: training fails, the round records why and where.
    sample = Sample.objects.filter(dataset=dataset, split="train").order_by("pk").first()
    image = platform_media_root / sample.path
    hidden = image.with_suffix(".hidden")
    image.rename(hidden)
    config = {**TINY_CONFIG, "detectors": ["lae"], "scoring": "in_process"}
    round_id = client.post(
        "/api/v1/rounds/", {"dataset": dataset.pk, "config": config}, format="json"
    ).json()["id"]

    def state():
        return Round.objects.get(pk=round_id)

    wait_until(lambda: state().state == "failed", 180, describe=lambda: f"{state().state} {state().progress}")
    failed = client.get(f"/api/v1/rounds/{round_id}/").json()
    assert failed["progress"]["failed_phase"] == "training" and failed["error"]
    # While it is failed the dataset is free again, but cancel/close make no sense: 409.
    assert client.post(f"/api/v1/rounds/{round_id}/cancel/").status_code == 409

    hidden.rename(image)  # the file is back: retry re-enters training and the round goes on
    retried = client.post(f"/api/v1/rounds/{round_id}/retry/")
    assert retried.status_code == 200 and retried.json()["state"] == "training", retried.content
    wait_until(lambda: state().state in ("annotating", "failed"), 180, describe=lambda: state().error)
    assert state().state == "annotating", state().error
    annotate_selection_with_ground_truth(round_id, platform_media_root)
    wait_until(lambda: state().state in ("done", "failed"), 180, describe=lambda: state().error)
    assert state().state == "done" and state().progress["retries"] == 1
