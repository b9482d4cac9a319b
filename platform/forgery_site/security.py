"""Production safety: the start-up refusals and the Content-Security-Policy middleware.

``production_problems`` is called by ``settings.py`` when DEBUG is off; any problem stops the process
with ``ImproperlyConfigured`` before it serves a request (a web process or a Celery worker):

- ``SECRET_KEY`` unset, the development default, or weak by Django's own deploy check (fewer than 50
  characters, fewer than 5 distinct ones, or a ``django-insecure-`` key);
- ``WEBHOOK_SECRET`` empty (the Label Studio webhook would then refuse every delivery: masks would
  only arrive through the periodic reconciliation, and nobody would notice);
- ``ALLOWED_HOSTS`` containing the wildcard ``*`` (Host-header poisoning of password-reset links and
  absolute URLs).

``ContentSecurityPolicyMiddleware`` adds one ``Content-Security-Policy`` header to every response
(Django 5.2 has no built-in CSP). The dashboard loads its scripts and styles from ``/static/`` only, has
no inline script, style element or style attribute, and draws images from the API (same origin), from
``blob:`` URLs (uploads, authenticated media fetched by script) and from ``data:`` URLs (heat maps,
colourised on a canvas). Label Studio is never embedded: the dashboard links to it in a new tab, so
``frame-ancestors 'none'`` and ``frame-src 'none'`` hold. The Swagger UI page (``/api/docs/``) carries one
small inline ``<style>`` element from drf-spectacular's template; only that page may use inline styles.
"""

from __future__ import annotations

from collections.abc import Callable

WEAK_KEY_MIN_LENGTH = 50  # the thresholds of Django's security.W009
WEAK_KEY_MIN_UNIQUE = 5
INSECURE_KEY_PREFIX = "django-insecure"

CSP_DEFAULT = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data: blob:",
    "font-src": "'self'",
    "connect-src": "'self'",
    "object-src": "'none'",
    "frame-src": "'none'",
    "frame-ancestors": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
}
# Paths whose pages need an inline style (Swagger UI); everything else gets CSP_DEFAULT.
CSP_INLINE_STYLE_PATHS = ("/api/docs/",)


def production_problems(
    *, secret_key: str, default_secret_key: str, webhook_secret: str, allowed_hosts: list[str]
) -> list[str]:
    """What keeps these settings from running with DEBUG off (empty list: nothing)."""
    problems = []
    if not secret_key or secret_key == default_secret_key:
        problems.append("SECRET_KEY is unset or the default development key: set SECRET_KEY.")
    elif (
        len(secret_key) < WEAK_KEY_MIN_LENGTH
        or len(set(secret_key)) < WEAK_KEY_MIN_UNIQUE
        or secret_key.startswith(INSECURE_KEY_PREFIX)
    ):
        problems.append(
            f"SECRET_KEY is weak: use at least {WEAK_KEY_MIN_LENGTH} random characters "
            f"(python -c 'import secrets; print(secrets.token_urlsafe(50))')."
        )
    if not webhook_secret:
        problems.append("WEBHOOK_SECRET is empty: set the shared secret of the Label Studio webhooks.")
    if "*" in allowed_hosts:
        problems.append("ALLOWED_HOSTS contains '*': list the host names this deployment answers to.")
    return problems


def proxy_ssl_header(value: str) -> tuple[str, str] | None:
    """``SECURE_PROXY_SSL_HEADER`` from ``X-Forwarded-Proto`` or ``X-Forwarded-Proto=https`` (opt-in)."""
    value = value.strip()
    if not value:
        return None
    name, _, expected = value.partition("=")
    name = name.strip()
    if not name or any(c.isspace() for c in name):
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER {value!r}: expected a header name like X-Forwarded-Proto"
        )
    return "HTTP_" + name.upper().replace("-", "_"), (expected.strip() or "https")


def csp_header(directives: dict[str, str]) -> str:
    return "; ".join(f"{name} {value}" for name, value in directives.items())


class ContentSecurityPolicyMiddleware:
    """Sets ``Content-Security-Policy`` unless a view set its own."""

    def __init__(self, get_response: Callable):
        self.get_response = get_response
        self.default = csp_header(CSP_DEFAULT)
        self.inline_style = csp_header({**CSP_DEFAULT, "style-src": "'self' 'unsafe-inline'"})

    def __call__(self, request):
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            relaxed = request.path.startswith(CSP_INLINE_STYLE_PATHS)
            response["Content-Security-Policy"] = self.inline_style if relaxed else self.default
        return response
