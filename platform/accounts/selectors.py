"""Account reads."""

from django.contrib.auth import get_user_model
from django.db.models import QuerySet


def user_list() -> QuerySet:
    return get_user_model().objects.prefetch_related("groups").order_by("id")
