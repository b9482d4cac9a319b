"""The oracle annotator: answers a round's open Label Studio tasks with the ground-truth masks.

It plays the annotators in demos, benchmarks and tests, and it goes through Label Studio's own API
(as its own Label Studio user), so Label Studio -> webhook -> platform is exercised exactly as with
people. Optional degradation models imperfect humans: ``dilate_px`` / ``erode_px`` grow or shrink the
mask by k pixels (elliptic kernel), ``drop_fraction`` leaves that fraction of tasks unanswered
(deterministic for a seed). Real samples (no ground-truth mask) get the verdict "real" and no stroke.

Ground-truth masks are read only here and in evaluation (``Sample.gt_mask_path``, kept apart).
"""

from __future__ import annotations

import logging
import random

from django.contrib.auth import get_user_model

from catalog.paths import media_root
from labeling import masks
from labeling.client import LabelStudioClient, get_client
from labeling.models import AnnotatorAccount
from labeling.provisioning import service_annotator_provision
from rounds.models import AnnotationTask

logger = logging.getLogger(__name__)

ORACLE_USERNAME = "oracle"


def oracle_account(*, client: LabelStudioClient | None = None) -> AnnotatorAccount:
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(
        username=ORACLE_USERNAME, defaults={"email": "oracle@annotators.forgerylab.local"}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return service_annotator_provision(user_id=user.pk, is_oracle=True, client=client)


def oracle_result(sample, *, dilate_px: int = 0, erode_px: int = 0) -> list[dict]:
    """The Label Studio result the oracle submits for one sample."""
    if not sample.gt_mask_path:
        return [
            {"from_name": "verdict", "to_name": "image", "type": "choices", "value": {"choices": ["real"]}}
        ]
    truth = masks.read_mask_png(media_root() / sample.gt_mask_path, width=sample.width, height=sample.height)
    drawn = masks.degrade(truth, dilate_px=dilate_px, erode_px=erode_px)
    result = [{"from_name": "verdict", "to_name": "image", "type": "choices", "value": {"choices": ["fake"]}}]
    if drawn.any():
        result.insert(0, masks.brush_result(drawn))
    return result


def oracle_answer(
    *,
    round_id: int,
    dilate_px: int = 0,
    erode_px: int = 0,
    drop_fraction: float = 0.0,
    seed: int = 0,
    limit: int | None = None,
    client: LabelStudioClient | None = None,
    progress: bool = False,
) -> dict:
    """Answer every open task of the round once (idempotent: tasks the oracle answered are skipped)."""
    if not 0.0 <= drop_fraction <= 1.0:
        raise ValueError("drop_fraction must be in [0, 1]")
    client = client or get_client()
    account = oracle_account(client=client)
    tasks = list(
        AnnotationTask.objects.filter(round_id=round_id, ls_task_id__isnull=False)
        .select_related("sample")
        .order_by("pk")
    )
    rng = random.Random(seed)
    counts = {"answered": 0, "dropped": 0, "already": 0}
    iterator = tasks
    if progress:
        from tqdm import tqdm

        iterator = tqdm(tasks, desc="oracle", unit="task")
    for task in iterator:
        if limit is not None and counts["answered"] >= limit:
            break
        dropped = rng.random() < drop_fraction  # drawn for every task so the choice is stable per seed
        existing = client.annotations_list(task.ls_task_id)
        if any(_user_id(a.get("completed_by")) == account.ls_user_id for a in existing):
            counts["already"] += 1
            continue
        if dropped:
            counts["dropped"] += 1
            continue
        result = oracle_result(task.sample, dilate_px=dilate_px, erode_px=erode_px)
        client.annotation_create(task_id=task.ls_task_id, result=result, completed_by=account.ls_user_id)
        counts["answered"] += 1
    logger.info("oracle answered", extra={"round": round_id, **counts})
    return counts


def _user_id(value) -> int | None:
    if isinstance(value, dict):
        value = value.get("id")
    return int(value) if value is not None else None
