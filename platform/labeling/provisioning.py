"""Provisioning: a Label Studio project per round, its storage and webhook, the round's tasks, annotators.

**One project per round, not per dataset.** A round is the unit the platform reasons about: its
selection, its detector version and its completion. With a project per round
- the project's ``model_version`` is that round's detector version, so Label Studio's uncertainty
  ordering and prediction display always use the drafts this round pushed (with one project per
  dataset, switching ``model_version`` would hide earlier rounds' open drafts);
- "a mask for a sample not in the round" is checkable from the project alone, and "never two tasks
  for one sample in one round" is the project's own invariant;
- a finished round's project is simply marked inactive: reconciliation stops polling it.
The cost is one project per round in the Label Studio UI (titled ``<dataset> · round N``).

Drafts: the scoring stage may leave the detector's explanation map of a selected sample at
``MEDIA_ROOT/rounds/<round id>/drafts/<sample id>.png`` (grayscale, 0..255); it is thresholded at 128
and pushed as a brush prediction so annotators correct a draft instead of drawing from nothing. The
prediction's score is the model's confidence (``Selection.scores["confidence"]``, else from
``scores["prob"]``), so Label Studio's uncertainty sampling serves the least confident first.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import transaction

from catalog.paths import media_root
from labeling import masks
from labeling.client import LabelStudioClient, LabelStudioRejected, get_client
from labeling.models import AnnotatorAccount, LabelingProject
from rounds.models import AnnotationTask, Round, Selection

logger = logging.getLogger(__name__)

TASK_IMPORT_BATCH = 500


def webhook_url() -> str:
    return getattr(settings, "LABELING_WEBHOOK_URL", "") or os.environ.get(
        "LABELING_WEBHOOK_URL", "http://127.0.0.1:8000/api/v1/labeling/webhook"
    )


def webhook_secret() -> str:
    secret = getattr(settings, "WEBHOOK_SECRET", "")
    if not secret:
        raise LabelStudioRejected(
            "WEBHOOK_SECRET is not set: Label Studio webhooks could not be authenticated"
        )
    return secret


def round_model_version(round_obj: Round) -> str:
    """The detector version that scored this round (its tag), else a stable placeholder."""
    from modelhub.models import DetectorVersion

    version = DetectorVersion.objects.filter(round=round_obj).order_by("-created_at").first()
    return version.tag if version else f"{round_obj.detector_kind}-r{round_obj.number}"


def _storage_dir(paths: list[str]) -> Path:
    """The directory a Local Files storage must cover: common parent of the images, inside the media root."""
    root = media_root()
    parents = [str(root / PurePosixPath(p).parent) for p in paths] or [str(root)]
    common = Path(os.path.commonpath(parents))
    if not common.is_relative_to(root):
        raise LabelStudioRejected("sample paths escape the media root")
    return common


def project_ensure(*, round_id: int, client: LabelStudioClient | None = None) -> LabelingProject:
    """Create (once) the round's Label Studio project with storage + webhook; keep model_version current."""
    client = client or get_client()
    round_obj = Round.objects.select_related("dataset").get(pk=round_id)
    version = round_model_version(round_obj)
    existing = LabelingProject.objects.filter(round=round_obj).first()
    if existing is not None:
        if existing.model_version != version:
            client.project_update(existing.ls_project_id, model_version=version)
            existing.model_version = version
            existing.save(update_fields=["model_version"])
        return existing
    paths = list(Selection.objects.filter(round=round_obj).values_list("sample__path", flat=True))
    storage_dir = _storage_dir(paths)
    project_id = client.project_create(
        title=f"{round_obj.dataset.name} · round {round_obj.number}"[:50],
        description=f"Draw the forged region. Platform round {round_obj.pk}, detector {version}.",
        model_version=version,
    )
    try:
        storage_id = client.local_storage_create(project_id=project_id, path=str(storage_dir), title="media")
        hook_id = client.webhook_create(project_id=project_id, url=webhook_url(), secret=webhook_secret())
        annotators = int((round_obj.config or {}).get("annotators_per_task", 1))
        if annotators > 1:
            client.project_update(project_id, maximum_annotations=annotators)
        with transaction.atomic():
            project, created = LabelingProject.objects.get_or_create(
                round=round_obj,
                defaults={
                    "ls_project_id": project_id,
                    "ls_storage_id": storage_id,
                    "ls_webhook_id": hook_id,
                    "model_version": version,
                },
            )
    except Exception:
        client.project_delete(project_id)  # leave no half-provisioned project behind
        raise
    if not created:  # a concurrent call won the race: drop ours
        client.project_delete(project_id)
    logger.info("labeling project ready", extra={"round": round_id, "ls_project": project.ls_project_id})
    return project


def _draft_mask(round_id: int, sample_id: int, width: int, height: int):
    from rounds.phases.drafts import draft_relative

    path = media_root() / draft_relative(round_id, sample_id)
    if not path.is_file():
        return None
    try:
        return masks.read_mask_png(path, width=width, height=height)
    except (masks.MaskRejected, OSError) as exc:
        logger.warning("draft mask ignored", extra={"sample": sample_id, "error": str(exc)})
        return None


def _confidence(selection: Selection, total: int) -> float:
    scores = selection.scores or {}
    if "confidence" in scores:
        return float(scores["confidence"])
    if "prob" in scores:
        p = float(scores["prob"])
        return max(p, 1.0 - p)
    return selection.rank / max(total, 1)  # rank 1 = most informative = served first


def task_payload(selection: Selection, *, round_id: int, version: str, total: int) -> dict:
    sample = selection.sample
    data = {
        "image": f"/data/local-files/?d={sample.path}",
        "sample_id": sample.pk,
        "round_id": round_id,
        "external_id": sample.external_id,
    }
    result = []
    draft = _draft_mask(round_id, sample.pk, sample.width, sample.height)
    if draft is not None and draft.any():
        result.append(masks.brush_result(draft))
    prediction = {
        "model_version": version,
        "score": round(_confidence(selection, total), 6),
        "result": result,
    }
    return {"data": data, "predictions": [prediction]}


def round_push_tasks(*, round_id: int, client: LabelStudioClient | None = None) -> dict:
    """Push the round's selection to Label Studio in bulk; idempotent (one task per sample and round).

    Samples that already have a Label Studio task (recorded, or found in the project after a crash
    between import and commit) are not imported again.
    """
    client = client or get_client()
    project = project_ensure(round_id=round_id, client=client)
    with transaction.atomic():
        round_obj = Round.objects.select_for_update().get(pk=round_id)  # one pusher per round at a time
        selections = list(Selection.objects.filter(round=round_obj).select_related("sample").order_by("rank"))
        for sel in selections:
            AnnotationTask.objects.get_or_create(
                round=round_obj, sample=sel.sample, defaults={"ls_project_id": project.ls_project_id}
            )
        open_tasks = {
            t.sample_id: t for t in AnnotationTask.objects.filter(round=round_obj, ls_task_id__isnull=True)
        }
        adopted = 0
        if open_tasks:
            for brief in client.tasks_brief(project_id=project.ls_project_id):
                sample_id = (brief.get("data") or {}).get("sample_id")
                task = open_tasks.pop(sample_id, None) if isinstance(sample_id, int) else None
                if task is not None:
                    task.ls_task_id, task.ls_project_id = brief["id"], project.ls_project_id
                    task.status = AnnotationTask.Status.CREATED
                    task.save(update_fields=["ls_task_id", "ls_project_id", "status", "updated_at"])
                    adopted += 1
        todo = [sel for sel in selections if sel.sample_id in open_tasks]
        imported = 0
        for start in range(0, len(todo), TASK_IMPORT_BATCH):
            chunk = todo[start : start + TASK_IMPORT_BATCH]
            payloads = [
                task_payload(s, round_id=round_id, version=project.model_version, total=len(selections))
                for s in chunk
            ]
            ids = client.tasks_import(project_id=project.ls_project_id, tasks=payloads)
            if len(ids) != len(chunk):
                raise LabelStudioRejected(f"Label Studio returned {len(ids)} task ids for {len(chunk)} tasks")
            for sel, ls_id in zip(chunk, ids, strict=True):
                task = open_tasks[sel.sample_id]
                task.ls_task_id, task.ls_project_id = ls_id, project.ls_project_id
                task.status = AnnotationTask.Status.CREATED
                task.save(update_fields=["ls_task_id", "ls_project_id", "status", "updated_at"])
            imported += len(chunk)
    logger.info("tasks pushed", extra={"round": round_id, "imported": imported, "adopted": adopted})
    return {
        "project": project.ls_project_id,
        "imported": imported,
        "adopted": adopted,
        "total": len(selections),
    }


def project_close(*, round_id: int) -> None:
    """The round left annotating: stop reconciling its project (the project stays in Label Studio)."""
    LabelingProject.objects.filter(round_id=round_id).update(active=False)


def annotator_provision(
    *,
    user_id: int,
    password: str | None = None,
    is_oracle: bool = False,
    client: LabelStudioClient | None = None,
) -> AnnotatorAccount:
    """Give a platform annotator a Label Studio user (same email; idempotent).

    The user joins through the organization's invite link (Label Studio's users API ignores
    passwords). With ``password`` the annotator logs into Label Studio with it; without one (the
    automatic path when an annotator is created) a random password is set and the annotator uses
    Label Studio's own password reset, or an admin runs ``manage.py labeling_annotator USER --password``
    before the first provisioning.
    """
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(pk=user_id)
    client = client or get_client()
    ls_users = client.users_list()
    account = AnnotatorAccount.objects.filter(user=user).first()
    if account is not None and any(int(u["id"]) == account.ls_user_id for u in ls_users):
        if password:
            logger.warning(
                "Label Studio keeps its own passwords: change it in Label Studio", extra={"user": user_id}
            )
        return account
    # no account yet, or its Label Studio user is gone (a fresh Label Studio database): (re)provision
    email = user.email or f"{user.username}@annotators.forgerylab.local"
    existing = next((u for u in ls_users if (u.get("email") or "").lower() == email.lower()), None)
    if existing is not None:
        ls_id = int(existing["id"])  # adopted; its Label Studio password stays what it was
    else:
        ls_id = client.user_signup(
            email=email, password=password or secrets.token_urlsafe(18), username=user.username
        )
    AnnotatorAccount.objects.filter(ls_user_id=ls_id).exclude(user=user).delete()  # stale, from an old LS
    account, _ = AnnotatorAccount.objects.update_or_create(
        user=user, defaults={"ls_user_id": ls_id, "ls_email": email, "is_oracle": is_oracle}
    )
    return account


def annotator_stream_url(*, round_id: int) -> str | None:
    """Where an annotator labels this round: Label Studio's labeling stream of the round's project."""
    project = LabelingProject.objects.filter(round_id=round_id).first()
    if project is None:
        return None
    base = getattr(settings, "LABEL_STUDIO_PUBLIC_URL", "") or settings.LABEL_STUDIO_URL
    return f"{base.rstrip('/')}/projects/{project.ls_project_id}/data?labeling=1"
