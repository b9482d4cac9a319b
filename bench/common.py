"""Helpers shared by benchmarks: timing, peak RSS, device description, Django on scratch state, the
labeling benchmarks' round. Services (databases, Redis, workers, web, Label Studio) are ``bench.harness``'s."""

from __future__ import annotations

import resource
import time
import uuid
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def timer():
    box = {}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["s"] = time.perf_counter() - start


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def device_info() -> dict:
    import torch

    if torch.cuda.is_available():
        return {"device": "cuda", "name": torch.cuda.get_device_name(0), "torch": torch.__version__}
    return {"device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__}


def django_setup(migrate: bool = True, *, scratch: bool = True) -> dict:
    """Configure Django for a benchmark process: ``platform/`` on sys.path, settings, migrations.

    ``scratch`` (the default): never the user's data. A private PostgreSQL database ``bench_<pid>`` on the
    server of DATABASE_URL (created, migrated, dropped when the process exits), Redis DB 14 under a
    per-run key prefix (deleted at exit) and a temporary MEDIA_ROOT (``bench.harness.scratch``); child
    processes a benchmark starts (gunicorn, workers) inherit them through the environment.
    ``scratch=False`` is for a caller that set up its own private state already. Returns the scratch
    description (empty without scratch)."""
    from bench.harness.scratch import django_configure, process_scratch

    state = process_scratch().describe() if scratch else {}
    django_configure(migrate=migrate)
    return state


def labeling_round(media: Path, count: int):
    """A dataset of ``count`` random 64 px faces with ground-truth masks under ``media`` and a round in
    ``annotating`` that selected all of them (the labeling benchmarks push it to Label Studio).
    Returns (dataset, round)."""
    import numpy as np
    from PIL import Image

    from catalog.models import Dataset, Sample
    from rounds.models import Round, Selection

    name = f"bench-webhooks-{uuid.uuid4().hex[:8]}"
    dataset = Dataset.objects.create(name=name)
    rng = np.random.default_rng(0)
    for index in range(count):
        rel, gt_rel = f"{name}/img/{index:04d}.png", f"{name}/gt/{index:04d}.png"
        for path in (media / rel, media / gt_rel):
            path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(media / rel)
        gt = np.zeros((64, 64), np.uint8)
        y, x = rng.integers(0, 32, 2)
        gt[y : y + 24, x : x + 20] = 255
        Image.fromarray(gt).save(media / gt_rel)
        sample = Sample.objects.create(
            dataset=dataset, external_id=f"s{index}", path=rel, sha256="0" * 64, width=64, height=64,
            label="fake", split="train", gt_mask_path=gt_rel,
        )  # fmt: skip
        if index == 0:
            round_obj = Round.objects.create(dataset=dataset, number=1, state="annotating")
        Selection.objects.create(
            round=round_obj, sample=sample, score=0.5, rank=index + 1, scores={"prob": 0.5}
        )
    return dataset, round_obj
