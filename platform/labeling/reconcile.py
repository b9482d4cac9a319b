"""Reconciliation with Label Studio: repair what webhooks missed.

``project_reconcile`` reads a round's Label Studio project as it is now, adopts tasks an interrupted
push left unrecorded, ingests new and changed annotations (``labeling.ingest.annotation_ingest``),
forgets deleted ones and settles deliveries stuck in "pending"; a failure marks the project's sync
degraded.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from forgery_site.errors import StorageUnavailable
from labeling import masks
from labeling.client import LabelStudioClient, LabelStudioUnavailable, get_client
from labeling.ingest import AnnotationRejected, annotation_forget, annotation_ingest
from labeling.models import AnnotationRecord, LabelingProject, WebhookDelivery
from rounds.models import AnnotationTask, Selection

logger = logging.getLogger(__name__)


def _mark_degraded(project: LabelingProject, exc: Exception) -> None:
    LabelingProject.objects.filter(pk=project.pk).update(
        sync_state=LabelingProject.Sync.DEGRADED,
        sync_failures=project.sync_failures + 1,
        last_sync_error=str(exc)[:2000],
    )


def _adopt_unrecorded_tasks(project: LabelingProject, tasks: list[dict]) -> int:
    """Record Label Studio tasks of this round whose ids the platform never kept.

    A push interrupted after Label Studio imported a batch but before the platform's transaction
    committed (Label Studio or the database going down in between) leaves tasks in Label Studio that
    no ``AnnotationTask`` points at; their annotations would be rejected as "unknown task" forever.
    Each such task carries its ``sample_id``: when the sample is in the round's selection and has no
    Label Studio task yet, the task is adopted. A second task for a sample that already has one is
    left alone (its annotations stay rejected, and logged).
    """
    recorded = set(
        AnnotationTask.objects.filter(ls_task_id__in=[int(t["id"]) for t in tasks]).values_list(
            "ls_task_id", flat=True
        )
    )
    candidates = {}
    for task in tasks:
        sample_id = (task.get("data") or {}).get("sample_id")
        if int(task["id"]) not in recorded and isinstance(sample_id, int) and not isinstance(sample_id, bool):
            candidates.setdefault(sample_id, int(task["id"]))
    if not candidates:
        return 0
    selected = set(
        Selection.objects.filter(round_id=project.round_id, sample_id__in=candidates).values_list(
            "sample_id", flat=True
        )
    )
    adopted = 0
    for sample_id in sorted(selected):
        with transaction.atomic():
            task, _ = AnnotationTask.objects.select_for_update().get_or_create(
                round_id=project.round_id,
                sample_id=sample_id,
                defaults={"ls_project_id": project.ls_project_id},
            )
            if task.ls_task_id is not None:
                continue
            task.ls_task_id, task.ls_project_id = candidates[sample_id], project.ls_project_id
            task.status = AnnotationTask.Status.CREATED
            task.save(update_fields=["ls_task_id", "ls_project_id", "status", "updated_at"])
            adopted += 1
    if adopted:
        logger.warning(
            "adopted unrecorded Label Studio tasks", extra={"round": project.round_id, "tasks": adopted}
        )
    return adopted


def project_reconcile(*, project: LabelingProject, client: LabelStudioClient | None = None) -> dict:
    """Repair what webhooks missed: adopt tasks an interrupted push left unrecorded, ingest new/changed
    annotations, forget deleted ones.

    Raises ``LabelStudioUnavailable`` or ``StorageUnavailable`` (after marking the sync degraded) so the
    caller retries with backoff; what was ingested before the failure stays (each annotation is its own
    transaction) and the next pass picks up the rest.
    """
    from labeling.instance import WrongInstance, instance_check

    client = client or get_client()
    counts = {"seen": 0, "stored": 0, "unchanged": 0, "recorded": 0, "rejected": 0, "forgotten": 0}
    try:
        instance_check(client=client)
    except LabelStudioUnavailable as exc:  # down: degraded, and the caller retries with backoff
        _mark_degraded(project, exc)
        raise
    except WrongInstance as exc:  # reading another instance would take every annotation for deleted
        _mark_degraded(project, exc)
        logger.error("reconciliation stopped: wrong Label Studio instance", extra={"project": project.pk})
        return {**counts, "wrong_instance": True}
    read_started = timezone.now()
    # What the platform knew *before* reading Label Studio. An annotation that a webhook stores while the
    # read is under way is absent from the listing but must not be taken for a deleted one (that
    # forgot fresh masks and stored them again as duplicate versions on the next pass).
    known = dict(
        # Negative ids are archived records of a previous Label Studio instance (``labeling.instance``):
        # never in this instance's listing, never "deleted" by it.
        AnnotationRecord.objects.filter(
            task__round_id=project.round_id, deleted=False, ls_annotation_id__gt=0
        ).values_list("ls_annotation_id", "ls_updated_at")
    )
    try:
        tasks = list(client.tasks_iter(project_id=project.ls_project_id))
    except LabelStudioUnavailable as exc:
        _mark_degraded(project, exc)
        raise
    counts["adopted"] = _adopt_unrecorded_tasks(project, tasks)
    seen: set[int] = set()
    for task in tasks:
        for annotation in task.get("annotations") or []:
            annotation.setdefault("task", task["id"])
            annotation.setdefault("project", project.ls_project_id)
            seen.add(int(annotation["id"]))
            counts["seen"] += 1
            if known.get(int(annotation["id"])) == str(annotation.get("updated_at") or ""):
                counts["unchanged"] += 1
                continue
            try:
                counts[annotation_ingest(annotation)] += 1
            except (AnnotationRejected, masks.MaskRejected) as exc:
                counts["rejected"] += 1
                logger.warning(
                    "annotation rejected", extra={"annotation": annotation["id"], "reason": str(exc)}
                )
            except StorageUnavailable as exc:  # media volume full/read-only: retried, nothing settled
                _mark_degraded(project, exc)
                raise
    for missing in set(known) - seen:
        counts["forgotten"] += int(annotation_forget(annotation_id=missing))
    # Deliveries stuck in "pending" (broker down when they arrived) are settled by what we just read:
    # only those received before the read began (a long pass must not settle a later change unread).
    stale = min(read_started, timezone.now() - timedelta(seconds=60))
    WebhookDelivery.objects.filter(
        ls_project_id=project.ls_project_id, status=WebhookDelivery.Status.PENDING, received_at__lt=stale
    ).update(
        status=WebhookDelivery.Status.UNCHANGED,
        message="settled by reconciliation",
        processed_at=timezone.now(),
    )
    LabelingProject.objects.filter(pk=project.pk).update(
        sync_state=LabelingProject.Sync.OK, sync_failures=0, last_sync_at=timezone.now(), last_sync_error=""
    )
    return counts
