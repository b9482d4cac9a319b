"""Catalog API v1: datasets, imports (+ status), samples (filters, pagination, authenticated media)."""

from __future__ import annotations

import mimetypes
import os

from django.db import transaction
from django.http import FileResponse
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.models import ImportJob, Sample
from catalog.paths import Confiner, PathError, media_root
from catalog.selectors import (
    dataset_get,
    dataset_list,
    import_job_get,
    import_job_list,
    sample_get,
    sample_list,
)
from catalog.services import dataset_create, import_job_create
from forgery_site.api import IsPlatformAdmin, Pagination, StrictFilterSerializer, StrictSerializer
from forgery_site.errors import NotFound
from workers.enqueue import send


class DatasetOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    sample_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class ImportOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    dataset = serializers.IntegerField(source="dataset_id")
    source = serializers.CharField()
    format = serializers.CharField()
    status = serializers.CharField()
    total_rows = serializers.IntegerField()
    processed_rows = serializers.IntegerField()
    progress = serializers.SerializerMethodField()
    inserted_rows = serializers.IntegerField()
    existing_rows = serializers.IntegerField()
    error_count = serializers.IntegerField()
    errors = serializers.JSONField()
    message = serializers.CharField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    videos = serializers.SerializerMethodField(
        help_text="video imports only (else null): live videos total/pending/running/done/failed, frames, "
        "faces, samples, already_imported, entries_rejected, fraction and the first failures with reasons"
    )

    def _videos(self, job) -> dict | None:
        from catalog.video_import import is_video_format, video_progress

        if not is_video_format(job.format):
            return None
        cache = self.context.setdefault("video_progress", {})
        if job.pk not in cache:
            cache[job.pk] = video_progress(job)
        return cache[job.pk]

    def get_progress(self, job) -> float:
        if job.status == ImportJob.Status.SUCCEEDED:
            return 1.0
        videos = self._videos(job)
        if videos is not None:
            return videos["fraction"]
        return round(job.processed_rows / job.total_rows, 4) if job.total_rows else 0.0

    def get_videos(self, job) -> dict | None:
        return self._videos(job)


class VideoOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    external_id = serializers.CharField()
    label = serializers.CharField()
    manipulation = serializers.CharField()
    split = serializers.CharField()
    identity = serializers.CharField()
    params = serializers.JSONField()
    has_mask_video = serializers.SerializerMethodField()
    status = serializers.CharField()
    reason = serializers.CharField()
    frames_sampled = serializers.IntegerField()
    faces = serializers.IntegerField()
    samples_created = serializers.IntegerField()
    attempts = serializers.IntegerField()
    worker = serializers.CharField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_has_mask_video(self, video) -> bool:
        return bool(video.mask_source_path)


class SampleOutputSerializer(serializers.Serializer):
    # gt_mask_path is deliberately absent: ground truth stays away from annotators and training.
    id = serializers.IntegerField()
    dataset = serializers.IntegerField(source="dataset_id")
    external_id = serializers.CharField()
    path = serializers.CharField()
    sha256 = serializers.CharField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    label = serializers.CharField()
    manipulation = serializers.CharField()
    params = serializers.JSONField()
    identity = serializers.CharField()
    video = serializers.CharField()
    frame = serializers.IntegerField()
    split = serializers.CharField()
    region_targets = serializers.JSONField()
    has_mask = serializers.BooleanField()
    media_url = serializers.SerializerMethodField()

    def get_media_url(self, sample) -> str:
        return f"/api/v1/samples/{sample.pk}/media/"


class DatasetListCreateApi(APIView):
    pagination_class = Pagination  # documents the paginated list body and page/page_size in the schema

    def get_permissions(self):
        return [IsPlatformAdmin()] if self.request.method == "POST" else super().get_permissions()

    class InputSerializer(StrictSerializer):
        class Meta:
            ref_name = "DatasetCreateInput"

        name = serializers.SlugField(max_length=100)
        description = serializers.CharField(required=False, default="", allow_blank=True)

    @extend_schema(responses=DatasetOutputSerializer(many=True))
    def get(self, request):
        paginator = Pagination()
        page = paginator.paginate_queryset(dataset_list(), request, view=self)
        return paginator.get_paginated_response(DatasetOutputSerializer(page, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: DatasetOutputSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        dataset = dataset_create(**data.validated_data, user=request.user)
        return Response(DatasetOutputSerializer(dataset_get(dataset_id=dataset.pk)).data, status=201)


class DatasetDetailApi(APIView):
    @extend_schema(responses=DatasetOutputSerializer)
    def get(self, request, dataset_id: int):
        return Response(DatasetOutputSerializer(dataset_get(dataset_id=dataset_id)).data)


IMPORT_FORMATS = [c for c in ImportJob.Format.choices if c[0] != ImportJob.Format.EXPANSION]
IMAGE_FORMATS = [ImportJob.Format.MANIFEST, ImportJob.Format.FACEFORENSICS]
VIDEO_FORMATS = [ImportJob.Format.CELEBDF, ImportJob.Format.DFDC, ImportJob.Format.VIDEO_FOLDER]


class _ImportSource(StrictSerializer):
    source = serializers.CharField(help_text="manifest file or FF++ root; absolute or relative to MEDIA_ROOT")


class _VideoOptions(StrictSerializer):
    """Options of the video formats (ffpp-video, celebdf, dfdc, video-folder)."""

    frames = serializers.IntegerField(
        required=False, min_value=1, max_value=512, help_text="frames sampled per video (32)"
    )
    size = serializers.IntegerField(
        required=False, min_value=32, max_value=1024, help_text="face crop size in pixels (128)"
    )
    shard_size = serializers.IntegerField(
        required=False, min_value=1, max_value=1000, help_text="videos per extraction task (16)"
    )
    semantic_targets = serializers.ChoiceField(
        choices=["released", "paper", "none"],
        required=False,
        help_text="SJEDD targets of the fakes from their method: the official code's (released, default), "
        "the paper's hierarchy (paper) or fake only (none)",
    )


def _compression_field():
    return serializers.ListField(
        child=serializers.ChoiceField(choices=["raw", "c0", "c23", "c40"]),
        required=False,
        allow_empty=False,
        min_length=1,  # in the schema as minItems
        help_text="FaceForensics++ only: the compression levels to import (default: all)",
    )


# The import body as the schema shows it: one of three shapes, by format, each with the options that
# format takes and no other. ``DatasetImportApi.InputSerializer`` validates (the same fields and rules).
class ImageImportInput(_ImportSource):
    """A manifest (.jsonl/.csv) or a FaceForensics++ image tree."""

    format = serializers.ChoiceField(choices=IMAGE_FORMATS, default=ImportJob.Format.MANIFEST)


class VideoImportInput(_ImportSource, _VideoOptions):
    """Videos: faces are sampled from frames (Celeb-DF, DFDC, a folder of videos)."""

    format = serializers.ChoiceField(choices=VIDEO_FORMATS)


class FfppVideoImportInput(_ImportSource, _VideoOptions):
    """FaceForensics++ videos, optionally some compression levels only."""

    format = serializers.ChoiceField(choices=[ImportJob.Format.FFPP_VIDEO])
    compression = _compression_field()


IMPORT_BODY = PolymorphicProxySerializer(
    component_name="DatasetImportInput",
    serializers=[ImageImportInput, VideoImportInput, FfppVideoImportInput],
    resource_type_field_name=None,
)


class DatasetImportApi(APIView):
    pagination_class = Pagination  # documents the paginated list body and page/page_size in the schema
    permission_classes = [IsPlatformAdmin]

    class InputSerializer(_ImportSource, _VideoOptions):
        format = serializers.ChoiceField(choices=IMPORT_FORMATS, default=ImportJob.Format.MANIFEST)
        compression = _compression_field()

        def validate(self, attrs):
            from catalog.video_import import is_video_format

            options = [
                key
                for key in ("frames", "size", "shard_size", "compression", "semantic_targets")
                if key in attrs
            ]
            if options and not is_video_format(attrs.get("format", ImportJob.Format.MANIFEST)):
                raise serializers.ValidationError({key: ["Only for video formats."] for key in options})
            if "compression" in attrs and attrs.get("format") != ImportJob.Format.FFPP_VIDEO:
                raise serializers.ValidationError({"compression": ["Only for the ffpp-video format."]})
            return attrs

    @extend_schema(responses=ImportOutputSerializer(many=True))
    def get(self, request, dataset_id: int):
        jobs = import_job_list(dataset=dataset_get(dataset_id=dataset_id))
        paginator = Pagination()
        page = paginator.paginate_queryset(jobs, request, view=self)
        return paginator.get_paginated_response(ImportOutputSerializer(page, many=True).data)

    @extend_schema(request=IMPORT_BODY, responses={202: ImportOutputSerializer})
    def post(self, request, dataset_id: int):
        from catalog.video_import import is_video_format, video_options

        dataset = dataset_get(dataset_id=dataset_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        options = {
            key: fields.pop(key)
            for key in ("frames", "size", "shard_size", "compression", "semantic_targets")
            if key in fields
        }
        job = import_job_create(dataset=dataset, user=request.user, **fields)
        if is_video_format(job.format):
            options = video_options(**options)
            task, args = "workers.tasks.video_import.video_import_task", (job.pk, options)
        else:
            task, args = "workers.tasks.core.dataset_import_task", (job.pk,)
        transaction.on_commit(lambda: send(task, args))
        return Response(ImportOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class DatasetExpandApi(APIView):
    """SJEDD's dataset expansion (``catalog.expansion``): new fakes from the dataset's own real faces by
    landmark-guided eye / mouth / nose swaps, as an import job on the cpu queue (progress at
    ``/api/v1/imports/<id>/``; idempotent: a second run adds only what is missing)."""

    permission_classes = [IsPlatformAdmin]

    class InputSerializer(StrictSerializer):
        class Meta:
            ref_name = "DatasetExpandInput"

        regions = serializers.ListField(
            child=serializers.ChoiceField(choices=["eye", "mouth", "nose"]), required=False, allow_empty=False,
            min_length=1, help_text="regions to swap, one per real face in turn (default: eye, mouth, nose)",
        )  # fmt: skip
        limit = serializers.IntegerField(required=False, min_value=1, max_value=1_000_000,
                                         help_text="expand at most this many real faces")  # fmt: skip

    @extend_schema(request=InputSerializer, responses={202: ImportOutputSerializer})
    def post(self, request, dataset_id: int):
        from catalog.expansion import expansion_start

        dataset = dataset_get(dataset_id=dataset_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job, options = expansion_start(dataset=dataset, user=request.user, **data.validated_data)
        transaction.on_commit(lambda: send("workers.tasks.expansion.expand_dataset_task", (job.pk, options)))
        return Response(ImportOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class ImportDetailApi(APIView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(responses=ImportOutputSerializer)
    def get(self, request, job_id: int):
        return Response(ImportOutputSerializer(import_job_get(job_id=job_id)).data)


class ImportVideosApi(APIView):
    """The videos of a video import, optionally by status (e.g. ``?status=failed`` with reasons)."""

    pagination_class = Pagination  # documents the paginated list body and page/page_size in the schema
    permission_classes = [IsPlatformAdmin]

    class FilterSerializer(StrictFilterSerializer):
        class Meta:
            ref_name = "ImportVideoFilter"

        status = serializers.ChoiceField(choices=["pending", "running", "done", "failed"], required=False)

    @extend_schema(parameters=[FilterSerializer], responses=VideoOutputSerializer(many=True))
    def get(self, request, job_id: int):
        from catalog.video_import import job_videos

        job = import_job_get(job_id=job_id)
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        paginator = Pagination()
        videos = job_videos(job=job, status=filters.validated_data.get("status"))
        page = paginator.paginate_queryset(videos, request, view=self)
        return paginator.get_paginated_response(VideoOutputSerializer(page, many=True).data)


class SampleListApi(APIView):
    pagination_class = Pagination  # documents the paginated list body and page/page_size in the schema

    class FilterSerializer(StrictFilterSerializer):
        class Meta:
            ref_name = "SampleFilter"

        dataset = serializers.IntegerField(required=False, min_value=1)
        split = serializers.ChoiceField(choices=Sample.Split.choices, required=False)
        label = serializers.ChoiceField(choices=Sample.Label.choices, required=False)
        manipulation = serializers.CharField(required=False, max_length=64)
        has_mask = serializers.BooleanField(required=False, allow_null=True, default=None)
        video = serializers.CharField(required=False, max_length=255)
        identity = serializers.CharField(required=False, max_length=128)

    @extend_schema(parameters=[FilterSerializer], responses=SampleOutputSerializer(many=True))
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        paginator = Pagination()
        page = paginator.paginate_queryset(sample_list(filters=filters.validated_data), request, view=self)
        return paginator.get_paginated_response(SampleOutputSerializer(page, many=True).data)


class SampleDetailApi(APIView):
    @extend_schema(responses=SampleOutputSerializer)
    def get(self, request, sample_id: int):
        return Response(SampleOutputSerializer(sample_get(sample_id=sample_id)).data)


class SampleMediaApi(APIView):
    """The sample's image, for authenticated users only (confined to the media root)."""

    @extend_schema(responses={(200, "image/*"): bytes})
    def get(self, request, sample_id: int):
        sample = sample_get(sample_id=sample_id)
        try:
            absolute, _ = Confiner(media_root()).resolve(sample.path)
        except PathError:
            raise NotFound("The sample's file is missing.") from None
        content_type = mimetypes.guess_type(absolute)[0] or "application/octet-stream"
        return FileResponse(
            open(absolute, "rb"), content_type=content_type, filename=os.path.basename(absolute)
        )
