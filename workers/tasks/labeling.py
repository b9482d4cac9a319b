"""Label Studio tasks (queue ``default``): thin wrappers around ``platform/labeling`` services.

- ``webhook_dispatch_task()``: hand every pending, undispatched webhook delivery to its own
  ``webhook_delivery_task`` (scheduled by the webhook view, at most one per burst, and by reconciliation);
- ``webhook_delivery_task(delivery_id)``: fetch the annotation and store its mask;
  Label Studio down or the media volume full/read-only -> retried with backoff, the delivery stays
  pending (and reconciliation settles it from Label Studio's own copy later);
- ``reconcile_task()`` (Celery beat, every ``LABELING_RECONCILE_SECONDS``, default 60): fan out one
  ``project_reconcile_task`` per active project; while Label Studio is down those retry with
  exponential backoff and the round's sync shows "degraded";
- ``round_push_tasks_task(round_id)``, ``annotator_invite_task(user_id)``, ``annotator_remove_task(user_id)``, ``oracle_task(round_id, ...)``.
"""

from __future__ import annotations

from workers.celery_app import app  # sets up Django first


def _transient() -> tuple[type[BaseException], ...]:
    """Infrastructure errors worth retrying: database, broker, Label Studio, a full/read-only media volume."""
    from django.db import InterfaceError, OperationalError

    from forgery_site.errors import StorageUnavailable

    return (OperationalError, InterfaceError, ConnectionError, TimeoutError, StorageUnavailable)


@app.task(
    name="workers.tasks.labeling.webhook_delivery_task",
    autoretry_for=_transient(),
    max_retries=8,
    retry_backoff=2,
    retry_backoff_max=120,
)
def webhook_delivery_task(delivery_id: int) -> str:
    from labeling.deliveries import delivery_process

    return delivery_process(delivery_id=delivery_id)


@app.task(
    name="workers.tasks.labeling.webhook_dispatch_task",
    autoretry_for=_transient(),
    max_retries=8,
    retry_backoff=1,
    retry_backoff_max=60,
)
def webhook_dispatch_task() -> int:
    from labeling.deliveries import deliveries_claim, deliveries_unclaim

    total = 0
    while ids := deliveries_claim():
        for index, delivery_id in enumerate(ids):
            try:
                webhook_delivery_task.delay(delivery_id)
            except Exception:
                deliveries_unclaim(ids[index:])  # the broker went away: the next dispatch takes them
                raise
        total += len(ids)
    return total


@app.task(
    name="workers.tasks.labeling.project_reconcile_task",
    autoretry_for=_transient(),
    max_retries=10,
    retry_backoff=2,
    retry_backoff_max=120,
)
def project_reconcile_task(project_id: int) -> dict:
    from labeling.models import LabelingProject
    from labeling.reconcile import project_reconcile

    project = LabelingProject.objects.filter(pk=project_id, active=True).first()
    if project is None:
        return {"skipped": True}
    return project_reconcile(project=project)  # LabelStudioUnavailable is a ConnectionError -> autoretry


@app.task(name="workers.tasks.labeling.reconcile_task")
def reconcile_task() -> int:
    from labeling.models import LabelingProject

    webhook_dispatch_task.delay()  # deliveries whose dispatch was never scheduled (broker down then)
    ids = list(LabelingProject.objects.filter(active=True).values_list("pk", flat=True))
    for project_id in ids:
        project_reconcile_task.delay(project_id)
    return len(ids)


@app.task(name="workers.tasks.labeling.round_push_tasks_task")
def round_push_tasks_task(round_id: int) -> dict:
    from labeling.provisioning import round_push_tasks

    return round_push_tasks(round_id=round_id)


@app.task(name="workers.tasks.labeling.annotator_invite_task")
def annotator_invite_task(user_id: int) -> str:
    """The user became an annotator: record the invitation, link at once if they already joined."""
    from labeling.provisioning import annotator_invite

    return annotator_invite(user_id=user_id).status


@app.task(name="workers.tasks.labeling.annotator_remove_task")
def annotator_remove_task(user_id: int) -> str | None:
    """The user lost the annotator role or was deactivated: remove the Label Studio membership."""
    from labeling.provisioning import annotator_remove

    account = annotator_remove(user_id=user_id)
    return account.status if account else None


@app.task(name="workers.tasks.labeling.oracle_task")
def oracle_task(
    round_id: int, dilate_px: int = 0, erode_px: int = 0, drop_fraction: float = 0.0, seed: int = 0
) -> dict:
    from labeling.oracle import oracle_answer

    return oracle_answer(
        round_id=round_id, dilate_px=dilate_px, erode_px=erode_px, drop_fraction=drop_fraction, seed=seed
    )
