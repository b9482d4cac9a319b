"""Operations API (admin only): ``GET /api/v1/operations/workers/`` and ``GET /api/v1/operations/queues/``.

Two endpoints because their costs differ: ``queues`` reads Redis list lengths (cheap, fresh on every
call), ``workers`` needs a broadcast to every worker and waits for their replies (cached a few seconds,
see ``forgery_site.operations``). A client that only watches queue depths never triggers a broadcast
more often than the cache allows. The broker unreachable answers 503 with ``Retry-After``.
"""

from __future__ import annotations

from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from forgery_site import operations
from forgery_site.api import IsPlatformAdmin
from forgery_site.operations_queues import BrokerUnavailable


class ErrorSerializer(serializers.Serializer):
    class Meta:
        ref_name = "OperationsError"

    detail = serializers.CharField()
    code = serializers.CharField()


class ActiveTaskSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    args = serializers.CharField(help_text="arguments, summarised and shortened")
    started_at = serializers.DateTimeField(allow_null=True)
    runtime_s = serializers.FloatField(allow_null=True)
    queue = serializers.CharField(help_text="routing key the task came with")
    worker_pid = serializers.IntegerField(allow_null=True)
    round_id = serializers.IntegerField(allow_null=True, help_text="the round this task works on, if any")


class WorkerSerializer(serializers.Serializer):
    hostname = serializers.CharField(help_text="Celery node name, e.g. gpu-0@host")
    status = serializers.CharField(
        help_text="`online`: answered inspect; `busy`: did not answer (a solo pool running a task) but its "
        "heartbeat is live, shown from its presence record"
    )
    pid = serializers.IntegerField(allow_null=True)
    pool = serializers.CharField(help_text="pool implementation: solo, prefork, threads, ...")
    concurrency = serializers.IntegerField(allow_null=True)
    processes = serializers.ListField(child=serializers.IntegerField())
    prefetch_count = serializers.IntegerField(allow_null=True)
    uptime_s = serializers.IntegerField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    queues = serializers.ListField(child=serializers.CharField())
    processed_total = serializers.IntegerField(
        allow_null=True, help_text="tasks received since the worker started (null when busy)"
    )
    processed = serializers.DictField(child=serializers.IntegerField(), help_text="per task name")
    active = ActiveTaskSerializer(many=True)
    reserved = serializers.IntegerField(allow_null=True, help_text="messages prefetched, waiting for a slot")
    max_rss_kb = serializers.IntegerField(allow_null=True)
    heartbeat_age_s = serializers.FloatField(allow_null=True, help_text="busy workers: age of the heartbeat")


class RoundHolderSerializer(serializers.Serializer):
    hostname = serializers.CharField()
    task = serializers.CharField()
    task_id = serializers.CharField()


class LiveRoundSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    dataset = serializers.CharField()
    number = serializers.IntegerField()
    state = serializers.CharField()
    phase = serializers.CharField()
    updated_at = serializers.DateTimeField()
    lock_held = serializers.BooleanField(help_text="a worker holds the round's phase lock (PostgreSQL)")
    workers = RoundHolderSerializer(many=True, help_text="workers running one of its tasks now")


class WorkersSerializer(serializers.Serializer):
    fetched_at = serializers.DateTimeField(help_text="when the workers were asked")
    age_s = serializers.FloatField(help_text="age of the cached answer")
    stale = serializers.BooleanField(help_text="an older answer served while another request asks")
    inspect_s = serializers.FloatField(help_text="how long asking the workers took")
    inspect_timeout_s = serializers.FloatField()
    workers = WorkerSerializer(many=True)
    rounds = LiveRoundSerializer(many=True)


class QueueSerializer(serializers.Serializer):
    name = serializers.CharField()
    depth = serializers.IntegerField(help_text="messages waiting (every priority list summed)")
    by_priority = serializers.DictField(
        child=serializers.IntegerField(), help_text="non-empty priority lists"
    )
    unacked = serializers.IntegerField(help_text="delivered to a worker, not acknowledged yet")
    consumers = serializers.ListField(child=serializers.CharField(), help_text="workers consuming it")
    platform = serializers.BooleanField(help_text="one of the platform's queues (gpu, cpu, default)")


class QueuesSerializer(serializers.Serializer):
    read_at = serializers.DateTimeField()
    key_prefix = serializers.CharField()
    unacked_total = serializers.IntegerField()
    workers_fetched_at = serializers.DateTimeField()
    queues = QueueSerializer(many=True)


def _unavailable(exc: BrokerUnavailable) -> Response:
    return Response(
        {"detail": exc.message, "code": exc.code},
        status=exc.status_code,
        headers={"Retry-After": str(operations.retry_after_s()), "Cache-Control": "no-store"},
    )


class WorkersApi(APIView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(
        summary="Online Celery workers, their running tasks, and the live rounds",
        responses={200: WorkersSerializer, 503: ErrorSerializer},
    )
    def get(self, request):
        try:
            data = operations.workers_snapshot()
        except BrokerUnavailable as exc:
            return _unavailable(exc)
        return Response(WorkersSerializer(data).data, headers={"Cache-Control": "no-store"})


class QueuesApi(APIView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(
        summary="Depth of every Celery queue (Redis), unacknowledged messages, consumers",
        responses={200: QueuesSerializer, 503: ErrorSerializer},
    )
    def get(self, request):
        try:
            data = operations.queues_overview()
        except BrokerUnavailable as exc:
            return _unavailable(exc)
        return Response(QueuesSerializer(data).data, headers={"Cache-Control": "no-store"})


urlpatterns = [
    path("operations/workers/", WorkersApi.as_view(), name="operations-workers"),
    path("operations/queues/", QueuesApi.as_view(), name="operations-queues"),
]
