from django.apps import AppConfig


class LabelingConfig(AppConfig):
    name = "labeling"
    verbose_name = "Label Studio integration"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from labeling import signals  # noqa: F401 - connects the annotator provisioning receiver
