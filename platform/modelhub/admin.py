from django.contrib import admin

from modelhub.models import DetectorAlias, DetectorVersion


@admin.register(DetectorVersion)
class DetectorVersionAdmin(admin.ModelAdmin):
    list_display = ("tag", "kind", "round", "created_at")


@admin.register(DetectorAlias)
class DetectorAliasAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "moved_by", "moved_at")
