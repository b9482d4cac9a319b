"""Routes of the detector registry (mounted under /api/v1/ by forgery_site.urls)."""

from django.urls import path

from modelhub import apis

urlpatterns = [
    path("detectors/", apis.VersionList.as_view(), name="detector-list"),
    path("weights/", apis.WeightsList.as_view(), name="weights-list"),
    path("detectors/compare/", apis.VersionCompare.as_view(), name="detector-compare"),
    path("detectors/aliases/", apis.AliasList.as_view(), name="detector-aliases"),
    path("detectors/aliases/<slug:name>/", apis.AliasMove.as_view(), name="detector-alias-move"),
    path("detectors/<str:ref>/", apis.VersionDetail.as_view(), name="detector-detail"),
    path("detectors/<str:ref>/export/", apis.VersionExport.as_view(), name="detector-export"),
    path("detectors/<str:ref>/bundle/", apis.BundleDownload.as_view(), name="detector-bundle"),
    path("detectors/<str:ref>/predict/", apis.Predict.as_view(), name="detector-predict"),
]
