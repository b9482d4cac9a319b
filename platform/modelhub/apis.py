"""REST API of the detector registry: versions, comparison, the production alias, export, download, inference.

| method + path                                   | who           | what                                      |
|-------------------------------------------------|---------------|-------------------------------------------|
| GET  /api/v1/detectors/?kind=                   | authenticated | versions, newest first                    |
| GET  /api/v1/detectors/<tag or alias>/          | authenticated | detail: config, metrics, lineage, aliases |
| GET  /api/v1/detectors/compare/?tags=a,b        | authenticated | metrics side by side                      |
| GET  /api/v1/detectors/aliases/                 | authenticated | aliases and where they point              |
| PUT  /api/v1/detectors/aliases/<name>/ {tag}    | admin         | move an alias (``production``)            |
| POST /api/v1/detectors/<ref>/export/            | admin         | build the export bundle                   |
| GET  /api/v1/detectors/<ref>/bundle/            | authenticated | download the bundle zip                   |
| POST /api/v1/detectors/<ref>/predict/           | authenticated | multipart ``images`` (+ ``mode``, ``draft_mask``) -> per-face results; throttled per user |
"""

from __future__ import annotations

from django.conf import settings
from django.http import FileResponse, QueryDict
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from forgery_site.api import (
    IsAnnotatorOrAdmin,
    IsPlatformAdmin,
    Pagination,
    StrictFilterSerializer,
    StrictSerializer,
)
from forgery_site.errors import InvalidInput
from ml.digest import file_sha256
from modelhub import inference, selectors, services


class VersionOutput(serializers.Serializer):
    tag = serializers.CharField()
    kind = serializers.CharField()
    round = serializers.SerializerMethodField()
    dataset = serializers.SerializerMethodField()
    parent = serializers.SerializerMethodField()
    metrics = serializers.JSONField()
    checksum = serializers.CharField()
    exported = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_round(self, obj) -> int | None:
        return obj.round.number if obj.round_id else None

    def get_dataset(self, obj) -> str | None:
        return obj.round.dataset.name if obj.round_id else None

    def get_parent(self, obj) -> str | None:
        return obj.parent.tag if obj.parent_id else None

    def get_exported(self, obj) -> bool:
        return services.BUNDLE in (obj.artifacts or {})


class VersionList(APIView):
    pagination_class = Pagination  # documents the paginated list body and page/page_size in the schema

    class FilterSerializer(StrictFilterSerializer):
        class Meta:
            ref_name = "DetectorVersionFilter"

        kind = serializers.CharField(required=False, max_length=32)

    @extend_schema(
        operation_id="detector_versions_list",
        parameters=[FilterSerializer],
        responses=VersionOutput(many=True),
    )
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        versions = selectors.detector_version_list(kind=filters.validated_data.get("kind"))
        paginator = Pagination()
        page = paginator.paginate_queryset(versions, request, view=self)
        return paginator.get_paginated_response(VersionOutput(page, many=True).data)


class VersionDetail(APIView):
    class OutputSerializer(VersionOutput):
        class Meta:
            ref_name = "DetectorVersionDetail"

        config = serializers.JSONField()
        artifacts = serializers.SerializerMethodField()
        aliases = serializers.SerializerMethodField()
        lineage = serializers.SerializerMethodField()

        def get_artifacts(self, obj) -> list[str]:
            return sorted(obj.artifacts or {})  # names only: media paths stay server-side

        def get_aliases(self, obj) -> list[str]:
            return selectors.aliases_of(version=obj)

        def get_lineage(self, obj) -> dict:
            return selectors.lineage(version=obj)

    @extend_schema(operation_id="detector_version_retrieve", responses=OutputSerializer)
    def get(self, request, ref: str):
        version = selectors.detector_version_get(ref=ref)
        return Response(self.OutputSerializer(version).data)


class VersionCompare(APIView):
    class FilterSerializer(StrictFilterSerializer):
        class Meta:
            ref_name = "DetectorCompareFilter"

        tags = serializers.RegexField(
            r"^[^,\x00]+(,[^,\x00]+){1,9}$",
            max_length=2000,
            help_text="2 to 10 detector tags, comma-separated",
        )

    @extend_schema(parameters=[FilterSerializer], responses=OpenApiTypes.OBJECT)
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        refs = [t.strip() for t in filters.validated_data["tags"].split(",") if t.strip()]
        return Response(selectors.detector_versions_compare(refs=refs))


class AliasOutput(serializers.Serializer):
    name = serializers.CharField()
    tag = serializers.CharField(source="version.tag")
    moved_by = serializers.CharField(source="moved_by.username", default=None)
    moved_at = serializers.DateTimeField()


class AliasList(APIView):
    @extend_schema(responses=AliasOutput(many=True))
    def get(self, request):
        return Response(AliasOutput(selectors.alias_list(), many=True).data)


class AliasMove(APIView):
    permission_classes = [IsPlatformAdmin]

    class InputSerializer(StrictSerializer):
        class Meta:
            ref_name = "DetectorAliasMoveInput"

        tag = serializers.CharField(max_length=128)

    @extend_schema(request=InputSerializer, responses=AliasOutput)
    def put(self, request, name: str):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        alias = services.alias_move(ref=data.validated_data["tag"], user=request.user, name=name)
        return Response(AliasOutput(alias).data)


class VersionExport(APIView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(request=None, responses={201: OpenApiTypes.OBJECT})
    def post(self, request, ref: str):
        if request.data:
            raise InvalidInput("export takes no body", errors={k: ["Unknown field."] for k in request.data})
        version = selectors.detector_version_get(ref=ref)
        result = services.detector_export(version=version)
        result["download"] = f"/api/v1/detectors/{version.tag}/bundle/"
        return Response(result, status=status.HTTP_201_CREATED)


class BundleDownload(APIView):
    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY})
    def get(self, request, ref: str):
        version = selectors.detector_version_get(ref=ref)
        path = services.bundle_path(version=version)
        response = FileResponse(open(path, "rb"), as_attachment=True, filename=f"{version.tag}.zip")
        # The manifest inside proves the files match each other; this proves the zip is the one we built.
        response["X-Checksum-SHA256"] = file_sha256(str(path))
        return response


class InferenceThrottle(UserRateThrottle):
    """Per-user rate of inference requests (``INFERENCE_THROTTLE_RATE``, default 30/min)."""

    scope = "inference"

    def get_rate(self) -> str:
        return settings.INFERENCE_THROTTLE_RATE


class Predict(APIView):
    permission_classes = [IsAnnotatorOrAdmin]
    throttle_classes = [InferenceThrottle]
    parser_classes = [MultiPartParser, FormParser]

    class InputSerializer(StrictSerializer):
        class Meta:
            ref_name = "DetectorPredictInput"

        images = serializers.ListField(child=serializers.FileField(), required=False, write_only=True)
        mode = serializers.ChoiceField(choices=["photo", "crop"], default="photo")
        draft_mask = serializers.BooleanField(default=False)

    @extend_schema(request={"multipart/form-data": InputSerializer}, responses=OpenApiTypes.OBJECT)
    def post(self, request, ref: str):
        # Refuse an oversized body from its header, before the multipart parser spools it to disk.
        inference.request_size_check(request.META.get("CONTENT_LENGTH"))
        fields = QueryDict(mutable=True)  # form fields stay form data (text), the files are apart
        for key in request.data:
            if key not in request.FILES:
                fields.setlist(key, request.data.getlist(key))
        data = self.InputSerializer(data=fields)
        data.is_valid(raise_exception=True)
        unknown_files = sorted(set(request.FILES) - {"images"})
        if unknown_files:
            raise InvalidInput(
                "upload images as multipart field 'images'",
                errors={k: ["Unknown field."] for k in unknown_files},
            )
        version = selectors.detector_version_get(ref=ref)
        result = inference.inference_run(
            version=version,
            uploads=inference.uploads_from_files(request.FILES.getlist("images")),
            mode=data.validated_data["mode"],
            draft_mask=data.validated_data["draft_mask"],
        )
        return Response(result)


class WeightsOutput(serializers.Serializer):
    name = serializers.CharField()
    model = serializers.CharField()
    path = serializers.CharField()
    sha256 = serializers.CharField()
    size_bytes = serializers.IntegerField()
    image_size = serializers.IntegerField()
    quick_gelu = serializers.BooleanField()
    openai_format = serializers.BooleanField()
    created_at = serializers.DateTimeField()


class WeightsList(APIView):
    """Registered CLIP weights (``GET``) and registering a file already under ``MEDIA_ROOT/weights/``
    (``POST``: checked against the named open_clip tower, which must load it strictly)."""

    permission_classes = [IsPlatformAdmin]

    class InputSerializer(StrictSerializer):
        class Meta:
            ref_name = "WeightsRegisterInput"

        name = serializers.SlugField(max_length=64)
        path = serializers.RegexField(
            r"^weights(/[^/\x00.][^/\x00]{0,254})+$",  # a file name has at most 255 bytes
            max_length=512,
            help_text="relative to MEDIA_ROOT, under weights/ (no segment starting with a dot)",
            error_messages={
                "invalid": "Weights live under weights/ in the media root (no '..' or hidden segments)."
            },
        )
        model = serializers.CharField(max_length=64, help_text="open_clip model, e.g. ViT-B-16-quickgelu")

    @extend_schema(responses=WeightsOutput(many=True))
    def get(self, request):
        from modelhub.models import PretrainedWeights

        return Response(WeightsOutput(PretrainedWeights.objects.order_by("name"), many=True).data)

    @extend_schema(request=InputSerializer, responses={201: WeightsOutput})
    def post(self, request):
        from modelhub.weights import weights_register

        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        weights = weights_register(**data.validated_data, user=request.user)
        return Response(WeightsOutput(weights).data, status=status.HTTP_201_CREATED)
