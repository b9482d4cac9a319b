"""Rounds URLs (included under /api/v1/); further round APIs append their patterns to ``urlpatterns``."""

from __future__ import annotations

from django.urls import path

from rounds import apis

urlpatterns = [
    path("rounds/", apis.RoundListLaunchApi.as_view(), name="round-list"),
    path("rounds/<int:round_id>/", apis.RoundDetailApi.as_view(), name="round-detail"),
    path("rounds/<int:round_id>/cancel/", apis.RoundCancelApi.as_view(), name="round-cancel"),
    path("rounds/<int:round_id>/retry/", apis.RoundRetryApi.as_view(), name="round-retry"),
    path(
        "rounds/<int:round_id>/close-annotation/",
        apis.RoundCloseAnnotationApi.as_view(),
        name="round-close-annotation",
    ),
    path(
        "datasets/<int:dataset_id>/efficiency/", apis.EfficiencyCurveApi.as_view(), name="dataset-efficiency"
    ),
]
