from django.apps import AppConfig


class PoolscoresConfig(AppConfig):
    name = "poolscores"
    verbose_name = "Pool scores"
    default_auto_field = "django.db.models.BigAutoField"
