"""Creating an annotator in the platform provisions their Label Studio user (after the commit, in a worker)."""

from __future__ import annotations

import logging

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import m2m_changed

logger = logging.getLogger(__name__)


def _annotator_added(sender, instance, action, pk_set, **kwargs) -> None:
    if action != "post_add" or not pk_set:
        return
    from django.contrib.auth.models import Group

    from accounts.roles import ANNOTATOR

    if kwargs.get("reverse"):  # group.user_set.add(...): the instance is the group, pk_set the users
        if instance.name != ANNOTATOR:
            return
        user_ids = sorted(pk_set)
    else:
        if not Group.objects.filter(pk__in=pk_set, name=ANNOTATOR).exists():
            return
        user_ids = [instance.pk]

    def enqueue() -> None:
        from workers.tasks.labeling import annotator_provision_task

        for user_id in user_ids:
            try:
                annotator_provision_task.delay(user_id)
            except Exception as exc:  # noqa: BLE001 - broker down: `manage.py labeling_annotator` redoes it
                logger.error(
                    "annotator provisioning not enqueued", extra={"user": user_id, "error": str(exc)}
                )

    transaction.on_commit(enqueue)


m2m_changed.connect(
    _annotator_added, sender=get_user_model().groups.through, dispatch_uid="labeling_annotator"
)
