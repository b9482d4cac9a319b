"""Selection API v1: a round's selected samples with every strategy's score, scoring progress, and the
uncertainty histogram of the pool as JSON data and as a PNG.

    GET rounds/<id>/selection/                      ranked selection (paginated), scores per strategy
    GET rounds/<id>/scoring/                        pool size, scored rows
    GET rounds/<id>/uncertainty-histogram/          {edges, counts, ...}  (?strategy=&bins=)
    GET rounds/<id>/uncertainty-histogram.png       the same as an image

The histogram is aggregated in PostgreSQL; no view loads the pool's rows.
"""

from __future__ import annotations

from django.http import HttpResponse
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from forgery_site.api import Pagination, StrictFilterSerializer
from rounds.scoring import scores_progress
from rounds.selection import histogram_png, selection_list, uncertainty_histogram


class SelectionOutputSerializer(serializers.Serializer):
    rank = serializers.IntegerField()
    sample = serializers.IntegerField(source="sample.id")
    external_id = serializers.CharField(source="sample.external_id")
    video = serializers.CharField(source="sample.video")
    label = serializers.CharField(source="sample.label")
    score = serializers.FloatField(help_text="the combined score the rank was taken from")
    scores = serializers.JSONField(help_text="strategy -> score, plus 'combined'")


class RoundSelectionApi(APIView):
    pagination_class = Pagination  # documents the paginated list body and page/page_size in the schema

    @extend_schema(responses=SelectionOutputSerializer(many=True))
    def get(self, request, round_id: int):
        paginator = Pagination()
        page = paginator.paginate_queryset(selection_list(round_id=round_id), request, view=self)
        return paginator.get_paginated_response(SelectionOutputSerializer(page, many=True).data)


class ScoringProgressOutputSerializer(serializers.Serializer):
    pool = serializers.IntegerField()
    scored = serializers.IntegerField()


class RoundScoringProgressApi(APIView):
    @extend_schema(responses=ScoringProgressOutputSerializer)
    def get(self, request, round_id: int):
        return Response(ScoringProgressOutputSerializer(scores_progress(round_id=round_id)).data)


class HistogramFilterSerializer(StrictFilterSerializer):
    strategy = serializers.CharField(required=False, max_length=64)
    bins = serializers.IntegerField(required=False, min_value=1, max_value=200, default=20)


class HistogramOutputSerializer(serializers.Serializer):
    round = serializers.IntegerField()
    strategy = serializers.CharField()
    strategies = serializers.ListField(child=serializers.CharField())
    count = serializers.IntegerField()
    edges = serializers.ListField(child=serializers.FloatField())
    counts = serializers.ListField(child=serializers.IntegerField())
    selected_count = serializers.IntegerField()
    selected_min = serializers.FloatField(allow_null=True)


def _histogram(request, round_id: int) -> dict:
    filters = HistogramFilterSerializer(data=request.query_params)
    filters.is_valid(raise_exception=True)
    return uncertainty_histogram(round_id=round_id, **filters.validated_data)


class RoundHistogramApi(APIView):
    @extend_schema(parameters=[HistogramFilterSerializer], responses=HistogramOutputSerializer)
    def get(self, request, round_id: int):
        return Response(HistogramOutputSerializer(_histogram(request, round_id)).data)


class RoundHistogramPngApi(APIView):
    @extend_schema(
        parameters=[HistogramFilterSerializer], responses={(200, "image/png"): OpenApiTypes.BINARY}
    )
    def get(self, request, round_id: int):
        return HttpResponse(histogram_png(_histogram(request, round_id)), content_type="image/png")


urlpatterns = [
    path("rounds/<int:round_id>/selection/", RoundSelectionApi.as_view(), name="round-selection"),
    path("rounds/<int:round_id>/scoring/", RoundScoringProgressApi.as_view(), name="round-scoring"),
    path(
        "rounds/<int:round_id>/uncertainty-histogram/",
        RoundHistogramApi.as_view(),
        name="round-uncertainty-histogram",
    ),
    path(
        "rounds/<int:round_id>/uncertainty-histogram.png",
        RoundHistogramPngApi.as_view(),
        name="round-uncertainty-histogram-png",
    ),
]
