"""Annotator lifecycle in Label Studio, after the commit, in a worker (``labeling.provisioning``):

* joining the annotator role (or being reactivated with it) records the invitation and links the
  account at once when the person already joined Label Studio;
* leaving the role, or being deactivated, removes the Label Studio membership.
"""

from __future__ import annotations

import logging

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import m2m_changed, post_save, pre_save

logger = logging.getLogger(__name__)


def _enqueue(task_name: str, user_ids: list[int]) -> None:
    def enqueue() -> None:
        from workers.enqueue import send

        for user_id in user_ids:  # broker down: logged; `manage.py labeling_annotator` redoes it
            send(f"workers.tasks.labeling.{task_name}", (user_id,))

    transaction.on_commit(enqueue)


def _annotator_group_ids(pk_set) -> bool:
    from django.contrib.auth.models import Group

    from accounts.roles import ANNOTATOR

    return Group.objects.filter(pk__in=pk_set, name=ANNOTATOR).exists()


def _role_changed(sender, instance, action, pk_set, **kwargs) -> None:
    from accounts.roles import ANNOTATOR

    if action not in ("post_add", "post_remove", "pre_clear"):
        return
    if kwargs.get("reverse"):  # group.user_set.add/remove(...): the instance is the group
        if instance.name != ANNOTATOR or not pk_set:
            return
        user_ids = sorted(pk_set)
    elif action == "pre_clear":  # user.groups.clear(): was the user an annotator?
        if not instance.groups.filter(name=ANNOTATOR).exists():
            return
        user_ids = [instance.pk]
    else:
        if not pk_set or not _annotator_group_ids(pk_set):
            return
        user_ids = [instance.pk]
    if action == "post_add":
        _enqueue("annotator_invite_task", user_ids)
    else:
        _enqueue("annotator_remove_task", user_ids)


def _remember_active(sender, instance, **kwargs) -> None:
    if instance.pk:
        instance._was_active = (
            sender.objects.filter(pk=instance.pk).values_list("is_active", flat=True).first()
        )


def _activity_changed(sender, instance, created, **kwargs) -> None:
    was = getattr(instance, "_was_active", None)
    if created or was is None or was == instance.is_active:
        return
    from accounts.roles import ANNOTATOR

    if not instance.groups.filter(name=ANNOTATOR).exists():
        return
    _enqueue("annotator_invite_task" if instance.is_active else "annotator_remove_task", [instance.pk])


User = get_user_model()
m2m_changed.connect(_role_changed, sender=User.groups.through, dispatch_uid="labeling_annotator")
pre_save.connect(_remember_active, sender=User, dispatch_uid="labeling_annotator_active_before")
post_save.connect(_activity_changed, sender=User, dispatch_uid="labeling_annotator_active_after")
