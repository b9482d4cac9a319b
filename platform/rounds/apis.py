"""Rounds API v1: launch, list, detail (state, progress, metrics, draft quality, the campaign's mask
budget spent/total), cancel, retry, close annotation, and the efficiency curve across a dataset's rounds
(AUC vs % of the training pool masked) as JSON or PNG.

Writes need the admin role; reads need any authenticated user. Views are thin: validate, call one
service or selector of ``rounds.launch`` / ``rounds.workflow``, serialize. Tasks are scheduled here (the entry point), never
from inside the services.
"""

from __future__ import annotations

import io

from django.db import transaction
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.selectors import dataset_get
from forgery_site.api import (
    IsAnnotatorOrAdmin,
    IsPlatformAdmin,
    Pagination,
    StrictFilterSerializer,
    StrictSerializer,
)
from rounds import launch, selectors
from rounds.config_schema import CONFIG_SCHEMA


@extend_schema_field(CONFIG_SCHEMA)
class RoundConfigField(serializers.JSONField):
    """The launch options, documented by ``rounds.config_schema`` and checked by ``validate_config``."""


class RoundOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    dataset = serializers.IntegerField(source="dataset_id")
    number = serializers.IntegerField()
    parent = serializers.IntegerField(source="parent_id", allow_null=True)
    state = serializers.CharField()
    config = serializers.JSONField()
    progress = serializers.JSONField()
    error = serializers.CharField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


def _round_body(round_, *, budget: bool = True) -> dict:
    """The round as JSON; ``budget``: with the campaign's mask budget now (``rounds.pool.budget_status``:
    spent / total, remaining, this round's budget: three counts), left out of the list."""
    from rounds.pool import budget_status

    body = RoundOutputSerializer(round_).data
    progress = dict(body["progress"] or {})
    # t0 is an internal monotonic-ish stamp; clients get ISO times and seconds.
    progress["phases"] = {
        name: {k: v for k, v in record.items() if k != "t0"}
        for name, record in (progress.get("phases") or {}).items()
    }
    body["progress"] = progress
    body["metrics"] = progress.get("metrics") or {}
    # rounds.phases.draft_quality: {selected, computed_at, submitted, ground_truth}; None until annotation ends
    body["draft_quality"] = progress.get("draft_quality")
    if round_.state == "annotating":
        body["annotation"] = selectors.annotation_status(round_)
    if budget:
        body["budget"] = budget_status(round_=round_)
    return body


def _schedule(round_id: int) -> None:
    from workers.enqueue import dispatch_round

    transaction.on_commit(lambda: dispatch_round(round_id))


class RoundListLaunchApi(APIView):
    pagination_class = Pagination  # documents the paginated list body and page/page_size in the schema

    class FilterSerializer(StrictFilterSerializer):
        dataset = serializers.IntegerField(required=False, min_value=1)

    class InputSerializer(StrictSerializer):
        class Meta:
            ref_name = "RoundLaunchInput"  # a name of its own in the schema (generated clients' class name)

        dataset = serializers.IntegerField(min_value=1)
        config = RoundConfigField(required=False, default=dict)

    def get_permissions(self):
        return [IsPlatformAdmin()] if self.request.method == "POST" else [IsAnnotatorOrAdmin()]

    @extend_schema(responses=RoundOutputSerializer(many=True))
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        rounds = selectors.round_list(dataset_id=filters.validated_data.get("dataset"))
        paginator = Pagination()
        page = paginator.paginate_queryset(rounds, request, view=self)
        return paginator.get_paginated_response([_round_body(r, budget=False) for r in page])

    @extend_schema(request=InputSerializer, responses={201: RoundOutputSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        dataset = dataset_get(dataset_id=data.validated_data["dataset"])
        with transaction.atomic():
            round_ = launch.round_launch(
                dataset=dataset, config=data.validated_data["config"], user=request.user
            )
            _schedule(round_.pk)
        return Response(_round_body(round_), status=status.HTTP_201_CREATED)


class RoundDetailApi(APIView):
    permission_classes = [IsAnnotatorOrAdmin]

    @extend_schema(responses=RoundOutputSerializer)
    def get(self, request, round_id: int):
        return Response(_round_body(selectors.round_get(round_id=round_id)))


class _RoundActionApi(APIView):
    permission_classes = [IsPlatformAdmin]
    round_service = staticmethod(lambda **kwargs: None)
    schedule = False

    @extend_schema(request=None, responses=RoundOutputSerializer)
    def post(self, request, round_id: int):
        with transaction.atomic():
            round_ = type(self).round_service(round_id=round_id, user=request.user)
            if self.schedule:
                _schedule(round_.pk)
        return Response(_round_body(round_))


class RoundCancelApi(_RoundActionApi):
    round_service = staticmethod(launch.round_cancel)


class RoundRetryApi(_RoundActionApi):
    round_service = staticmethod(launch.round_retry)
    schedule = True


class RoundCloseAnnotationApi(_RoundActionApi):
    round_service = staticmethod(launch.round_close_annotation)
    schedule = True


def efficiency_png(points: list[dict], title: str) -> bytes:
    """AUC (seen solid, unseen dashed) per detector vs % of the training pool masked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    detectors = sorted({k for p in points for k, v in p.items() if isinstance(v, dict)})
    for name in detectors:
        xs = [100 * (p.get("masked_fraction") or 0) for p in points if name in p]
        for split, style in (("auc_seen", "-o"), ("auc_unseen", "--s")):
            ys = [p[name].get(split) for p in points if name in p]
            pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
            if pairs:
                ax.plot(*zip(*pairs, strict=True), style, label=f"{name} {split[4:]}")
    ax.set_xlabel("% of training pool masked")
    ax.set_ylabel("test AUC")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if detectors:
        ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


class EfficiencyCurveApi(APIView):
    permission_classes = [IsAnnotatorOrAdmin]

    class FilterSerializer(StrictFilterSerializer):
        image = serializers.BooleanField(required=False, default=False)

    @extend_schema(
        parameters=[FilterSerializer],
        responses={(200, "application/json"): OpenApiTypes.OBJECT, (200, "image/png"): OpenApiTypes.BINARY},
    )
    def get(self, request, dataset_id: int):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        dataset = dataset_get(dataset_id=dataset_id)
        points = selectors.efficiency_curve(dataset_id=dataset.pk)
        if filters.validated_data["image"]:
            return HttpResponse(
                efficiency_png(points, f"{dataset.name}: AUC vs masks"), content_type="image/png"
            )
        return Response({"dataset": dataset.pk, "points": points})
