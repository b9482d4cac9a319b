"""SJEDD's dataset expansion as a job on the real worker: landmark-guided eye / mouth / nose swaps from
another identity of the same split, exact masks, legal targets, progress in the API, idempotent."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from tests.integration.rounds_helpers import import_generated_dataset, make_user

pytestmark = [pytest.mark.integration]


@pytest.mark.django_db(transaction=True)
def test_expansion_job_makes_masked_region_swaps_once(celery_worker_proc, platform_media_root):
    from rest_framework.test import APIClient

    from catalog.models import Dataset, Sample
    from ml.labels import is_legal

    dataset = import_generated_dataset(platform_media_root, "expand-me", count=96)
    client = APIClient()
    client.force_authenticate(make_user("expand-admin", "admin"))
    url = f"/api/v1/datasets/{dataset.pk}/expand/"
    assert client.post(url, {"regions": ["ear"]}, format="json").status_code == 400
    assert client.post(url, {"limit": 0}, format="json").status_code == 400
    bare = Dataset.objects.create(name="expand-bare")
    answer = client.post(f"/api/v1/datasets/{bare.pk}/expand/", {}, format="json")
    assert answer.status_code == 400 and "landmarks" in str(answer.json())
    imports = client.post(
        f"/api/v1/datasets/{dataset.pk}/imports/", {"source": "x", "format": "expansion"}, format="json"
    )
    assert imports.status_code == 400  # not an import format a user can ask for

    def run(body) -> dict:
        job = client.post(url, body, format="json").json()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            job = client.get(f"/api/v1/imports/{job['id']}/").json()
            if job["status"] in ("succeeded", "failed"):
                return job
            time.sleep(0.5)
        raise AssertionError(f"expansion did not finish: {job}\n{celery_worker_proc.log_tail(30)}")

    job = run({"limit": 12})
    assert job["status"] == "succeeded", job
    assert job["total_rows"] == 12 and job["processed_rows"] == 12 and job["inserted_rows"] >= 10
    made = list(Sample.objects.filter(dataset=dataset, external_id__startswith="expanded/"))
    assert len(made) == job["inserted_rows"]
    reals = {s.external_id: s for s in Sample.objects.filter(dataset=dataset, label="real")}
    for sample in made:
        region = sample.params["region"]
        target, donor = reals[sample.params["target"]], reals[sample.params["donor"]]
        assert region in ("eye", "mouth", "nose") and sample.label == "fake"
        assert donor.identity != target.identity and donor.split == target.split == sample.split
        assert sample.identity == target.identity and is_legal(sample.region_targets)
        assert sample.region_targets[3] == 1  # physical inconsistency, as SJEDD's expanded classes
        mask = np.asarray(Image.open(platform_media_root / sample.gt_mask_path))
        fake = np.asarray(Image.open(platform_media_root / sample.path).convert("RGB")).astype(int)
        real = np.asarray(Image.open(platform_media_root / target.path).convert("RGB")).astype(int)
        assert 0 < (mask > 0).mean() < 0.25  # a local region, not the face
        assert np.array_equal(fake[mask == 0], real[mask == 0])  # exact: nothing changed outside the mask
    again = run({"limit": 12})
    assert (
        again["status"] == "succeeded" and again["inserted_rows"] == 0 and again["existing_rows"] == len(made)
    )
    assert Sample.objects.filter(dataset=dataset, external_id__startswith="expanded/").count() == len(made)
