"""The Label Studio webhook receiver: authenticate, record, enqueue, answer (milliseconds).

Label Studio waits at most ``WEBHOOK_TIMEOUT`` (1 s by default) and never retries, so the view does no
Label Studio call and no mask work: it checks the shared-secret header, stores one ``WebhookDelivery``
per annotation (the row is the durable record: a broker outage loses nothing, reconciliation settles
it) and enqueues ``webhook_delivery_task`` after the commit.

- no secret header -> 401; wrong secret (or the platform has no WEBHOOK_SECRET) -> 403;
- malformed body -> 400; a project this platform did not create -> 404;
- a delivery seen before (same annotation id, updated_at and action) -> 200 ``{"duplicates": n}``.
"""

from __future__ import annotations

import hmac
import logging

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from forgery_site.api import IsAnnotatorOrAdmin, IsPlatformAdmin
from labeling.client import WEBHOOK_SECRET_HEADER
from labeling.models import LabelingProject, WebhookDelivery

logger = logging.getLogger(__name__)

ANNOTATION_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED"}
DELETE_ACTIONS = {"ANNOTATIONS_DELETED", "ANNOTATION_DELETED"}


def _annotations(body: dict, action: str) -> list[dict]:
    raw = body.get("annotations") if action in DELETE_ACTIONS else body.get("annotation")
    if raw is None and action in DELETE_ACTIONS:
        raw = body.get("annotation")
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), int) or isinstance(item["id"], bool):
            raise ValueError("every annotation needs an integer id")
        if not 0 < item["id"] < 2**63:  # Label Studio ids are positive; the column is a bigint
            raise ValueError(f"annotation id {item['id']} is out of range")
        if "\x00" in str(item.get("updated_at") or ""):
            raise ValueError("annotation updated_at contains a NUL character")
        out.append(item)
    return out


def _enqueue(delivery_ids: list[int]) -> None:
    from workers.tasks.labeling import webhook_delivery_task

    for delivery_id in delivery_ids:
        try:
            webhook_delivery_task.delay(delivery_id)
        except Exception as exc:  # noqa: BLE001 - broker down: the row stays pending, reconciliation settles it
            logger.error("webhook enqueue failed", extra={"delivery": delivery_id, "error": str(exc)})


def _relax_commit() -> None:
    """Do not wait for the WAL flush of this one transaction (PostgreSQL: 12 ms -> 1.6 ms per commit here).

    A delivery row lost in a database crash within that window is not a lost mask: reconciliation
    re-reads every annotation of the project from Label Studio.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit = off")


class LabelStudioWebhookApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @extend_schema(
        auth=[],
        parameters=[
            OpenApiParameter(
                WEBHOOK_SECRET_HEADER, OpenApiTypes.STR, OpenApiParameter.HEADER, required=True,
                description="the shared secret (WEBHOOK_SECRET) Label Studio sends with every delivery",
            )
        ],
        request={
            "application/json": {
                "type": "object",
                "required": ["action"],
                "properties": {
                    "action": {"type": "string", "example": "ANNOTATION_CREATED"},
                    "project": {"type": "object", "properties": {"id": {"type": "integer"}}},
                    "annotation": {"type": "object", "properties": {"id": {"type": "integer"}}},
                    "annotations": {"type": "array", "items": {"type": "object"}},
                },
            }
        },
        responses={200: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT, 401: OpenApiTypes.OBJECT,
                   403: OpenApiTypes.OBJECT, 404: OpenApiTypes.OBJECT},
    )  # fmt: skip
    def post(self, request: Request) -> Response:
        given = request.headers.get(WEBHOOK_SECRET_HEADER)
        if not given:
            return Response({"detail": "missing webhook secret header"}, status=status.HTTP_401_UNAUTHORIZED)
        expected = getattr(settings, "WEBHOOK_SECRET", "")
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            return Response({"detail": "wrong webhook secret"}, status=status.HTTP_403_FORBIDDEN)
        body = request.data
        action = body.get("action") if isinstance(body, dict) else None
        if not isinstance(action, str):
            return Response({"detail": "body must be a JSON object with an action"}, status=400)
        if action not in ANNOTATION_ACTIONS | DELETE_ACTIONS:
            return Response({"ignored": action}, status=status.HTTP_200_OK)
        project = body.get("project")
        project_id = project.get("id") if isinstance(project, dict) else project
        try:
            annotations = _annotations(body, action)
            project_id = int(project_id) if project_id is not None else None
        except (TypeError, ValueError) as exc:
            return Response({"detail": f"malformed webhook: {exc}"}, status=400)
        if project_id is None or not LabelingProject.objects.filter(ls_project_id=project_id).exists():
            return Response({"detail": f"unknown Label Studio project {project_id}"}, status=404)
        created, duplicates = [], 0
        with transaction.atomic():
            _relax_commit()
            for item in annotations:
                try:
                    with transaction.atomic():  # a savepoint: one duplicate must not undo the others
                        delivery = WebhookDelivery.objects.create(
                            action=action,
                            ls_project_id=project_id,
                            ls_annotation_id=item["id"],
                            ls_updated_at=str(item.get("updated_at") or "")[:40],
                        )
                    created.append(delivery.pk)
                except IntegrityError:
                    duplicates += 1
            transaction.on_commit(lambda ids=tuple(created): _enqueue(list(ids)))
        return Response({"accepted": len(created), "duplicates": duplicates}, status=status.HTTP_200_OK)


def onboarding_state(user, *, link: bool = False) -> dict:
    """What an annotator needs to get into Label Studio (``GET/POST /api/v1/labeling/me``, queue page).

    ``link``: ask Label Studio first whether the annotator has joined (one users call). Label Studio
    being unreachable is reported in ``error``, never raised: the page still shows the stored state."""
    from accounts.roles import ANNOTATOR
    from labeling.client import LabelStudioError
    from labeling.models import AnnotatorAccount
    from labeling.provisioning import annotator_email, annotator_invite, invite_url, public_url

    state: dict = {"annotator": user.groups.filter(name=ANNOTATOR).exists(), "error": ""}
    account = AnnotatorAccount.objects.filter(user=user).first()
    if state["annotator"] and (link or account is None):
        try:
            account = annotator_invite(user_id=user.pk)
        except LabelStudioError as exc:
            state["error"] = f"Label Studio cannot be reached right now ({exc})."
    state.update(
        status=account.status if account else ("invited" if state["annotator"] else None),
        email=account.ls_email if account else annotator_email(user),
        ls_user_id=account.ls_user_id if account else None,
        label_studio_url=public_url(""),
        invite_url=None,
    )
    if state["annotator"] and state["status"] == AnnotatorAccount.Status.INVITED and not state["error"]:
        try:
            state["invite_url"] = invite_url()
        except LabelStudioError as exc:
            state["error"] = f"Label Studio cannot be reached right now ({exc})."
    return state


class OnboardingOutputSerializer(serializers.Serializer):
    annotator = serializers.BooleanField()
    status = serializers.ChoiceField(choices=["invited", "joined", "removed"], allow_null=True)
    email = serializers.EmailField()
    ls_user_id = serializers.IntegerField(allow_null=True)
    label_studio_url = serializers.CharField()
    invite_url = serializers.CharField(allow_null=True)
    error = serializers.CharField(allow_blank=True)


class AnnotatorOnboardingApi(APIView):
    """``GET``: the caller's Label Studio onboarding state; ``POST``: "I have signed up", link now.

    Label Studio being unreachable is not a failure of this call: the stored state comes back with the
    reason in ``error`` (the queue page shows it). For a user without the annotator role ``annotator``
    is false and nothing is linked."""

    permission_classes = [IsAnnotatorOrAdmin]

    @extend_schema(responses=OnboardingOutputSerializer)
    def get(self, request: Request) -> Response:
        return Response(onboarding_state(request.user))

    @extend_schema(request=None, responses=OnboardingOutputSerializer)
    def post(self, request: Request) -> Response:
        return Response(onboarding_state(request.user, link=True))


class InstanceStateSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=["ok", "wrong_instance", "unknown"])
    detail = serializers.CharField(required=False)
    current = serializers.CharField(required=False, help_text="marker of the provisioned instance")
    answering = serializers.CharField(required=False, help_text="marker of the instance answering now")
    url = serializers.CharField(required=False)
    since = serializers.CharField(required=False)
    last_seen = serializers.CharField(required=False)
    error = serializers.CharField(required=False)


class InstanceApi(APIView):
    """Which Label Studio the platform provisioned and whether that is the one answering: ``state`` is
    ``ok``, ``wrong_instance`` (reset or replaced: pushes stop, reconciliation pauses) or ``unknown``
    (never contacted). ``?check=true`` asks Label Studio now."""

    permission_classes = [IsPlatformAdmin]

    @extend_schema(
        parameters=[OpenApiParameter("check", OpenApiTypes.BOOL, required=False)],
        responses=InstanceStateSerializer,
    )
    def get(self, request: Request) -> Response:
        from labeling.client import LabelStudioError
        from labeling.instance import instance_check, instance_state

        if str(request.query_params.get("check", "")).lower() in ("1", "true", "yes"):
            try:
                instance_check()
            except LabelStudioError as exc:
                return Response({**instance_state(), "error": str(exc)})
        return Response(instance_state())


class InstanceReprovisionApi(APIView):
    """Adopt the answering Label Studio and push every live round's open tasks (with drafts) into it;
    the old instance's ids are archived, collected masks stay (``labeling.instance``)."""

    permission_classes = [IsPlatformAdmin]

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request) -> Response:
        from labeling.client import LabelStudioError
        from labeling.instance import instance_reprovision

        try:
            return Response(instance_reprovision())
        except LabelStudioError as exc:
            return Response(
                {"detail": f"Label Studio cannot be asked: {exc}", "code": "label_studio_unavailable"},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
                headers={"Retry-After": "30"},
            )
