"""Shared pieces of the round tests: a tiny generated dataset imported into the test database, users,
tiny round configs and masks written the way an annotation ingest writes them (polling:
``bench.harness.waits.wait_until``)."""

from __future__ import annotations

from pathlib import Path

# Tiny models and few epochs: the round machinery is under test, not detector quality.
TINY_CONFIG = {
    "detectors": ["lae", "sjedd"],
    "epochs": 1,
    "retrain_epochs": 1,
    "image_size": 32,
    "batch_size": 16,
    "budget_count": 4,
    "budget_total": 1.0,  # tiny datasets: 4 masks a round is more than 3% of them
    "poll_interval_s": 0.5,
    "labeling": "none",
    "detector_config": {
        "lae": {"depth": 2, "width": 4, "latent_channels": 8, "groups": 2},
        "sjedd": {"model": "sjedd-tiny-vit"},
    },
    "active": {"strategies": ["entropy"], "shard_size": 32},
}


def import_generated_dataset(media_root: Path, name: str, count: int = 96, size: int = 32, seed: int = 0):
    """Generate a procedural dataset under MEDIA_ROOT/datasets/NAME and import it (synchronously)."""
    from catalog.services import dataset_get_or_create, import_job_create, import_job_run
    from ml.data.generate import generate_dataset

    out = Path(media_root) / "datasets" / name
    if not (out / "manifest.jsonl").exists():
        generate_dataset(out, count, size, seed)
    dataset = dataset_get_or_create(name=name)
    job = import_job_create(dataset=dataset, source=f"datasets/{name}/manifest.jsonl", format="manifest")
    job = import_job_run(job_id=job.pk)
    assert job.status == "succeeded", (job.message, job.errors[:3])
    return dataset


def make_user(username: str, role: str | None):
    from django.contrib.auth.models import Group, User

    user, _ = User.objects.get_or_create(username=username, defaults={"email": f"{username}@example.org"})
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def annotate_selection_with_ground_truth(round_id: int, media_root: Path) -> int:
    """Stand in for annotators: every selected sample gets a Mask row (its ground-truth mask, or an empty
    one for a real face), stored as the annotation ingest stores them."""
    from rounds.demo_oracle import store_ground_truth_masks

    return store_ground_truth_masks(round_id)
