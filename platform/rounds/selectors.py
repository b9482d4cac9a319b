"""Round selectors (reads): one round, the list, annotation counts, mask coverage, the efficiency curve."""

from __future__ import annotations

import time
from typing import Any

from catalog.models import Mask, Sample
from forgery_site.errors import NotFound
from rounds.models import AnnotationTask, Round, Selection


def round_get(*, round_id: int) -> Round:
    round_ = Round.objects.select_related("dataset").filter(pk=round_id).first()
    if round_ is None:
        raise NotFound(f"Round {round_id} does not exist.")
    return round_


def round_list(*, dataset_id: int | None = None):
    rounds = Round.objects.select_related("dataset").order_by("-created_at")
    return rounds.filter(dataset_id=dataset_id) if dataset_id else rounds


def annotation_status(round_: Round) -> dict[str, Any]:
    """Selected, masked and skipped counts of a round, and whether annotation is over (and why)."""
    selected_ids = list(Selection.objects.filter(round=round_).values_list("sample_id", flat=True))
    masked = Mask.objects.filter(sample_id__in=selected_ids).values("sample_id").distinct().count()
    skipped = AnnotationTask.objects.filter(round=round_, status=AnnotationTask.Status.SKIPPED).count()
    progress = round_.progress or {}
    reason = None
    if progress.get("annotation_closed"):
        reason = "closed"
    elif selected_ids and masked + skipped >= len(selected_ids):
        reason = "complete"
    else:
        deadline = round_.config.get("annotation_deadline_s")
        started = ((progress.get("phases") or {}).get("annotating") or {}).get("t0")
        if deadline and started and time.time() - float(started) >= float(deadline):
            reason = "deadline"
    if not selected_ids and round_.state == Round.State.ANNOTATING:
        reason = reason or "nothing_selected"
    return {"selected": len(selected_ids), "masked": masked, "skipped": skipped, "finished": reason}


def dataset_mask_fraction(dataset_id: int, split: str = "train") -> tuple[int, int]:
    """(samples of ``split`` with at least one collected mask, samples of ``split``)."""
    samples = Sample.objects.filter(dataset_id=dataset_id, split=split)
    return samples.filter(masks__isnull=False).distinct().count(), samples.count()


def efficiency_curve(*, dataset_id: int) -> list[dict[str, Any]]:
    """One point per finished round: % of the training pool masked vs test AUC (seen/unseen) per detector."""
    points = []
    for round_ in Round.objects.filter(dataset_id=dataset_id, state=Round.State.DONE).order_by("number"):
        progress = round_.progress or {}
        metrics = progress.get("metrics") or {}
        point = {
            "round": round_.number,
            "round_id": round_.pk,
            "masked_fraction": progress.get("masked_fraction"),
        }
        for name, values in metrics.items():
            point[name] = {
                "auc_seen": (values.get("seen") or {}).get("auc"),
                "auc_unseen": (values.get("unseen") or {}).get("auc"),
            }
        points.append(point)
    return points
