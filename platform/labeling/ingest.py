"""From Label Studio annotations to versioned masks: ingestion and agreement.

The webhook view only records a ``WebhookDelivery`` and enqueues; everything here runs in a worker,
called from the delivery processing (``labeling.deliveries``) and the reconciliation
(``labeling.reconcile``).

Ingestion (``annotation_ingest``) takes an annotation as Label Studio returns it and
1. maps it to the round's ``AnnotationTask`` (unknown task, foreign project or a sample that is not in
   the round's selection -> ``AnnotationRejected``, nothing stored);
2. skips it when the same (annotation id, updated_at) was already ingested (duplicate webhooks,
   reconciliation racing a webhook);
3. ORs every "forgery" brush stroke / polygon into one mask at the sample's resolution (malformed RLE,
   a size mismatch -> rejected), writes the PNG atomically and stores a new ``Mask`` version;
4. records the verdict: "unsure" or a fake verdict without strokes stores no mask (the sample stays in
   the pool for review); "real" without strokes stores an empty mask; a skip marks the task skipped;
5. recomputes agreement when two or more annotators masked the sample: pairwise IoU, the majority
   vote becomes the newest mask version (what training reads), low agreement is flagged.
Training reads the newest ``Mask`` version of samples whose ``has_mask`` is true.
"""

from __future__ import annotations

import logging

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Max

from catalog.models import Mask, Sample
from catalog.paths import media_root
from catalog.storage import atomic_write_bytes, undo_on_error
from labeling import masks
from labeling.client import LabelStudioRejected, LabelStudioUnavailable
from labeling.models import (
    AnnotationRecord,
    AnnotatorAccount,
    LabelingProject,
    SampleAgreement,
)
from rounds.models import AnnotationTask, Selection

logger = logging.getLogger(__name__)


class AnnotationRejected(ValueError):
    """The annotation cannot become a mask; it is logged and nothing is stored."""


def low_agreement_iou() -> float:
    return float(settings.LABELING_LOW_AGREEMENT_IOU)


def _parse_result(result: list[dict]) -> tuple[str, str]:
    verdict, comment = "", ""
    for item in result:
        value = item.get("value") or {}
        if not isinstance(value, dict):
            raise AnnotationRejected("a result item's value is not an object")
        choices = value.get("choices")
        if item.get("type") == "choices" and choices:
            if not isinstance(choices, list):
                raise AnnotationRejected("the verdict's choices must be a list")
            verdict = str(choices[0])
        elif item.get("type") == "textarea" and value.get("text"):
            text = value["text"] if isinstance(value["text"], list) else [value["text"]]
            comment = "\n".join(str(t) for t in text).replace("\x00", "")  # PostgreSQL text holds no NUL
    if verdict not in AnnotationRecord.Verdict.values:
        raise AnnotationRejected(f"unknown verdict {verdict!r}")
    return verdict, comment


def _store_mask(sample: Sample, mask: np.ndarray, *, source: str, author, annotation_id: int | None) -> Mask:
    """Write the PNG atomically, then add the next Mask version (caller holds the sample's row lock).

    The file comes first, the row second, in the caller's transaction: a full or read-only media volume
    raises ``StorageUnavailable`` before any row exists, and the caller's ``undo_on_error`` removes the
    file again if the transaction rolls back later, so no row points at a missing file and no file is
    left that no row points at.
    """
    version = (Mask.objects.filter(sample=sample).aggregate(v=Max("version"))["v"] or 0) + 1
    suffix = f"a{annotation_id}" if annotation_id is not None else "consensus"
    relative = f"masks/{sample.dataset_id}/{sample.pk}/v{version}-{suffix}.png"
    checksum = atomic_write_bytes(
        media_root() / relative, masks.png_bytes(mask), what=f"the mask of sample {sample.pk}"
    )
    created = Mask.objects.create(
        sample=sample,
        version=version,
        source=source,
        author=author,
        ls_annotation_id=annotation_id,
        path=relative,
        area=float(mask.mean()) if mask.size else 0.0,
        checksum=checksum,
    )
    if not sample.has_mask:
        sample.has_mask = True
        sample.save(update_fields=["has_mask"])
    return created


def _load(mask_row: Mask) -> np.ndarray:
    return masks.read_mask_png(media_root() / mask_row.path)


def sample_refresh(*, round_id: int, sample: Sample) -> SampleAgreement | None:
    """Agreement and the effective mask after a change (new, updated or deleted annotation)."""
    live = list(
        AnnotationRecord.objects.filter(
            task__round_id=round_id, sample=sample, deleted=False, mask__isnull=False
        )
        .select_related("mask")
        .order_by("ls_annotation_id")
    )
    latest = Mask.objects.filter(sample=sample).order_by("-version").first()
    if len(live) < 2:
        SampleAgreement.objects.filter(round_id=round_id, sample=sample).delete()
        if not live:
            if sample.has_mask and latest is not None and latest.source != Mask.Source.MODEL_DRAFT:
                sample.has_mask = False  # every annotation behind the masks was deleted
                sample.save(update_fields=["has_mask"])
            return None
        if latest is not None and latest.pk != live[0].mask_id:
            # the newest version came from a deleted annotation or an old consensus: restore the survivor
            survivor = live[0]
            _store_mask(
                sample, _load(survivor.mask), source=survivor.mask.source, author=survivor.annotator,
                annotation_id=survivor.ls_annotation_id,
            )  # fmt: skip
        return None
    arrays = [_load(r.mask) for r in live]
    pairs = []
    for i in range(len(live)):
        for j in range(i + 1, len(live)):
            pairs.append(
                {
                    "a": live[i].ls_annotation_id,
                    "b": live[j].ls_annotation_id,
                    "iou": masks.iou(arrays[i], arrays[j]),
                }
            )
    mean_iou = float(np.mean([p["iou"] for p in pairs]))
    consensus = masks.majority_vote(arrays)
    sources = {r.mask.source for r in live}
    source = Mask.Source.ORACLE if sources == {Mask.Source.ORACLE} else Mask.Source.ANNOTATOR
    consensus_row = _store_mask(sample, consensus, source=source, author=None, annotation_id=None)
    agreement, _ = SampleAgreement.objects.update_or_create(
        round_id=round_id,
        sample=sample,
        defaults={
            "annotators": len(live),
            "pairwise_iou": pairs,
            "mean_iou": mean_iou,
            "low_agreement": mean_iou < low_agreement_iou(),
            "consensus_mask": consensus_row,
        },
    )
    if agreement.low_agreement:
        logger.warning("low agreement", extra={"sample": sample.pk, "mean_iou": round(mean_iou, 3)})
    return agreement


def annotation_ingest(annotation: dict) -> str:
    """Ingest one Label Studio annotation; returns "stored" | "unchanged" | "recorded". Idempotent."""
    try:
        annotation_id = int(annotation["id"])
        ls_task_id = int(annotation["task"])
        updated_at = str(annotation.get("updated_at") or "")
        result = annotation.get("result") or []
        if not isinstance(result, list):
            raise TypeError("result is not a list")
        if not all(isinstance(item, dict) for item in result):
            raise TypeError("every result item must be an object")
        if not (0 < annotation_id < 2**63 and 0 < ls_task_id < 2**63):
            raise ValueError("annotation or task id out of range")
        if "\x00" in updated_at:
            raise ValueError("updated_at contains a NUL character")
        ls_user = annotation.get("completed_by")
        ls_user = ls_user.get("id") if isinstance(ls_user, dict) else ls_user
        if ls_user is not None and (
            not isinstance(ls_user, int) or isinstance(ls_user, bool) or not 0 < ls_user < 2**63
        ):
            raise ValueError(f"completed_by {ls_user!r} is not a user id")
    except (KeyError, TypeError, ValueError) as exc:
        raise AnnotationRejected(f"malformed annotation: {exc}") from exc
    task = AnnotationTask.objects.filter(ls_task_id=ls_task_id).select_related("round").first()
    if task is None:
        raise AnnotationRejected(f"unknown Label Studio task {ls_task_id}")
    project = LabelingProject.objects.filter(round_id=task.round_id).first()
    ls_project = annotation.get("project")
    if project is None or (ls_project is not None and int(ls_project) != project.ls_project_id):
        raise AnnotationRejected(f"task {ls_task_id} does not belong to project {ls_project}")
    if not Selection.objects.filter(round_id=task.round_id, sample_id=task.sample_id).exists():
        raise AnnotationRejected(f"sample {task.sample_id} is not in round {task.round_id}")

    if ls_user is not None and not AnnotatorAccount.objects.filter(ls_user_id=ls_user).exists():
        _link_author(ls_user)  # a person who joined Label Studio but was not linked yet (outside the lock)
    with undo_on_error(), transaction.atomic():
        sample = Sample.objects.select_for_update().get(pk=task.sample_id)  # serialises mask versions
        record = AnnotationRecord.objects.filter(ls_annotation_id=annotation_id).first()
        if record is not None and record.ls_updated_at == updated_at and not record.deleted:
            return "unchanged"
        verdict, comment = _parse_result(result)
        cancelled = bool(annotation.get("was_cancelled"))
        mask, regions = masks.merge_result_masks(result, width=sample.width, height=sample.height)
        account = AnnotatorAccount.objects.filter(ls_user_id=ls_user).select_related("user").first()
        source = Mask.Source.ORACLE if account is not None and account.is_oracle else Mask.Source.ANNOTATOR
        author = account.user if account is not None else None
        stored = None
        if not cancelled and (regions > 0 or verdict == AnnotationRecord.Verdict.REAL):
            if verdict == AnnotationRecord.Verdict.REAL and regions == 0:
                mask = np.zeros((sample.height, sample.width), dtype=bool)
            stored = _store_mask(sample, mask, source=source, author=author, annotation_id=annotation_id)
        AnnotationRecord.objects.update_or_create(
            ls_annotation_id=annotation_id,
            defaults={
                "ls_updated_at": updated_at,
                "ls_user_id": ls_user,
                "task": task,
                "sample": sample,
                "annotator": author,
                "verdict": verdict,
                "comment": comment,
                "was_cancelled": cancelled,
                "regions": regions,
                "mask": stored,
                "deleted": False,
            },
        )
        task.status = AnnotationTask.Status.SKIPPED if cancelled else AnnotationTask.Status.ANNOTATED
        task.save(update_fields=["status", "updated_at"])
        sample_refresh(round_id=task.round_id, sample=sample)
    return "stored" if stored is not None else "recorded"


def annotation_forget(*, annotation_id: int) -> bool:
    """An annotation was deleted in Label Studio: drop it from agreement and the effective mask."""
    with undo_on_error(), transaction.atomic():
        record = (
            AnnotationRecord.objects.filter(ls_annotation_id=annotation_id).select_related("task").first()
        )
        if record is None or record.deleted:
            return False
        sample = Sample.objects.select_for_update().get(pk=record.sample_id)
        record.deleted = True
        record.save(update_fields=["deleted", "updated_at"])
        if not AnnotationRecord.objects.filter(task=record.task, deleted=False).exists():
            record.task.status = AnnotationTask.Status.CREATED
            record.task.save(update_fields=["status", "updated_at"])
        sample_refresh(round_id=record.task.round_id, sample=sample)
    return True


def _link_author(ls_user: int) -> AnnotatorAccount | None:
    """Link an annotation's Label Studio author by email (``provisioning.annotator_link_ls_user``); when
    Label Studio cannot be asked right now the annotation keeps no author rather than failing."""
    from labeling.provisioning import annotator_link_ls_user

    try:
        return annotator_link_ls_user(ls_user_id=ls_user)
    except (LabelStudioRejected, LabelStudioUnavailable) as exc:
        logger.warning("annotation author not linked", extra={"ls_user": ls_user, "error": str(exc)})
        return None
