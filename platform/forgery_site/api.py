"""Pieces shared by every app's API: strict input serializers, pagination, role permissions."""

from __future__ import annotations

from rest_framework import authentication, pagination, parsers, permissions, serializers
from rest_framework.exceptions import AuthenticationFailed, ParseError


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, except that a body nested too deeply for Python's ``json`` (``[[[[...``, a few
    hundred kilobytes) is a 400 instead of a ``RecursionError`` and a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply") from None


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication; a key with a NUL byte (which PostgreSQL cannot compare) is a 401."""

    def authenticate_credentials(self, key):
        if "\x00" in key:
            raise AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(key)


class StrictSerializer(serializers.Serializer):
    """A serializer that rejects unknown fields (a typo must not be silently ignored)."""

    def to_internal_value(self, data):
        unknown = []
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields.keys()) - set(self.ignored_keys()))
        errors = {key: ["Unknown field."] for key in unknown}
        errors.update(self._json_type_errors(data))
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if not isinstance(exc.detail, dict):
                raise
            errors = {**exc.detail, **errors}
        if errors:
            raise serializers.ValidationError(errors)
        return value

    def ignored_keys(self) -> set[str]:
        return set()

    def _json_type_errors(self, data) -> dict[str, list[str]]:
        """In a JSON body a value must have the field's own type: DRF would read 12 as the string "12"
        and "12" as the integer 12, while the schema (and a generated client) say which one it is. Form
        and query data are all text, so only a JSON object is checked."""
        if not isinstance(data, dict) or hasattr(data, "getlist"):
            return {}
        errors = {}
        for name, field in self.fields.items():
            value = data.get(name)
            if value is None or field.read_only or isinstance(field, serializers.ChoiceField):
                continue
            for kind, types, message in _JSON_TYPES:
                if isinstance(field, kind):
                    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
                        errors[name] = [message]
                    break
        return errors


_JSON_TYPES = (
    (serializers.BooleanField, (bool,), "Must be a valid boolean."),
    (serializers.CharField, (str,), "Not a valid string."),
    (serializers.IntegerField, (int,), "A valid integer is required."),
    (serializers.FloatField, (int, float), "A valid number is required."),
)


class StrictFilterSerializer(StrictSerializer):
    """Query-string filters: unknown parameters are errors; paging parameters are allowed; a parameter
    that takes one value given several times is an error (not silently its last value)."""

    def ignored_keys(self) -> set[str]:
        return {"page", "page_size", "format"}

    def to_internal_value(self, data):
        repeated = {}
        if hasattr(data, "getlist"):
            for key in data.keys():
                field = self.fields.get(key)
                many = isinstance(field, serializers.ListField | serializers.MultipleChoiceField)
                if len(data.getlist(key)) > 1 and not many:
                    repeated[key] = ["Give this parameter once."]
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({**exc.detail, **repeated}) from None
        if repeated:
            raise serializers.ValidationError(repeated)
        return value


class Pagination(pagination.PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_schema_operation_parameters(self, view):
        """``page`` and ``page_size`` with the bounds the view enforces (a client must not send 0)."""
        params = super().get_schema_operation_parameters(view)
        for param in params:
            if param["name"] == self.page_query_param:
                param["schema"] = {"type": "integer", "minimum": 1}
            elif param["name"] == self.page_size_query_param:
                # Larger sizes are served capped (DRF's convention), so the schema states no maximum.
                param["schema"] = {"type": "integer", "minimum": 1}
                param["description"] = (
                    f"results per page (default {self.page_size}, at most {self.max_page_size})"
                )
        return params

    def get_page_size(self, request) -> int:
        """``page_size`` must be a positive integer (400 otherwise, not a silent default); capped at 500."""
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None or raw == "":
            return self.page_size
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise serializers.ValidationError(
                {self.page_size_query_param: ["A positive integer is required."]}
            )
        return min(value, self.max_page_size)


def is_platform_admin(user) -> bool:
    return bool(
        user and user.is_authenticated and (user.is_superuser or user.groups.filter(name="admin").exists())
    )


class IsPlatformAdmin(permissions.BasePermission):
    message = "This action needs the admin role."

    def has_permission(self, request, view) -> bool:
        return is_platform_admin(request.user)


class IsAnnotatorOrAdmin(permissions.BasePermission):
    message = "This action needs the annotator or admin role."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return is_platform_admin(user) or bool(
            user and user.is_authenticated and user.groups.filter(name="annotator").exists()
        )
