from django.contrib import admin

from rounds.models import AnnotationTask, Round, Selection


@admin.register(Round)
class RoundAdmin(admin.ModelAdmin):
    list_display = ("id", "dataset", "number", "state", "created_at")
    list_filter = ("state",)


admin.site.register(Selection)
admin.site.register(AnnotationTask)
