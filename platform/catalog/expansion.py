"""Dataset expansion (SJEDD §2): new fakes made from a dataset's own real frames by landmark-guided
local-region swaps, each with its exact mask and SJEDD targets.

For every real sample with landmarks (up to ``limit``), one region in turn of ``regions`` (eye; mouth =
lip + mouth; nose: the paper's three) is taken from the landmark-nearest real face of *another identity
in the same split* (``ml.data.manipulations.nearest_donor``; the split keeps identities apart, so an
expanded test face never borrows from a training face), aligned on the region's landmarks, colour-matched,
re-grained and blended through a feathered mask (``manipulate("region_swap")``). The new sample keeps the
target's identity, video, frame, split and landmarks; its targets are "fake, physical, region"
(research note sjedd.md §1.3: phys_eyes / phy_mouth / phy_nose) and its mask is the blend weight.

It runs as an ``ImportJob`` (format ``expansion``) on the ``cpu`` queue, with the import's progress
counters (total / processed / inserted / existing / errors, ``GET /api/v1/imports/<id>/``), and is
idempotent like the imports: a new sample's external id is ``expanded/<region>/<target external id>``,
files are written atomically under ``datasets/<name>/expanded/`` and rows inserted with ``ON CONFLICT
DO NOTHING``, so a re-run or a redelivered task adds nothing twice.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections import defaultdict

from django.db import transaction
from django.utils import timezone

from catalog.models import Dataset, ImportJob, Sample
from forgery_site.errors import InvalidInput

logger = logging.getLogger(__name__)

REGIONS = ("eye", "mouth", "nose")
BATCH = 200
MAX_REPORTED_ERRORS = 50


def expansion_options(*, regions=None, limit=None) -> dict:
    regions = list(regions or REGIONS)
    unknown = sorted(set(regions) - set(REGIONS))
    if not regions or unknown or len(set(regions)) != len(regions):
        raise InvalidInput(
            f"regions must be distinct names among {list(REGIONS)}.", errors={"regions": unknown or regions}
        )
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1_000_000
    ):
        raise InvalidInput("limit must be an integer in [1, 1000000].", errors={"limit": [str(limit)]})
    return {"regions": regions, "limit": limit}


@transaction.atomic
def expansion_start(*, dataset: Dataset, user=None, **given) -> tuple[ImportJob, dict]:
    options = expansion_options(**given)
    if not Sample.objects.filter(dataset=dataset, label="real", landmarks__isnull=False).exists():
        raise InvalidInput(
            f"Dataset {dataset.name!r} has no real samples with landmarks to expand.",
            errors={"dataset": ["no real samples with landmarks"]},
        )
    job = ImportJob.objects.create(
        dataset=dataset, source=f"expansion:{','.join(options['regions'])}", format=ImportJob.Format.EXPANSION,
        created_by=user,
    )  # fmt: skip
    return job, options


def _region_of(external_id: str, regions: list[str]) -> str:
    return regions[zlib.crc32(external_id.encode()) % len(regions)]


def expansion_run(*, job_id: int, options: dict) -> ImportJob:
    """The task body: make the expanded fakes of the job's dataset (idempotent)."""
    import numpy as np

    from catalog.bulk import copy_samples, sample_tuples
    from catalog.paths import media_root
    from catalog.storage import atomic_write_bytes
    from ml.data.dataset import read_rgb
    from ml.data.generate import encode_png
    from ml.data.manipulations import Face, family_targets, manipulate, nearest_donor, sample_params

    job = ImportJob.objects.select_related("dataset").get(pk=job_id)
    if job.status in (ImportJob.Status.SUCCEEDED, ImportJob.Status.FAILED):
        return job
    options = expansion_options(**options)
    dataset, root = job.dataset, media_root()
    reals = list(
        Sample.objects.filter(dataset=dataset, label="real", landmarks__isnull=False)
        .order_by("pk")
        .values(
            "pk", "external_id", "path", "identity", "video", "frame", "split", "landmarks", "width", "height"
        )
    )
    reals = [r for r in reals if isinstance(r["landmarks"], list) and len(r["landmarks"]) == 68]
    if options["limit"]:
        reals = reals[: options["limit"]]
    existing = set(
        Sample.objects.filter(dataset=dataset, external_id__startswith="expanded/").values_list(
            "external_id", flat=True
        )
    )
    by_split: dict[str, list[dict]] = defaultdict(list)
    for r in reals:
        by_split[r["split"]].append(r)
    ImportJob.objects.filter(pk=job.pk).update(
        status=ImportJob.Status.WRITING, started_at=timezone.now(), total_rows=len(reals)
    )
    processed = inserted = already = 0
    errors: list[dict] = []
    rows: list[dict] = []

    def flush() -> None:
        nonlocal inserted, rows
        if rows:
            with transaction.atomic():
                inserted += copy_samples(
                    sample_tuples(rows, dataset_id=dataset.pk, created_at=timezone.now().isoformat())
                )
            rows = []
        ImportJob.objects.filter(pk=job.pk).update(
            processed_rows=processed, inserted_rows=inserted, existing_rows=already, error_count=len(errors),
            errors=errors[:MAX_REPORTED_ERRORS],
        )  # fmt: skip

    for target in reals:
        processed += 1
        region = _region_of(target["external_id"], options["regions"])
        external_id = f"expanded/{region}/{target['external_id']}"[:255]
        if external_id in existing:
            already += 1
            continue
        donors = [r for r in by_split[target["split"]] if r["identity"] != target["identity"]]
        if not donors:
            errors.append({"row": target["external_id"], "field": "identity",
                           "message": f"no other identity in the {target['split']} split to take the {region} from"})  # fmt: skip
            continue
        try:
            size = int(target["width"])
            face = Face(
                read_rgb(root / target["path"], size),
                np.asarray(target["landmarks"], np.float32),
                target["identity"],
            )
            lms = [np.asarray(d["landmarks"], np.float32) for d in donors]
            donor_row = donors[nearest_donor(face.landmarks, lms)]
            donor = Face(
                read_rgb(root / donor_row["path"], size),
                np.asarray(donor_row["landmarks"], np.float32),
                donor_row["identity"],
            )
            seed = zlib.crc32(external_id.encode())
            params = {**sample_params("region_swap", np.random.default_rng(seed)), "region": region}
            forgery = manipulate("region_swap", face, params, donor=donor)
        except (ValueError, OSError, KeyError) as exc:
            errors.append({"row": target["external_id"], "field": "image", "message": str(exc)[:300]})
            continue
        digest = hashlib.sha1(external_id.encode()).hexdigest()[:16]  # noqa: S324 - a file name
        rel = f"datasets/{dataset.name}/expanded/{region}/{digest}.png"
        mask_rel = f"datasets/{dataset.name}/expanded/{region}/{digest}_mask.png"
        png = encode_png(forgery.image)
        atomic_write_bytes(root / rel, png, what=f"an expanded face of {target['external_id']}")
        atomic_write_bytes(root / mask_rel, encode_png(forgery.mask), what="its mask")
        rows.append({
            "external_id": external_id, "path": rel, "sha256": hashlib.sha256(png).hexdigest(),
            "width": size, "height": size, "label": "fake", "manipulation": "region_swap",
            "params": {"expansion": True, "region": region, "target": target["external_id"],
                       "donor": donor_row["external_id"], **{k: v for k, v in params.items() if k != "region"}},
            "identity": target["identity"], "video": target["video"], "frame": target["frame"],
            "split": target["split"], "region_targets": family_targets("region_swap", region),
            "landmarks": target["landmarks"], "gt_mask_path": mask_rel,
        })  # fmt: skip
        if len(rows) >= BATCH:
            flush()
    flush()
    made = inserted + already
    status = ImportJob.Status.SUCCEEDED if made or not reals else ImportJob.Status.FAILED
    message = (
        f"{inserted} expanded fakes added ({already} already there, {len(errors)} targets skipped) from "
        f"{len(reals)} real faces; regions {', '.join(options['regions'])}"
    )
    ImportJob.objects.filter(pk=job.pk).update(status=status, message=message, finished_at=timezone.now())
    logger.info(
        "dataset expanded", extra={"dataset": dataset.pk, "inserted": inserted, "skipped": len(errors)}
    )
    return ImportJob.objects.get(pk=job.pk)
