"""Settings: every tunable comes from the environment through the typed registry in
``forgery_site/config.py`` (names, types, defaults, meanings), documented in ``deploy/docs/settings.md``
(generated from the registry: ``python manage.py settings_doc``). This module turns those values into
Django's settings; the rest is fixed configuration.

The process refuses to start on an environment value of the wrong type, and with DEBUG off on the default
or a weak SECRET_KEY, an empty WEBHOOK_SECRET, or '*' in ALLOWED_HOSTS (forgery_site/security.py).
"""

from __future__ import annotations

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from forgery_site import config
from forgery_site.config import BASE_DIR, DEFAULT_SECRET_KEY
from forgery_site.security import production_problems, proxy_ssl_header

_env = config.read()  # every registry setting, typed (lowercase: not itself a setting)

PLATFORM_DIR = BASE_DIR / "platform"

DEBUG = _env["DEBUG"]
# Secrets come from the environment only (never from a file in the repository).
SECRET_KEY = _env["SECRET_KEY"]
ALLOWED_HOSTS = _env["ALLOWED_HOSTS"]  # default: 127.0.0.1, localhost (+ '*' when DEBUG is on)

DATABASE_URL = _env["DATABASE_URL"]
# Persistent connections are checked before reuse (CONN_HEALTH_CHECKS), so a backend killed by a
# PostgreSQL restart or pg_terminate_backend is replaced transparently. connect_timeout bounds how long a
# request waits for an unreachable server before it gets 503 (forgery_site.errors.DatabaseUnavailableMiddleware).
DB_CONN_MAX_AGE = _env["DB_CONN_MAX_AGE"]
DB_CONNECT_TIMEOUT = _env["DB_CONNECT_TIMEOUT"]
DB_UNAVAILABLE_RETRY_AFTER = _env["DB_UNAVAILABLE_RETRY_AFTER"]
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

REDIS_URL = _env["REDIS_URL"]

MEDIA_ROOT = _env["MEDIA_ROOT"]  # default: <repo>/var/media
MEDIA_URL = "/media/"
IMPORT_ROOTS = _env["IMPORT_ROOTS"]
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

LABEL_STUDIO_URL = _env["LABEL_STUDIO_URL"]
# Links for browsers (dashboard, annotator streams) when they reach Label Studio under another name than
# the platform's processes do (containers: http://labelstudio:8080 inside, a public URL outside).
LABEL_STUDIO_PUBLIC_URL = _env["LABEL_STUDIO_PUBLIC_URL"]
LABEL_STUDIO_TOKEN = _env["LABEL_STUDIO_TOKEN"]
WEBHOOK_SECRET = _env["WEBHOOK_SECRET"]

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
SECURE_HSTS_SECONDS = _env["SECURE_HSTS_SECONDS"]  # default: one year, 0 when DEBUG is on
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env["SECURE_HSTS_INCLUDE_SUBDOMAINS"]
SECURE_HSTS_PRELOAD = _env["SECURE_HSTS_PRELOAD"]
SECURE_SSL_REDIRECT = _env["SECURE_SSL_REDIRECT"]  # default: on, off when DEBUG is on
SECURE_REDIRECT_EXEMPT = [r"^health$"]  # probes speak plain HTTP inside the cluster
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Behind a TLS-terminating proxy: SECURE_PROXY_SSL_HEADER=X-Forwarded-Proto (only if the proxy always
# sets or strips that header; otherwise a client could claim HTTPS).
SECURE_PROXY_SSL_HEADER = proxy_ssl_header(_env["SECURE_PROXY_SSL_HEADER"])
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
CSRF_TRUSTED_ORIGINS = _env["CSRF_TRUSTED_ORIGINS"]

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
CACHE_URL = _env["CACHE_URL"]
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
CELERY_BROKER_URL = _env["CELERY_BROKER_URL"]  # default: REDIS_URL
CELERY_RESULT_BACKEND = _env["CELERY_RESULT_BACKEND"]  # default: REDIS_URL
# A key prefix isolates one set of queues on a shared Redis (used by the test suite's worker).
CELERY_KEY_PREFIX = _env["CELERY_KEY_PREFIX"]
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": CELERY_KEY_PREFIX} if CELERY_KEY_PREFIX else {}

LOG_LEVEL = _env["LOG_LEVEL"].upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "forgery_site.logs.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# Every other registry setting as it was read (import limits, inference, workers, Label Studio, video ...):
# the apps and workers read them as settings.NAME, with no default of their own.
globals().update({_name: _value for _name, _value in _env.items() if _name not in globals()})
