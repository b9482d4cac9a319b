from django.contrib import admin

from modelhub.models import DetectorVersion


@admin.register(DetectorVersion)
class DetectorVersionAdmin(admin.ModelAdmin):
    list_display = ("tag", "kind", "round", "created_at")
