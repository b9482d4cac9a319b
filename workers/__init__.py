"""Celery workers of the platform: the app (``workers.celery_app``), queues, routing and tasks."""
