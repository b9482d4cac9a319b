"""Domain errors raised by services, and the one DRF exception handler that maps them to 4xx bodies.

Services never know about HTTP: they raise ``DomainError`` subclasses. The handler turns them into
``{"detail": ..., "code": ..., "errors": ...}`` with the subclass's status code. ``StorageUnavailable``
(507) is raised when a file under MEDIA_ROOT cannot be written (full, read-only, no permission).

Database outages (``OperationalError`` / ``InterfaceError``) become 503 with ``Retry-After``: JSON from
the API handler and ``DatabaseUnavailableMiddleware`` for ``/api/`` (or ``Accept: application/json``),
a small self-contained HTML page for the dashboard.
"""

from __future__ import annotations

import errno
import html
import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback


class DomainError(Exception):
    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid"

    def __init__(self, message: str, *, errors: Any = None):
        super().__init__(message)
        self.message = message
        self.errors = errors


class NotFound(DomainError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(DomainError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class InvalidInput(DomainError):
    code = "invalid"


class StorageUnavailable(DomainError):
    """A file under MEDIA_ROOT could not be written (disk full, read-only, permissions): nothing was kept."""

    status_code = status.HTTP_507_INSUFFICIENT_STORAGE
    code = "storage_unavailable"

    @classmethod
    def from_oserror(cls, exc: OSError, what: str) -> StorageUnavailable:
        reason = {
            errno.ENOSPC: "the media volume is full",
            errno.EDQUOT: "the media volume's quota is exhausted",
            errno.EROFS: "the media volume is read-only",
            errno.EACCES: "no permission to write to the media volume",
            errno.EPERM: "no permission to write to the media volume",
        }.get(exc.errno, f"the media volume cannot be written ({exc.strerror or exc})")
        return cls(f"could not store {what}: {reason}; nothing was saved, retry once storage is fixed")


logger = logging.getLogger(__name__)
DATABASE_ERRORS = (OperationalError, InterfaceError)
DATABASE_DOWN_MESSAGE = "the database is temporarily unavailable; retry shortly"


def _retry_after() -> str:
    return str(int(settings.DB_UNAVAILABLE_RETRY_AFTER))


def database_unavailable_response(request, exc: Exception):
    """503 + Retry-After: JSON ``{"detail", "code"}`` for the API, a small page (no template, no DB) otherwise."""
    logger.error(
        "database unavailable", extra={"path": request.path, "error": f"{exc.__class__.__name__}: {exc}"}
    )
    wants_json = request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")
    if wants_json:
        response = JsonResponse({"detail": DATABASE_DOWN_MESSAGE, "code": "database_unavailable"}, status=503)
    else:
        seconds = html.escape(_retry_after())
        response = HttpResponse(
            "<!doctype html><html><head><meta charset='utf-8'><title>Service temporarily unavailable</title>"
            "</head><body><h1>Service temporarily unavailable</h1>"
            "<p>ForgeryLab cannot reach its database right now. Nothing you saved before is lost; "
            f"please retry in {seconds} seconds.</p></body></html>",
            status=503,
            content_type="text/html; charset=utf-8",
        )
    response["Retry-After"] = _retry_after()
    response["Cache-Control"] = "no-store"
    return response


class DatabaseUnavailableMiddleware:
    """Maps ``OperationalError`` / ``InterfaceError`` escaping a view to 503 instead of a 500.

    Django closes a connection that raised such an error at the end of the request, and the next request
    opens (or health-checks) a fresh one, so the web process recovers without a restart.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exc: Exception):
        if isinstance(exc, DATABASE_ERRORS):
            return database_unavailable_response(request, exc)
        return None


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, DomainError):
        body = {"detail": exc.message, "code": exc.code}
        if exc.errors is not None:
            body["errors"] = exc.errors
        return Response(body, status=exc.status_code)
    if isinstance(exc, DATABASE_ERRORS):
        request = context.get("request")
        logger.error(
            "database unavailable",
            extra={"path": getattr(request, "path", ""), "error": f"{exc.__class__.__name__}: {exc}"},
        )
        set_rollback()
        return Response(
            {"detail": DATABASE_DOWN_MESSAGE, "code": "database_unavailable"},
            status=503,
            headers={"Retry-After": _retry_after(), "Cache-Control": "no-store"},
        )
    if isinstance(exc, RequestDataTooBig):
        # Django refuses the body past DATA_UPLOAD_MAX_MEMORY_SIZE (a bare 400 page otherwise): say why.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            {"detail": f"request body too large (the limit is {limit} bytes)", "code": "too_large"},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        what, limit = (
            ("files", settings.DATA_UPLOAD_MAX_NUMBER_FILES)
            if isinstance(exc, TooManyFilesSent)
            else ("fields", settings.DATA_UPLOAD_MAX_NUMBER_FIELDS)
        )
        return Response(
            {"detail": f"too many form {what} (the limit is {limit})", "code": "invalid"}, status=400
        )
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    return exception_handler(exc, context)
