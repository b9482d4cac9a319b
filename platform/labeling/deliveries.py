"""Stored webhook deliveries: claiming them for dispatch and processing one in a worker.

The webhook view only records a ``WebhookDelivery``; the dispatcher claims pending deliveries
(``deliveries_claim``, giving back what it could not enqueue with ``deliveries_unclaim``) and a worker
runs ``delivery_process``: a deletion forgets the annotation, anything else fetches the annotation
from Label Studio and ingests it (``labeling.ingest.annotation_ingest``).
"""

from __future__ import annotations

import logging

from django.utils import timezone

from labeling import masks
from labeling.client import LabelStudioClient, LabelStudioRejected, get_client
from labeling.ingest import AnnotationRejected, annotation_forget, annotation_ingest
from labeling.models import WebhookDelivery

logger = logging.getLogger(__name__)

DELETE_ACTIONS = {"ANNOTATIONS_DELETED", "ANNOTATION_DELETED"}


def _finish(delivery: WebhookDelivery, status: str, message: str = "") -> str:
    delivery.status, delivery.message, delivery.processed_at = status, message[:2000], timezone.now()
    delivery.save(update_fields=["status", "message", "processed_at"])
    return status


def deliveries_claim(limit: int = 10_000) -> list[int]:
    """Mark pending deliveries no dispatcher has handed out yet as dispatched, and return their ids.

    One statement: two dispatchers running at once never hand out the same delivery (row locks, the
    second skips what the first holds)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE labeling_webhookdelivery SET dispatched_at = now() WHERE id IN ("
            " SELECT id FROM labeling_webhookdelivery WHERE status = %s AND dispatched_at IS NULL"
            " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id",
            [WebhookDelivery.Status.PENDING, limit],
        )
        return sorted(row[0] for row in cursor.fetchall())


def deliveries_unclaim(ids: list[int]) -> None:
    """Give deliveries back to the next dispatch (their tasks could not be enqueued)."""
    WebhookDelivery.objects.filter(pk__in=ids, status=WebhookDelivery.Status.PENDING).update(
        dispatched_at=None
    )


def delivery_process(*, delivery_id: int, client: LabelStudioClient | None = None) -> str:
    """Process one stored webhook delivery (fetching the annotation from Label Studio). Idempotent."""
    delivery = WebhookDelivery.objects.filter(pk=delivery_id).first()
    if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
        return "done"
    WebhookDelivery.objects.filter(pk=delivery_id).update(attempts=delivery.attempts + 1)
    if delivery.action in DELETE_ACTIONS:
        annotation_forget(annotation_id=delivery.ls_annotation_id)
        return _finish(delivery, WebhookDelivery.Status.DELETED)
    client = client or get_client()
    try:
        annotation = client.annotation_get(delivery.ls_annotation_id)
    except LabelStudioRejected as exc:
        if exc.status_code == 404:  # deleted before we got to it
            annotation_forget(annotation_id=delivery.ls_annotation_id)
            return _finish(delivery, WebhookDelivery.Status.DELETED, "annotation no longer exists")
        return _finish(delivery, WebhookDelivery.Status.REJECTED, str(exc))
    try:
        outcome = annotation_ingest(annotation)
    except (AnnotationRejected, masks.MaskRejected) as exc:
        logger.warning(
            "annotation rejected", extra={"annotation": delivery.ls_annotation_id, "reason": str(exc)}
        )
        return _finish(delivery, WebhookDelivery.Status.REJECTED, str(exc))
    status = WebhookDelivery.Status.UNCHANGED if outcome == "unchanged" else WebhookDelivery.Status.STORED
    return _finish(delivery, status, outcome)
