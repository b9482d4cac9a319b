"""Pretrained CLIP weights as a first-class input: the registry (command, API), launch-time checks with
their reasons, and a round on the sjedd-paper preset that trains from a registered file end to end on
the towers' contract (a tiny tower saved locally stands in for CLIP, which this machine cannot fetch)."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest

from bench.harness.waits import wait_until
from tests.integration.rounds_helpers import (
    TINY_CONFIG,
    annotate_selection_with_ground_truth,
    import_generated_dataset,
    make_user,
)

pytestmark = [pytest.mark.integration]

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]


def _tower_file(folder: Path, model: str = "sjedd-tiny-vit") -> Path:
    import torch

    from ml.sjedd.towers import create_towers

    torch.manual_seed(7)
    path = folder / f"{model}.pt"
    torch.save(create_towers(model, None).state_dict(), path)
    return path


@pytest.mark.django_db
def test_registry_command_api_and_launch_checks(platform_media_root, tmp_path):
    from django.core.management import CommandError, call_command
    from rest_framework.test import APIClient

    from forgery_site.errors import InvalidInput
    from rounds.config import validate_config

    tower = _tower_file(tmp_path)
    out = StringIO()
    call_command("weights_add", "tiny-clip", str(tower), "--model", "sjedd-tiny-vit", stdout=out)
    entry = json.loads(out.getvalue())
    assert (
        entry["path"] == "weights/tiny-clip.pt" and entry["image_size"] == 32 and len(entry["sha256"]) == 64
    )
    assert (platform_media_root / "weights" / "tiny-clip.pt").is_file()
    with pytest.raises(CommandError, match="cannot start that tower"):  # the weights do not fit this tower
        call_command("weights_add", "wrong", str(tower), "--model", "sjedd-small-rn", stdout=StringIO())

    admin = APIClient()
    admin.force_authenticate(make_user("weights-admin", "admin"))
    listed = admin.get("/api/v1/weights/").json()
    assert [w["name"] for w in listed] == ["tiny-clip"]
    answer = admin.post(
        "/api/v1/weights/",
        {"name": "escape", "path": "../etc/passwd", "model": "sjedd-tiny-vit"},
        format="json",
    )
    assert answer.status_code == 400 and "path" in answer.json()  # refused by the path's pattern
    answer = admin.post(
        "/api/v1/weights/",
        {"name": "elsewhere", "path": "datasets/x.pt", "model": "sjedd-tiny-vit"},
        format="json",
    )
    assert answer.status_code == 400 and "weights/" in json.dumps(answer.json())
    answer = admin.post(
        "/api/v1/weights/",
        {"name": "tiny-clip", "path": "weights/tiny-clip.pt", "model": "sjedd-tiny-vit"},
        format="json",
    )
    assert answer.status_code == 409

    def launch_error(config) -> dict:
        with pytest.raises(InvalidInput) as caught:
            validate_config(config)
        return caught.value.errors

    assert "registered: tiny-clip" in launch_error({"preset": "sjedd-paper"})["preset"]
    assert (
        "No registered weights named 'nope'"
        in launch_error({"detector_config": {"sjedd": {"weights": "nope"}}})["detector_config"]
    )
    assert (
        "does not fit"
        in launch_error({"detector_config": {"sjedd": {"weights": "tiny-clip", "model": "ViT-B-16"}}})[
            "detector_config"
        ]
    )
    assert (
        "32 px"
        in launch_error({"detector_config": {"sjedd": {"weights": "tiny-clip", "image_size": 224}}})[
            "detector_config"
        ]
    )
    assert (
        "offline cache"
        in launch_error({"detector_config": {"sjedd": {"model": "ViT-B-16", "pretrained": "openai"}}})[
            "detector_config"
        ]
    )
    assert (
        "not found"
        in launch_error({"detector_config": {"sjedd": {"pretrained": "/no/such/file.pt"}}})["detector_config"]
    )
    good = validate_config({"preset": "sjedd-paper", "detector_config": {"sjedd": {"weights": "tiny-clip"}}})
    sjedd = good["detector_config"]["sjedd"]
    assert (sjedd["model"], sjedd["image_size"], sjedd["lr"], sjedd["optimizer"], sjedd["schedule"]) == (
        "sjedd-tiny-vit", 32, 6e-7, "adamw", "cosine")  # fmt: skip
    assert good["detectors"] == ["sjedd"] and good["epochs"] == 20
    (platform_media_root / "weights" / "tiny-clip.pt").write_bytes(b"tampered")  # changed after registering
    assert (
        "sha256 mismatch"
        in launch_error({"detector_config": {"sjedd": {"weights": "tiny-clip"}}})["detector_config"]
    )


@pytest.mark.django_db(transaction=True)
def test_a_paper_preset_round_trains_from_registered_weights(
    celery_worker_proc, platform_media_root, tmp_path
):
    from django.core.management import call_command
    from rest_framework.test import APIClient

    from ml.training import load_detector
    from rounds.models import Round

    call_command(
        "weights_add", "stand-in", str(_tower_file(tmp_path)), "--model", "sjedd-tiny-vit", stdout=StringIO()
    )
    dataset = import_generated_dataset(platform_media_root, "paper-preset", count=96)
    client = APIClient()
    client.force_authenticate(make_user("preset-admin", "admin"))
    config = {**TINY_CONFIG, "preset": "sjedd-paper", "epochs": 1, "retrain_epochs": 1,
              "detector_config": {"sjedd": {"weights": "stand-in", "lr": 1e-4}}}  # fmt: skip
    config.pop("detectors")  # the preset's: SJEDD alone
    response = client.post("/api/v1/rounds/", {"dataset": dataset.pk, "config": config}, format="json")
    assert response.status_code == 201, response.content
    round_id = response.json()["id"]

    def state():
        return Round.objects.get(pk=round_id)

    def describe():
        r = state()
        return f"state={r.state} error={r.error[:600]}\n{celery_worker_proc.log_tail(30)}"

    wait_until(lambda: state().state in ("annotating", "failed"), 300, describe=describe)
    assert state().state == "annotating", describe()
    annotate_selection_with_ground_truth(round_id, platform_media_root)
    wait_until(lambda: state().state in ("done", "failed"), 300, describe=describe)
    assert state().state == "done", describe()
    final = state().progress["models"]["final"]["sjedd"]
    detector, _ = load_detector(platform_media_root / final["model"])
    contract = detector.preprocessing()
    assert contract["mean"] == pytest.approx(CLIP_MEAN) and contract["image_size"] == 32
    assert detector.config["pretrained_source"].endswith("weights/stand-in.pt")
    assert state().config["detector_config"]["sjedd"]["optimizer"] == "adamw"
