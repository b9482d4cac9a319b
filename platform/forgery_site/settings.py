"""Settings: the one settings source, read from environment variables with documented defaults.

| variable            | default                                      | meaning                                    |
|---------------------|----------------------------------------------|--------------------------------------------|
| DATABASE_URL        | postgres://postgres@127.0.0.1:5432/test      | PostgreSQL (dj-database-url syntax)        |
| REDIS_URL           | redis://127.0.0.1:6379/0                     | Celery broker + result backend             |
| MEDIA_ROOT          | <repo>/var/media                             | media files (images, masks, artifacts)     |
| IMPORT_ROOTS        | (empty: MEDIA_ROOT)                          | ':'-separated dirs inside MEDIA_ROOT that imports may read |
| SECRET_KEY          | an insecure development key                  | must be set when DEBUG is off              |
| DEBUG               | true                                         | development mode                           |
| ALLOWED_HOSTS       | 127.0.0.1,localhost (+ '*' when DEBUG)       | comma-separated                            |
| LABEL_STUDIO_URL    | http://127.0.0.1:8080                        | Label Studio base URL                      |
| LABEL_STUDIO_PUBLIC_URL | (empty: LABEL_STUDIO_URL)                | Label Studio as browsers reach it (links)  |
| LABEL_STUDIO_TOKEN  | (empty)                                      | Label Studio API token                     |
| WEBHOOK_SECRET      | (empty)                                      | shared secret of Label Studio webhooks     |
| LOG_LEVEL           | INFO                                         | root log level (logs are JSON lines)       |
| CELERY_KEY_PREFIX   | (empty)                                      | Redis key prefix of the Celery queues      |
| CACHE_URL           | redis://127.0.0.1:6379/2                     | shared cache (throttling counters); `locmem://` for one process |
| DB_CONN_MAX_AGE     | 60                                           | seconds a database connection is reused (health-checked) |
| DB_CONNECT_TIMEOUT  | 3                                            | seconds to wait for PostgreSQL before answering 503 |
| DB_UNAVAILABLE_RETRY_AFTER | 5                                     | Retry-After (s) of the 503 while the database is down |

Security (read when DEBUG is off; see deploy/docs/security.md "Production settings"):

| variable                       | default                  | meaning                                        |
|--------------------------------|--------------------------|------------------------------------------------|
| SECURE_HSTS_SECONDS            | 31536000 (0 when DEBUG)  | Strict-Transport-Security max-age              |
| SECURE_HSTS_INCLUDE_SUBDOMAINS | false                    | HSTS for every subdomain too                   |
| SECURE_HSTS_PRELOAD            | false                    | ask browsers' preload lists to include the host |
| SECURE_SSL_REDIRECT            | true (false when DEBUG)  | redirect http -> https (except /health)        |
| SECURE_PROXY_SSL_HEADER        | (empty: off)             | e.g. X-Forwarded-Proto: trust the TLS proxy's header |
| CSRF_TRUSTED_ORIGINS           | (empty)                  | comma-separated origins, e.g. https://lab.example.org |

The process refuses to start with DEBUG off and the default or a weak SECRET_KEY, an empty
WEBHOOK_SECRET, or '*' in ALLOWED_HOSTS (forgery_site/security.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from forgery_site.security import production_problems, proxy_ssl_header

BASE_DIR = Path(__file__).resolve().parents[2]  # the repository root
PLATFORM_DIR = BASE_DIR / "platform"

DEFAULT_SECRET_KEY = "insecure-development-key-change-me"  # noqa: S105 - refused when DEBUG is off


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str], sep: str = ",") -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(sep) if item.strip()]


DEBUG = env_bool("DEBUG", True)
# Secrets come from the environment only (never from a file in the repository).
SECRET_KEY = os.environ.get("SECRET_KEY") or DEFAULT_SECRET_KEY
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] + (["*"] if DEBUG else []))

DATABASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
# Persistent connections are checked before reuse (CONN_HEALTH_CHECKS), so a backend killed by a
# PostgreSQL restart or pg_terminate_backend is replaced transparently. connect_timeout bounds how long a
# request waits for an unreachable server before it gets 503 (forgery_site.errors.DatabaseUnavailableMiddleware).
DB_CONN_MAX_AGE = int(os.environ.get("DB_CONN_MAX_AGE", "60"))
DB_CONNECT_TIMEOUT = int(os.environ.get("DB_CONNECT_TIMEOUT", "3"))
DB_UNAVAILABLE_RETRY_AFTER = int(os.environ.get("DB_UNAVAILABLE_RETRY_AFTER", "5"))
DATABASES = {
    "default": dj_database_url.parse(DATABASE_URL, conn_max_age=DB_CONN_MAX_AGE, conn_health_checks=True)
}
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    _db_options = DATABASES["default"].setdefault("OPTIONS", {})
    _db_options.setdefault("connect_timeout", DB_CONNECT_TIMEOUT)
    # Dead peers on idle persistent connections are noticed within ~30 s instead of the kernel's hours.
    _db_options.setdefault("keepalives", 1)
    _db_options.setdefault("keepalives_idle", 15)
    _db_options.setdefault("keepalives_interval", 5)
    _db_options.setdefault("keepalives_count", 3)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT") or BASE_DIR / "var" / "media")
MEDIA_URL = "/media/"
IMPORT_ROOTS = env_list("IMPORT_ROOTS", [], sep=":")
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

LABEL_STUDIO_URL = os.environ.get("LABEL_STUDIO_URL", "http://127.0.0.1:8080")
# Links for browsers (dashboard, annotator streams) when they reach Label Studio under another name than
# the platform's processes do (containers: http://labelstudio:8080 inside, a public URL outside).
LABEL_STUDIO_PUBLIC_URL = os.environ.get("LABEL_STUDIO_PUBLIC_URL", "")
LABEL_STUDIO_TOKEN = os.environ.get("LABEL_STUDIO_TOKEN", "")
WEBHOOK_SECRET = os.environ.get("WEBHOOK_SECRET", "")

# ---------------------------------------------------------------------------------------- security
# DEBUG off = production: refuse to start on a default/weak SECRET_KEY, an empty WEBHOOK_SECRET or a
# wildcard ALLOWED_HOSTS (forgery_site/security.py); HTTPS-only cookies, HSTS, HTTPS redirect.
if not DEBUG:
    _problems = production_problems(
        secret_key=SECRET_KEY,
        default_secret_key=DEFAULT_SECRET_KEY,
        webhook_secret=WEBHOOK_SECRET,
        allowed_hosts=ALLOWED_HOSTS,
    )
    if _problems:
        raise ImproperlyConfigured("DEBUG is off and the settings are unsafe: " + " ".join(_problems))
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0" if DEBUG else "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^health$"]  # probes speak plain HTTP inside the cluster
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Behind a TLS-terminating proxy: SECURE_PROXY_SSL_HEADER=X-Forwarded-Proto (only if the proxy always
# sets or strips that header; otherwise a client could claim HTTPS).
SECURE_PROXY_SSL_HEADER = proxy_ssl_header(os.environ.get("SECURE_PROXY_SSL_HEADER", ""))
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True
# The dashboard's scripts read the CSRF cookie to send X-CSRFToken, so it cannot be HttpOnly (Django:
# an HttpOnly CSRF cookie adds no protection, the token is in every form anyway).
CSRF_COOKIE_HTTPONLY = False
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
# Own cookie names: browsers scope cookies by host, not port, so with Label Studio on the same host (the
# local install: 127.0.0.1:8000 and :8080) its "sessionid"/"csrftoken" would overwrite ours, and an
# annotator signing up in Label Studio would be logged out of the platform.
SESSION_COOKIE_NAME = "forgerylab_session"
CSRF_COOKIE_NAME = "forgerylab_csrftoken"
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Apps of the platform. Adding an app is one line here plus one line in forgery_site/urls.py.
PLATFORM_APPS = [
    "accounts",
    "catalog",
    "rounds",
    "modelhub",
    "labeling",
    "poolscores",
]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI assets served locally: no CDN at run time
    *PLATFORM_APPS,
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Database down -> 503 with Retry-After (JSON for /api/, a plain page otherwise), never a 500.
    "forgery_site.errors.DatabaseUnavailableMiddleware",
    # Static files: runserver serves them in DEBUG; whitenoise serves collectstatic's output otherwise.
    *([] if DEBUG else ["whitenoise.middleware.WhiteNoiseMiddleware"]),
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "forgery_site.security.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "forgery_site.urls"
WSGI_APPLICATION = "forgery_site.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "frontend" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATICFILES_DIRS = [BASE_DIR / "frontend" / "static"] if (BASE_DIR / "frontend" / "static").is_dir() else []

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
LOGIN_URL = "/admin/login/"

REST_FRAMEWORK = {
    # Token first: an unauthenticated request then gets 401 with a WWW-Authenticate header, not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "forgery_site.api.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # A role is needed, not only an account: an account without a role reads nothing (as on the dashboard).
    "DEFAULT_PERMISSION_CLASSES": ["forgery_site.api.IsAnnotatorOrAdmin"],
    "DEFAULT_PAGINATION_CLASS": "forgery_site.api.Pagination",
    # DRF's parsers, with a JSON parser that answers 400 (not 500) to pathologically nested documents.
    "DEFAULT_PARSER_CLASSES": [
        "forgery_site.api.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "forgery_site.errors.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ForgeryLab API",
    "DESCRIPTION": "Active-learning annotation platform for DeepFake detection.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Every error response documented once (shared components), the webhook's header auth as a scheme.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "forgery_site.schema.document_errors",
    ],
}

# Cache: shared by every web process, so per-user throttles hold across gunicorn workers. It lives in
# its own Redis database because Django's cache.clear() flushes the whole database.
CACHE_URL = os.environ.get("CACHE_URL", "redis://127.0.0.1:6379/2")
if CACHE_URL.startswith("locmem://"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            "KEY_PREFIX": "forgerylab",
        }
    }

# Celery (read by workers/celery_app.py with namespace CELERY).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or REDIS_URL
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or REDIS_URL
# A key prefix isolates one set of queues on a shared Redis (used by the test suite's worker).
CELERY_KEY_PREFIX = os.environ.get("CELERY_KEY_PREFIX", "")
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": CELERY_KEY_PREFIX} if CELERY_KEY_PREFIX else {}

# Dataset import limits (catalog/validation.py).
IMPORT_MAX_IMAGE_BYTES = int(os.environ.get("IMPORT_MAX_IMAGE_BYTES", 20 * 1024 * 1024))
IMPORT_MAX_IMAGE_PIXELS = int(os.environ.get("IMPORT_MAX_IMAGE_PIXELS", 4096 * 4096))
IMPORT_MAX_ROWS = int(os.environ.get("IMPORT_MAX_ROWS", 2_000_000))
# Processes that check an import's rows in parallel (catalog/rowcheck.py); 0: one per CPU core.
IMPORT_WORKERS = int(os.environ.get("IMPORT_WORKERS", 0))

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "forgery_site.logs.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
