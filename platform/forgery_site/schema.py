"""The OpenAPI contract beyond what each view declares: every error an operation can give, once.

``document_errors`` (a drf-spectacular postprocessing hook) adds shared ``components.responses`` and
references them from every operation that can produce them, unless the view documented that status
itself: 400 (validation: ``{"detail", "code", "errors"}`` with field errors) wherever an operation takes
parameters or a body; 401 and 403 on every authenticated operation; 404 wherever the path names an
object, a request body may name one, or a list is paged; 413 where a request body is accepted; 429 (throttled, with ``Retry-After``); 503 (the database
briefly unreachable, with ``Retry-After``) and 507 (the media volume cannot be written) on writes. The
webhook's shared-secret header is a security scheme of its own, so clients can call it correctly.
Optional query parameters allow an empty value (DRF reads it as "not given"), and request bodies
declare ``additionalProperties: false`` (they are StrictSerializers: an unknown field is a 400).
"""

from __future__ import annotations

from forgery_site.api import StrictSerializer

# Query parameters that name objects (an unknown one is a 404, as in a path).
NAMING_PARAMETERS = {"tags"}

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {"type": "string", "description": "what went wrong, in words"},
        "code": {"type": "string", "description": "a stable machine-readable code"},
        "errors": {
            "description": "field -> messages, for validation errors",
            "oneOf": [{"type": "object", "additionalProperties": True}, {"type": "array", "items": {}}],
        },
    },
    "additionalProperties": True,
}
RETRY_AFTER = {
    "Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait before retrying"}
}
RESPONSES = {
    "400": (
        "ValidationError",
        "The request was refused: the body or a parameter is invalid (field errors in errors).",
        {},
    ),
    "401": ("Unauthenticated", "No or invalid credentials (token or session).", {}),
    "403": ("Forbidden", "Authenticated, but the role does not allow this.", {}),
    "404": (
        "NotFound",
        "The object named in the path or the body does not exist, or the page is past the end.",
        {},
    ),
    "409": ("Conflict", "The object's state does not allow this now (the reason is in detail).", {}),
    "413": ("TooLarge", "The request body is larger than the server accepts.", {}),
    "422": (
        "Unprocessable",
        "The upload is well formed but cannot be used (no face found; the reason per image in errors).",
        {},
    ),
    "429": ("Throttled", "Too many requests; retry after the indicated delay.", RETRY_AFTER),
    "503": (
        "Unavailable",
        "A service the operation needs (the database, Label Studio) is briefly unavailable.",
        RETRY_AFTER,
    ),
    "507": ("StorageUnavailable", "The media volume cannot be written; nothing was saved.", {}),
}
WEBHOOK_HEADER = "X-Forgerylab-Webhook-Secret"
WRITE_METHODS = {"post", "put", "patch", "delete"}


def document_errors(result, generator, request, public):
    components = result.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    shared = components.setdefault("responses", {})
    for _status, (name, description, headers) in RESPONSES.items():
        shared[name] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            **({"headers": headers} if headers else {}),
        }
    schemes = components.setdefault("securitySchemes", {})
    schemes["webhookSecret"] = {"type": "apiKey", "in": "header", "name": WEBHOOK_HEADER,
                                "description": "the platform's WEBHOOK_SECRET, as configured in Label Studio's webhook"}  # fmt: skip
    strict_bodies: set[str] = set()
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            webhook = path.endswith("/labeling/webhook")
            if webhook:
                operation["security"] = [{"webhookSecret": []}]
            anonymous = operation.get("security") in ([{}], [])
            wanted = []
            if operation.get("parameters") or operation.get("requestBody") or "{" in path:
                wanted.append("400")
            if not anonymous:
                wanted += ["401", "403"]
            # 404: the object the path names, or a page past the end of a list.
            # ... or an object a request body names (a dataset id, a detector tag).
            if (
                "{" in path
                or any(p.get("name") == "page" for p in operation.get("parameters") or [])
                or (method in WRITE_METHODS and operation.get("requestBody"))
                or any(p.get("name") in NAMING_PARAMETERS for p in operation.get("parameters") or [])
            ):
                wanted.append("404")
            if method in WRITE_METHODS:
                wanted += ["409", "503", "507"]
                if operation.get("requestBody"):
                    wanted.append("413")
            else:
                wanted.append("503")
            if path.endswith("/predict/"):
                wanted.append("422")
            wanted.append("429")
            for status in wanted:
                responses.setdefault(status, {"$ref": f"#/components/responses/{RESPONSES[status][0]}"})
            for param in operation.get("parameters") or []:
                # DRF reads an empty optional query parameter as "not given" (no filter, the default).
                if param.get("in") == "query" and not param.get("required"):
                    param["allowEmptyValue"] = True
            body_content = (operation.get("requestBody") or {}).get("content", {})
            # One encoding per body, the one clients should use: JSON, or multipart for uploads (the API
            # also parses form encodings; documenting each would give clients three copies of one type).
            for preferred in ("application/json", "multipart/form-data"):
                if preferred in body_content:
                    for other in [c for c in body_content if c != preferred]:
                        del body_content[other]
                    break
            for content in body_content.values():
                ref = (content.get("schema") or {}).get("$ref", "")
                if ref:
                    strict_bodies.add(ref.rsplit("/", 1)[1])
            for param in operation.get("parameters") or []:
                if param.get("in") == "query":
                    _no_nul(param.get("schema") or {})
    # Request bodies are StrictSerializers: a field the schema does not list is refused (400). A body that
    # is one of several shapes (oneOf) is strict in each of them.
    schemas = components.get("schemas", {})
    for name in list(strict_bodies):
        strict_bodies.update(ref.rsplit("/", 1)[1] for ref in _one_of_refs(schemas.get(name)))
    for name in strict_bodies:
        body = schemas.get(name)
        if isinstance(body, dict) and body.get("type") == "object":
            body["additionalProperties"] = False
            if body.get("description") == StrictSerializer.__doc__:  # the base class's, not the body's
                del body["description"]
        _no_nul(body or {})
    return result


# DRF refuses a NUL byte in any text field or query parameter (PostgreSQL cannot store one), so the
# schema says so: free text gets this pattern unless it already has a pattern, a format or an enum.
NO_NUL = r"^[^\x00]*$"


def _one_of_refs(schema) -> list[str]:
    if not isinstance(schema, dict):
        return []
    return [item["$ref"] for item in schema.get("oneOf", []) if isinstance(item, dict) and "$ref" in item]


def _no_nul(schema, seen: set | None = None) -> None:
    seen = set() if seen is None else seen
    if not isinstance(schema, dict) or id(schema) in seen:
        return
    seen.add(id(schema))
    if schema.get("type") == "string" and not ({"pattern", "format", "enum"} & set(schema)):
        schema["pattern"] = NO_NUL
    children = [
        *(schema.get("properties") or {}).values(),
        schema.get("items"),
        schema.get("additionalProperties"),
    ]
    children += [child for key in ("oneOf", "anyOf", "allOf") for child in schema.get(key) or []]
    for child in children:
        _no_nul(child, seen)
