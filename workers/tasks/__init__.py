"""Celery task modules. Every module here is included by ``workers.celery_app`` automatically.

Tasks are thin: arguments are ids, bodies call one platform service (or ``ml/``), and each is safe to
run twice.
"""
