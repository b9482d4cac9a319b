"""Which Label Studio the platform talks to, and what to do when it is not the one it provisioned.

At first contact the platform writes a marker into the organisation's title (``<title> · ForgeryLab
<marker>``) and records it (``LabelStudioInstance``, ``current``). Before provisioning, pushing and
reconciling (``instance_check``) it reads the title again: the same marker is the same instance; another
marker or none means the server behind LABEL_STUDIO_URL was reset or replaced (an empty Label Studio
started on a new database, another install). The integration is then ``wrong_instance``: pushes stop
with a readable reason on the round (it waits in ``selecting`` instead of failing with an
IntegrityError on project ids the new instance reuses), reconciliation does not run (it would take every
collected annotation for deleted), and the API, the dashboard and ``/health`` say so.

An admin resolves it either by pointing the platform back at the right Label Studio, or by adopting the
new one (``instance_reprovision``, ``POST /api/v1/labeling/instance/reprovision``): the old instance's
Label Studio ids are archived (projects, tasks and annotation records keep their history under negative
ids, so nothing collides with the new instance's numbering and no collected mask is forgotten), annotator
accounts go back to *invited* (people join the new instance), and every live round's open tasks are
pushed again with their drafts; masks already collected stay as they are, in the platform.
"""

from __future__ import annotations

import logging
import re
import secrets

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from labeling.client import LabelStudioClient, LabelStudioRejected, get_client
from labeling.models import AnnotationRecord, AnnotatorAccount, LabelingProject, LabelStudioInstance

logger = logging.getLogger(__name__)

MARKER = re.compile(r"ForgeryLab ([0-9a-f]{12})\b")
ARCHIVE_STEP = 2**40  # archived ids: -(id + generation * ARCHIVE_STEP), never a live Label Studio id


class WrongInstance(LabelStudioRejected):
    """The Label Studio behind LABEL_STUDIO_URL is not the instance this platform provisioned."""


def _mark(client: LabelStudioClient, organization: dict, marker: str) -> None:
    title = re.sub(r"\s*·?\s*ForgeryLab [0-9a-f]{12}\b", "", str(organization.get("title") or "")).strip()
    client.organization_rename(organization["id"], f"{title or 'Label Studio'} · ForgeryLab {marker}")


def instance_check(*, client: LabelStudioClient | None = None) -> LabelStudioInstance:
    """The current instance, after checking that it is the one answering; ``WrongInstance`` otherwise.
    At first contact (no current instance yet) the answering one is marked and becomes current."""
    client = client or get_client()
    organization = client.organization()
    found = MARKER.search(str(organization.get("title") or ""))
    with transaction.atomic():
        current = LabelStudioInstance.objects.select_for_update().filter(current=True).first()
        if current is None:
            marker = found.group(1) if found else secrets.token_hex(6)
            if not found:
                _mark(client, organization, marker)
            current, _ = LabelStudioInstance.objects.update_or_create(
                marker=marker,
                defaults={"url": client.url, "organization_id": organization.get("id"), "current": True,
                          "organization_created_at": str(organization.get("created_at") or "")},
            )  # fmt: skip
            logger.info("label studio instance recorded", extra={"marker": marker, "url": client.url})
            return current
        if found and found.group(1) == current.marker:
            LabelStudioInstance.objects.filter(pk=current.pk).update(last_seen=timezone.now(), url=client.url)
            return current
        seen_marker = (
            found.group(1)
            if found
            else f"unmarked-{organization.get('id')}-{str(organization.get('created_at'))[:19]}"
        )
        LabelStudioInstance.objects.update_or_create(
            marker=seen_marker[:32],
            defaults={"url": client.url, "organization_id": organization.get("id"), "current": False,
                      "organization_created_at": str(organization.get("created_at") or "")},
        )  # fmt: skip
    raise WrongInstance(
        f"Label Studio at {client.url} is not the instance this platform provisioned (marker "
        f"{current.marker}, organisation created {current.organization_created_at or 'unknown'}; this one: "
        f"{'marker ' + found.group(1) if found else 'no marker'}, created {organization.get('created_at')}). "
        "It was reset or replaced: the live rounds' projects and annotations are not in it. Point the "
        "platform back at the right Label Studio, or re-provision the live rounds into this one "
        "(POST /api/v1/labeling/instance/reprovision or manage.py labeling_reprovision)."
    )


def instance_state() -> dict:
    """For the API, the dashboard and /health: no Label Studio call, what the last check recorded."""
    current = LabelStudioInstance.objects.filter(current=True).first()
    latest = LabelStudioInstance.objects.order_by("-last_seen").first()
    if current is None:
        return {"state": "unknown", "detail": "no Label Studio contacted yet"}
    if latest is not None and not latest.current and latest.last_seen >= current.last_seen:
        return {
            "state": "wrong_instance",
            "current": current.marker,
            "answering": latest.marker,
            "url": latest.url,
            "since": latest.last_seen.isoformat(),
            "detail": "Label Studio was reset or replaced; an admin re-provisions the live rounds into it "
            "or points the platform back at the provisioned one",
        }
    return {
        "state": "ok",
        "current": current.marker,
        "url": current.url,
        "last_seen": current.last_seen.isoformat(),
    }


def instance_reprovision(*, client: LabelStudioClient | None = None) -> dict:
    """Adopt the answering Label Studio as current and push every live round into it (module docstring)."""
    from rounds.models import AnnotationTask, Round

    client = client or get_client()
    organization = client.organization()
    found = MARKER.search(str(organization.get("title") or ""))
    current = LabelStudioInstance.objects.filter(current=True).first()
    if current is not None and found and found.group(1) == current.marker:
        return {"reprovisioned": False, "detail": "the answering Label Studio is already the current one"}
    generation = LabelStudioInstance.objects.filter(current=False).count() + 1
    offset = generation * ARCHIVE_STEP
    live_states = (Round.State.SELECTING, Round.State.ANNOTATING)
    with transaction.atomic():
        # Archive the old instance's ids (history stays; nothing collides with the new numbering).
        LabelingProject.objects.filter(ls_project_id__gt=0).update(
            ls_project_id=-(F("ls_project_id") + offset), active=False
        )
        AnnotationRecord.objects.filter(ls_annotation_id__gt=0).update(
            ls_annotation_id=-(F("ls_annotation_id") + offset)
        )
        done = AnnotationTask.objects.filter(
            status__in=(AnnotationTask.Status.ANNOTATED, AnnotationTask.Status.SKIPPED)
        )
        done.filter(ls_task_id__gt=0).update(ls_task_id=-(F("ls_task_id") + offset))
        reopened = AnnotationTask.objects.filter(round__state__in=live_states, ls_task_id__gt=0).exclude(
            status__in=(AnnotationTask.Status.ANNOTATED, AnnotationTask.Status.SKIPPED)
        )
        reopened_count = reopened.update(
            ls_task_id=None, ls_project_id=None, status=AnnotationTask.Status.PENDING
        )
        AnnotationTask.objects.filter(ls_task_id__gt=0).update(ls_task_id=-(F("ls_task_id") + offset))
        LabelingProject.objects.filter(round__state__in=live_states).delete()  # a new project per live round
        AnnotatorAccount.objects.filter(is_oracle=False).update(
            ls_user_id=None, status=AnnotatorAccount.Status.INVITED, joined_at=None
        )
        AnnotatorAccount.objects.filter(is_oracle=True).update(ls_user_id=None)
        LabelStudioInstance.objects.filter(current=True).update(current=False)
        marker = found.group(1) if found else secrets.token_hex(6)
        LabelStudioInstance.objects.filter(marker__startswith="unmarked-").delete()
        LabelStudioInstance.objects.update_or_create(
            marker=marker,
            defaults={"url": client.url, "organization_id": organization.get("id"), "current": True,
                      "organization_created_at": str(organization.get("created_at") or "")},
        )  # fmt: skip
    if not found:
        _mark(client, organization, marker)
    pushed = {}
    from labeling.provisioning import round_push_tasks

    for round_ in Round.objects.filter(
        state=Round.State.ANNOTATING, config__labeling="label_studio"
    ).order_by("pk"):
        pushed[round_.pk] = round_push_tasks(round_id=round_.pk, client=client)
    waiting = list(Round.objects.filter(state=Round.State.SELECTING).values_list("pk", flat=True))
    from workers.enqueue import dispatch_round

    for round_id in waiting:  # rounds whose push stopped on the wrong instance: push now
        dispatch_round(round_id)
    logger.warning("label studio re-provisioned", extra={"marker": marker, "rounds": sorted(pushed)})
    return {"reprovisioned": True, "marker": marker, "generation": generation, "rounds": pushed,
            "reopened_tasks": reopened_count, "selecting_rounds_dispatched": waiting}  # fmt: skip
