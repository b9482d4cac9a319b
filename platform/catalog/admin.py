from django.contrib import admin

from catalog.models import Dataset, ImportJob, Mask, Sample


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "created_at")


@admin.register(Sample)
class SampleAdmin(admin.ModelAdmin):
    list_display = ("external_id", "dataset", "label", "manipulation", "split", "has_mask")
    list_filter = ("label", "split", "has_mask")
    search_fields = ("external_id", "video", "identity")


@admin.register(Mask)
class MaskAdmin(admin.ModelAdmin):
    list_display = ("sample", "version", "source", "area", "created_at")


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = ("id", "dataset", "format", "status", "total_rows", "inserted_rows", "error_count")
