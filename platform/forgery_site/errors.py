"""Domain errors raised by services, and the one DRF exception handler that maps them to 4xx bodies.

Services never know about HTTP: they raise ``DomainError`` subclasses. The handler turns them into
``{"detail": ..., "code": ..., "errors": ...}`` with the subclass's status code.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


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


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, DomainError):
        body = {"detail": exc.message, "code": exc.code}
        if exc.errors is not None:
            body["errors"] = exc.errors
        return Response(body, status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    return exception_handler(exc, context)
