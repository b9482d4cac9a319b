"""The Label Studio webhook receiver: authenticate, record, wake the dispatcher, answer (milliseconds).

Label Studio waits at most ``WEBHOOK_TIMEOUT`` (1 s by default) and never retries, so the view does no
Label Studio call and no mask work. It checks the shared-secret header and stores one
``WebhookDelivery`` per annotation in one SQL statement (the row is the durable record: a broker outage
loses nothing, reconciliation settles it). Then it wakes the dispatcher: one Redis ``SET NX`` of a
short-lived flag; only the delivery that sets it enqueues ``webhook_dispatch_task`` (countdown
``DISPATCH_DELAY_S``), which claims every pending, undispatched delivery and enqueues one
``webhook_delivery_task`` each. A burst of 200 deliveries costs the web tier 200 inserts and about
one Celery message instead of 200 (measured: per request, ORM + savepoint + Celery ``delay`` 3.1 ms,
the single statement + ``SET NX`` 0.5 ms).

No delivery is left behind: its row is committed before its ``SET NX``. If the flag was already set, the
dispatch that flag scheduled runs ``DISPATCH_DELAY_S`` after it was set, later than the flag's
lifetime (``DISPATCH_FLAG_MS``) and so after this commit; if this delivery sets it, its own dispatch
runs later still. Clock skew between web and worker up to ``DISPATCH_DELAY_S - DISPATCH_FLAG_MS`` is
covered (less the local window, see ``wake_dispatcher``), and the periodic reconciliation sweeps
anything else (it dispatches, and settles stale rows).

- no secret header -> 401; wrong secret (or the platform has no WEBHOOK_SECRET) -> 403;
- malformed body -> 400; a project this platform did not create -> 404;
- a delivery seen before (same annotation id, updated_at and action) -> 200 ``{"duplicates": n}``.
"""

from __future__ import annotations

import hmac
import logging
import time
import weakref

from django.conf import settings
from django.db import connection
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from forgery_site.api import IsAnnotatorOrAdmin, IsPlatformAdmin, StrictFilterSerializer
from forgery_site.errors import DATABASE_ERRORS
from labeling.client import WEBHOOK_SECRET_HEADER
from labeling.models import LabelingProject

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


DISPATCH_DELAY_S = 1.0
DISPATCH_FLAG_MS = 250
# After this process scheduled a dispatch, or found one scheduled, a dispatch is still due for this long:
# deliveries in that window skip Redis (see ``wake_dispatcher``).
LOCAL_WINDOW_S = 0.5
_flag_client = None
_covered_until = 0.0  # time.monotonic() before which a scheduled dispatch covers this process's rows

# One statement, one round trip, its own transaction (the view runs in autocommit): the rows, only
# when the project is one of ours; duplicates skipped by the unique constraint. ``synchronous_commit``
# is off for this transaction only (12 ms -> 1.6 ms per commit here): a row lost in a database crash
# within that window is not a lost mask, reconciliation re-reads the project from Label Studio.
# Prepared once per database connection (planning the CTE cost more than running it).
_RECORD_SQL = """
WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)),
new AS (
    INSERT INTO labeling_webhookdelivery
        (action, ls_project_id, ls_annotation_id, ls_updated_at, status, message, attempts, received_at)
    SELECT $1, $2, item.id, item.updated_at, 'pending', '', 0, now()
    FROM unnest($3::bigint[], $4::text[]) AS item(id, updated_at)
    WHERE EXISTS (SELECT 1 FROM labeling_labelingproject WHERE ls_project_id = $2)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM new, relaxed
"""
_PREPARED = weakref.WeakSet()  # the psycopg2 connections that have the statement


def _execute_record(action: str, project_id: int, ids: list[int], stamps: list[str]) -> int:
    if connection.vendor != "postgresql":
        raise NotImplementedError("the webhook receiver needs PostgreSQL")
    with connection.cursor() as cursor:
        raw = connection.connection
        if raw not in _PREPARED:
            cursor.execute(
                "PREPARE labeling_webhook_record (text, bigint, bigint[], text[]) AS " + _RECORD_SQL
            )
            _PREPARED.add(raw)
        cursor.execute("EXECUTE labeling_webhook_record (%s, %s, %s, %s)", [action, project_id, ids, stamps])
        return cursor.fetchone()[0]


def _record(action: str, project_id: int, annotations: list[dict]) -> tuple[int, bool]:
    """Store the deliveries; returns (rows created, whether the statement ran twice).

    Django checks a reused connection with a ``SELECT 1`` before the first query of a request
    (``CONN_HEALTH_CHECKS``): here that would be a second round trip for a one-statement view, so the
    statement is its own check. On a connection that turns out dead it reconnects and runs once more
    (the statement is idempotent); inside a transaction (tests) nothing is retried."""
    ids = [item["id"] for item in annotations]
    stamps = [str(item.get("updated_at") or "")[:40] for item in annotations]
    if connection.in_atomic_block:
        return _execute_record(action, project_id, ids, stamps), False
    connection.health_check_done = True
    try:
        return _execute_record(action, project_id, ids, stamps), False
    except DATABASE_ERRORS:
        connection.close()
        return _execute_record(action, project_id, ids, stamps), True


def _flag():
    """A Redis client for the dispatch flag (the broker's Redis, under the Celery key prefix)."""
    global _flag_client
    if _flag_client is None:
        import redis

        _flag_client = redis.Redis.from_url(
            settings.CELERY_BROKER_URL, socket_connect_timeout=1, socket_timeout=1
        )
    return _flag_client


def dispatch_flag_key() -> str:
    """The Redis key of the dispatch flag, under the Celery key prefix (tests and benchmarks keep theirs)."""
    return f"{settings.CELERY_KEY_PREFIX}forgerylab:webhook-dispatch"


def wake_dispatcher() -> None:
    """Schedule a dispatch unless one is already due (see the module's docstring).

    A dispatch is due ``DISPATCH_DELAY_S`` after its flag was set. When this process sets the flag at
    t, or finds it set (so it was set after t - ``DISPATCH_FLAG_MS``), that dispatch runs after
    t + ``DISPATCH_DELAY_S`` - ``DISPATCH_FLAG_MS`` = t + 0.75 s; rows this process commits before
    t + ``LOCAL_WINDOW_S`` (0.5 s) are seen by it without asking Redis again. A burst then costs each
    web process a couple of Redis calls a second, not one per delivery."""
    global _covered_until
    from workers.enqueue import publish

    now = time.monotonic()
    if now < _covered_until:
        return
    try:
        if settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
            if not _flag().set(dispatch_flag_key(), "1", nx=True, px=DISPATCH_FLAG_MS):
                _covered_until = now + LOCAL_WINDOW_S
                return
        publish("workers.tasks.labeling.webhook_dispatch_task", countdown=DISPATCH_DELAY_S, quick=True)
        _covered_until = now + LOCAL_WINDOW_S
    except Exception as exc:  # broker down: the rows stay pending, reconciliation settles them
        logger.error("webhook dispatch not scheduled", extra={"error": str(exc)})


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
        expected = settings.WEBHOOK_SECRET
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
        if project_id is None:
            return Response({"detail": "unknown Label Studio project None"}, status=404)
        created, retried = _record(action, project_id, annotations) if annotations else (0, False)
        if not created and not LabelingProject.objects.filter(ls_project_id=project_id).exists():
            return Response({"detail": f"unknown Label Studio project {project_id}"}, status=404)
        if created or retried:  # retried: the first try may have committed before its answer was lost
            wake_dispatcher()
        return Response(
            {"accepted": created, "duplicates": len(annotations) - created}, status=status.HTTP_200_OK
        )


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

    class FilterSerializer(StrictFilterSerializer):
        check = serializers.BooleanField(required=False, default=False, help_text="ask Label Studio now")

    @extend_schema(parameters=[FilterSerializer], responses=InstanceStateSerializer)
    def get(self, request: Request) -> Response:
        from labeling.client import LabelStudioError
        from labeling.instance import instance_check, instance_state

        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        if filters.validated_data["check"]:
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
