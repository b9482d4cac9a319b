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
# What counts as the forged region: shown on the annotator's queue page and as the Label Studio
# project's instructions (before each labeling session).
INSTRUCTION = (
    "Paint every pixel that was manipulated: the swapped or re-enacted face area, a replaced eye, mouth "
    "or nose, an inpainted patch, including its blended border. Leave untouched background, hair and "
    "neck unpainted. The drafted mask is the detector's guess: erase what is wrong and paint what is "
    "missing. If nothing is forged choose 'real'; if you cannot tell, choose 'unsure' (no mask is kept); "
    "skip a face you cannot judge at all."
)


def webhook_url() -> str:
    return settings.LABELING_WEBHOOK_URL


def webhook_secret() -> str:
    secret = settings.WEBHOOK_SECRET
    if not secret:
        raise LabelStudioRejected(
            "WEBHOOK_SECRET is not set: Label Studio webhooks could not be authenticated"
        )
    return secret


def round_model_version(round_obj: Round) -> str:
    """The detector version that scored this round (its tag), else a stable placeholder."""
    from modelhub.models import DetectorVersion

    version = DetectorVersion.objects.filter(round=round_obj).order_by("-created_at").first()
    if version:
        return version.tag
    detectors = (round_obj.config or {}).get("detectors") or ["detector"]
    return f"{detectors[0]}-r{round_obj.number}"


def _storage_dir(paths: list[str]) -> Path:
    """The directory a Local Files storage must cover: common parent of the images, inside the media root."""
    root = media_root()
    parents = [str(root / PurePosixPath(p).parent) for p in paths] or [str(root)]
    common = Path(os.path.commonpath(parents))
    if not common.is_relative_to(root):
        raise LabelStudioRejected("sample paths escape the media root")
    return common


def project_ensure(*, round_id: int, client: LabelStudioClient | None = None) -> LabelingProject:
    """Create (once) the round's Label Studio project with storage + webhook; keep model_version current.
    Raises ``labeling.instance.WrongInstance`` when Label Studio is not the provisioned instance."""
    from labeling.instance import instance_check

    client = client or get_client()
    instance_check(client=client)
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
        description=f"Draw the forged region. Platform round {round_obj.pk}, drafts by detector {version}.",
        model_version=version,
        instruction=INSTRUCTION,
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


# -- annotators: onboarding and account lifecycle ---------------------------------------------------
#
# Label Studio Community keeps its own passwords: its users API ignores them, a person cannot change
# theirs in the UI, and there is no reset without mail. So the platform never invents a password for a
# person. An annotator joins the way Label Studio intends: through the organisation's invite link, shown
# on their queue page with the email to use, choosing their own password. The platform then links the
# two accounts by that email (``annotator_link``: on the queue page, from the "I have signed up" button,
# and when an annotation by an unknown Label Studio user arrives). The simulated oracle annotator is the
# one exception: a service account the platform creates and never logs in with
# (``service_annotator_provision``).
#
# Lifecycle: losing the annotator role or being deactivated removes the Label Studio membership
# (``annotator_remove``; Label Studio then answers 403 on every project). Getting the role back shows the
# invite again; Label Studio Community has no API to restore a removed membership, so on a local install
# the admin runs ``deploy/labelstudio/ls.sh restore-member EMAIL`` and the account links again.
# Label Studio does not let anyone change a user's email (read-only in its API): a platform email change
# keeps the link (by Label Studio user id) and ``ls_email`` stays the address to log in with.


def annotator_email(user) -> str:
    """The email an annotator uses in Label Studio (a stable placeholder for users without one)."""
    return (user.email or f"{user.username}@annotators.forgerylab.local").strip().lower()


def public_url(path: str = "") -> str:
    base = settings.LABEL_STUDIO_PUBLIC_URL or settings.LABEL_STUDIO_URL
    return f"{base.rstrip('/')}{path}"


def invite_url(*, client: LabelStudioClient | None = None) -> str:
    """The organisation's invite link, as the annotator's browser reaches Label Studio."""
    return public_url((client or get_client()).invite_path())


def _account(user, *, is_oracle: bool = False) -> AnnotatorAccount:
    account, _ = AnnotatorAccount.objects.get_or_create(
        user=user, defaults={"ls_email": annotator_email(user), "is_oracle": is_oracle}
    )
    return account


def annotator_invite(*, user_id: int, client: LabelStudioClient | None = None) -> AnnotatorAccount:
    """The user became (or is again) an annotator: record the invitation and link at once when a Label
    Studio member with their email exists already (idempotent; creates no Label Studio user)."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(pk=user_id)
    account = _account(user)
    if account.status == AnnotatorAccount.Status.REMOVED and account.ls_user_id is None:
        account.status = AnnotatorAccount.Status.INVITED
        account.save(update_fields=["status"])
    return annotator_link(user_id=user_id, client=client)


def annotator_link(*, user_id: int, client: LabelStudioClient | None = None) -> AnnotatorAccount:
    """Link the annotator to the Label Studio member with their email, if one has joined.

    A removed account is linked again only once its membership is back (Label Studio lists a removed
    member under the email "Deleted", so a member counts only under its own email); a joined account whose Label Studio user is gone (a fresh Label Studio database) goes back
    to invited."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from labeling.instance import instance_check

    user = get_user_model().objects.get(pk=user_id)
    account = _account(user)
    instance_check(client=client)  # never link people to the users of a reset or foreign Label Studio
    email = account.ls_email.lower()
    members = [u for u in (client or get_client()).users_list() if (u.get("email") or "").lower() == email]
    member = next((u for u in members if int(u["id"]) == account.ls_user_id), None) or next(
        iter(members), None
    )
    now = timezone.now()
    with transaction.atomic():
        account = AnnotatorAccount.objects.select_for_update().get(pk=account.pk)
        account.last_checked_at = now
        if member is not None and (account.status != AnnotatorAccount.Status.REMOVED or _has_role(user)):
            ls_id = int(member["id"])
            AnnotatorAccount.objects.filter(ls_user_id=ls_id).exclude(pk=account.pk).update(ls_user_id=None)
            if account.status != AnnotatorAccount.Status.JOINED or account.ls_user_id != ls_id:
                account.joined_at = now
            account.ls_user_id, account.status, account.removed_at = (
                ls_id,
                AnnotatorAccount.Status.JOINED,
                None,
            )
        elif member is None and account.status == AnnotatorAccount.Status.JOINED:
            account.status = AnnotatorAccount.Status.INVITED  # its Label Studio user is gone
            account.ls_user_id = None
        account.save()
    logger.info(
        "annotator link checked",
        extra={"user": user_id, "status": account.status, "ls_user": account.ls_user_id},
    )
    return account


def annotator_link_ls_user(
    *, ls_user_id: int, client: LabelStudioClient | None = None
) -> AnnotatorAccount | None:
    """An annotation by a Label Studio user no account is linked to: link it by email if that email
    belongs to a platform annotator (None otherwise: the annotation keeps no author)."""
    from django.contrib.auth import get_user_model

    members = (client or get_client()).users_list()
    member = next((u for u in members if int(u["id"]) == int(ls_user_id)), None)
    if member is None or "@" not in (member.get("email") or ""):  # unknown, or a removed member
        return None
    email = member["email"].lower()
    account = AnnotatorAccount.objects.filter(ls_email__iexact=email).select_related("user").first()
    user = account.user if account else get_user_model().objects.filter(email__iexact=email).first()
    if user is None or not _has_role(user):
        return None
    return annotator_link(user_id=user.pk, client=client)


def annotator_remove(*, user_id: int, client: LabelStudioClient | None = None) -> AnnotatorAccount | None:
    """The user lost the annotator role or was deactivated: remove their Label Studio membership."""
    from django.utils import timezone

    account = AnnotatorAccount.objects.filter(user_id=user_id).first()
    if account is None or account.is_oracle or account.status == AnnotatorAccount.Status.REMOVED:
        return account
    if account.ls_user_id is not None:
        (client or get_client()).member_remove(account.ls_user_id)
    account.status, account.removed_at = AnnotatorAccount.Status.REMOVED, timezone.now()
    account.save(update_fields=["status", "removed_at"])
    logger.info("annotator removed from Label Studio", extra={"user": user_id, "ls_user": account.ls_user_id})
    return account


def _has_role(user) -> bool:
    from accounts.roles import ANNOTATOR

    return user.is_active and user.groups.filter(name=ANNOTATOR).exists()


def service_annotator_provision(
    *, user_id: int, is_oracle: bool = True, client: LabelStudioClient | None = None
) -> AnnotatorAccount:
    """A Label Studio user for a service annotator (the oracle): created through the invite link with
    a random password nobody needs (it annotates through the API as ``completed_by``). Idempotent."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from labeling.instance import instance_check

    user = get_user_model().objects.get(pk=user_id)
    client = client or get_client()
    instance_check(client=client)
    account = _account(user, is_oracle=is_oracle)
    members = client.users_list()
    if any(
        int(u["id"]) == account.ls_user_id and (u.get("email") or "").lower() == account.ls_email
        for u in members
    ):
        return account
    existing = next((u for u in members if (u.get("email") or "").lower() == account.ls_email), None)
    if existing is not None:
        ls_id = int(existing["id"])
    else:
        ls_id = client.user_signup(
            email=account.ls_email, password=secrets.token_urlsafe(18), username=user.username
        )
    AnnotatorAccount.objects.filter(ls_user_id=ls_id).exclude(pk=account.pk).update(ls_user_id=None)
    account.ls_user_id, account.status, account.is_oracle = ls_id, AnnotatorAccount.Status.JOINED, is_oracle
    account.joined_at = account.joined_at or timezone.now()
    account.save()
    return account


def annotator_stream_url(*, round_id: int) -> str | None:
    """Where an annotator labels this round: Label Studio's labeling stream of the round's project."""
    project = LabelingProject.objects.filter(round_id=round_id).first()
    if project is None:
        return None
    return public_url(f"/projects/{project.ls_project_id}/data?labeling=1")
