"""The API contract as an outside consumer meets it: a live server, a real Celery worker, the schema it
publishes, and nothing from inside the process.

1. ``schemathesis run`` (the CLI, as a consumer would run it) with every default phase (examples,
   coverage, fuzzing, stateful), ``--checks all``, ``CONTRACT_MAX_EXAMPLES`` examples per operation
   (default 25), seed 7 and a time bound per role (``CONTRACT_MAX_SECONDS``), as admin, as annotator and anonymously: it must
   report no failure. Writes that enqueue work (imports, rounds) reach the real worker.
2. A typed client generated from the same schema by ``openapi-python-client`` (at test time, into a
   temporary folder) walks a campaign: create a dataset, import it, launch a round with oracle masks,
   poll it to ``done``, list detectors, export and download a bundle, predict. Any drift between schema
   and behaviour breaks one of the two.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from bench.harness.waits import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MAX_EXAMPLES = int(os.environ.get("CONTRACT_MAX_EXAMPLES", "25"))
MAX_SECONDS_PER_ROLE = int(os.environ.get("CONTRACT_MAX_SECONDS", "600"))
BIN = Path(sys.executable).parent
# Every check runs. The two operations where a schema-valid request may still be a 400 (a common
# password; rules that cross round options) are listed, with why, in this config file.
CONFIG_FILE = Path(__file__).with_name("schemathesis.toml")


def _users() -> dict[str, str]:
    from accounts.services import user_create, user_token

    admin = user_create(username="contract-admin", password="contract-admin-pass-1", role="admin")
    annotator = user_create(username="contract-annotator", password="contract-annot-pass-1", role="annotator")
    return {"admin": user_token(user=admin), "annotator": user_token(user=annotator)}


def _schema(base: str, token: str, folder: Path) -> Path:
    answer = requests.get(
        f"{base}/api/schema/?format=json", headers={"Authorization": f"Token {token}"}, timeout=60
    )
    assert answer.status_code == 200, answer.text[:500]
    path = folder / "schema.json"
    path.write_text(answer.text)
    return path


@pytest.fixture
def contract_server(live_server, celery_worker_proc, settings):
    """The live server on the worker's database and media, Label Studio not reachable (its endpoints
    answer their documented 503)."""
    settings.LABEL_STUDIO_URL = "http://127.0.0.1:9"
    settings.MEDIA_ROOT = celery_worker_proc.media_root
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    from django.core.cache import cache

    cache.clear()
    return live_server.url


def test_schemathesis_all_phases_all_checks_every_role(contract_server, tmp_path):
    tokens = _users()
    schema = _schema(contract_server, tokens["admin"], tmp_path)
    failures = []
    for role in os.environ.get("CONTRACT_ROLES", "admin,annotator,anonymous").split(","):
        command = [
            str(BIN / "st"), "--config-file", str(CONFIG_FILE), "run", str(schema), "--url", contract_server,
            "--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", "7",
            "--phases", "examples,coverage,fuzzing,stateful", "--workers", "1",
            "--request-timeout", "30",
            "--report", "json", "--report-json-path", str(tmp_path / f"{role}.json"),
            "--output-truncate", "false",
            # Needs a real Label Studio (here it answers its documented 503, a "server error" to this
            # check); fuzzed against a real one in tests/labelstudio/test_instance.py.
            "--exclude-path", "/api/v1/labeling/instance/reprovision",
        ]  # fmt: skip
        if role != "anonymous":
            command += ["--header", f"Authorization: Token {tokens[role]}"]
        started = time.monotonic()
        # Run in the test's folder: schemathesis keeps its example cache in ./.schemathesis.
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=MAX_SECONDS_PER_ROLE, cwd=tmp_path
        )
        (tmp_path / f"{role}.txt").write_text(done.stdout + done.stderr)
        print(f"{role}: exit {done.returncode} in {time.monotonic() - started:.0f} s ({tmp_path / role}.txt)")
        if done.returncode != 0:
            failures.append(
                f"--- {role} (exit {done.returncode})\n{done.stdout[-20000:]}\n{done.stderr[-3000:]}"
            )
    assert not failures, "\n".join(failures)


GENERATOR_CONFIG = {
    # Binary answers (a bundle, a PNG plot, a sample's image) become the client's File type.
    "content_type_overrides": {
        "application/zip": "application/octet-stream",
        "image/png": "application/octet-stream",
        "image/*": "application/octet-stream",
    },
    "post_hooks": [],
}


def _generated_client(schema: Path, folder: Path):
    """``openapi-python-client generate`` into ``folder``; returns the imported package."""
    config = folder / "generator.json"
    config.write_text(json.dumps(GENERATOR_CONFIG))
    out = folder / "forgerylab_contract_client"
    done = subprocess.run(
        [str(BIN / "openapi-python-client"), "generate", "--path", str(schema), "--meta", "none",
         "--output-path", str(out), "--config", str(config), "--fail-on-warning"],
        capture_output=True, text=True, timeout=300, cwd=folder,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    return importlib.import_module("forgerylab_contract_client")


def _wait(what: str, fetch, done, timeout: float = 300, interval: float = 0.5):
    """``fetch()`` until ``done(value)``; that value."""
    seen: list = [None]

    def finished():
        seen[0] = fetch()
        return (seen[0],) if done(seen[0]) else None

    return wait_until(finished, timeout, interval, what=what, describe=lambda: f"last: {seen[0]}")[0]


def test_a_generated_client_walks_a_campaign(contract_server, celery_worker_proc, tmp_path):
    from ml.data.generate import generate_dataset
    from rounds.demo_oracle import store_ground_truth_masks
    from tests.conftest import write_png
    from tests.integration.rounds_helpers import TINY_CONFIG

    tokens = _users()
    schema = _schema(contract_server, tokens["admin"], tmp_path)
    package = _generated_client(schema, tmp_path)
    v1 = importlib.import_module(f"{package.__name__}.api.v1")
    models = importlib.import_module(f"{package.__name__}.models")
    types = importlib.import_module(f"{package.__name__}.types")

    def api(name: str):
        return importlib.import_module(f"{v1.__name__}.{name}")

    admin = package.AuthenticatedClient(base_url=contract_server, token=tokens["admin"], prefix="Token",
                                        raise_on_unexpected_status=True, timeout=package.client.httpx.Timeout(120))  # fmt: skip
    annotator = package.AuthenticatedClient(
        base_url=contract_server, token=tokens["annotator"], prefix="Token"
    )

    # A dataset and its import (the files are where the import roots are: the worker's media).
    generate_dataset(celery_worker_proc.media_root / "datasets" / "campaign", 96, 32, 0)
    dataset = api("v1_datasets_create").sync(
        client=admin, body=models.DatasetCreateInputRequest(name="campaign")
    )
    assert isinstance(dataset, models.DatasetOutput) and dataset.name == "campaign"
    refused = api("v1_datasets_create").sync_detailed(
        client=annotator, body=models.DatasetCreateInputRequest(name="not-mine")
    )
    assert refused.status_code == 403 and isinstance(refused.parsed, models.Error)
    job = api("v1_datasets_imports_create").sync(
        dataset.id,
        client=admin,
        body=models.ImageImportInputRequest(source="datasets/campaign/manifest.jsonl"),
    )
    assert isinstance(job, models.ImportOutput)
    job = _wait("the import", lambda: api("v1_imports_retrieve").sync(job.id, client=admin),
                lambda j: str(j.status) in ("succeeded", "failed"))  # fmt: skip
    assert str(job.status) == "succeeded" and job.inserted_rows == 96, job
    listed = api("v1_datasets_list").sync(client=annotator)
    assert [d.name for d in listed.results] == ["campaign"] and listed.count == 1

    # A round: LAE only, tiny; the oracle stands in for the annotators, the consumer closes annotation.
    config = {**TINY_CONFIG, "detectors": ["lae"], "scoring": "in_process"}
    launched = api("v1_rounds_create").sync(
        client=admin,
        # The config is a typed model of its own (rounds.config_schema): the client checks its shape.
        body=models.RoundLaunchInputRequest(
            dataset=dataset.id, config=models.RoundLaunchInputRequestConfig.from_dict(config)
        ),
    )
    assert isinstance(launched, models.RoundOutput) and launched.number == 1

    def fetch_round():
        return api("v1_rounds_retrieve").sync(launched.id, client=admin)

    round_ = _wait("annotating", fetch_round, lambda r: str(r.state) in ("annotating", "failed", "done"), 600)
    assert str(round_.state) == "annotating", round_.error
    selection = api("v1_rounds_selection_list").sync(launched.id, client=annotator)
    assert selection.count >= 1
    assert store_ground_truth_masks(launched.id) >= 1
    closed = api("v1_rounds_close_annotation_create").sync_detailed(launched.id, client=admin)
    assert closed.status_code in (200, 202), closed.content
    round_ = _wait("done", fetch_round, lambda r: str(r.state) in ("done", "failed"), 600)
    assert str(round_.state) == "done", round_.error

    # The detectors it made, an exported bundle, a prediction.
    versions = api("detector_versions_list").sync(client=annotator)
    tags = [v.tag for v in versions.results]
    assert tags and all(tag.startswith("lae-") for tag in tags), tags
    tag = tags[0]
    exported = api("v1_detectors_export_create").sync_detailed(tag, client=admin)
    assert exported.status_code == 201, exported.content
    bundle = api("v1_detectors_bundle_retrieve").sync_detailed(tag, client=annotator)
    assert bundle.status_code == 200 and bundle.content[:2] == b"PK"  # a zip
    image = write_png(tmp_path / "face.png", size=(48, 48), seed=3)

    def predict(mode):
        upload = types.File(
            payload=io.BytesIO(image.read_bytes()), file_name="face.png", mime_type="image/png"
        )
        body = models.DetectorPredictInputRequest(images=[upload], mode=mode)
        return api("v1_detectors_predict_create").sync_detailed(tag, client=annotator, body=body)

    # A random image has no face: a documented 422, parsed as the Error it is; as a crop, a probability.
    prediction = predict(models.ModeEnum.PHOTO)
    assert prediction.status_code == 422 and isinstance(prediction.parsed, models.Error)
    assert prediction.parsed.code == "no_face"
    prediction = predict(models.ModeEnum.CROP)
    assert prediction.status_code == 200, prediction.content[:2000]
    results = prediction.parsed.to_dict()["results"]
    assert len(results) == 1 and len(results[0]["faces"]) == 1, results
    assert 0.0 <= results[0]["faces"][0]["prob_fake"] <= 1.0, results
