"""The settings registry: every tunable the platform's code reads, typed, with its default and meaning.

Each ``Setting`` is one environment variable. ``read()`` parses the environment by this registry once, at
start-up: ``forgery_site/settings.py`` takes every value from it, and the apps and workers read
``django.conf.settings.NAME`` with no default of their own (tests override them with ``override_settings``
or pytest-django's ``settings`` fixture). A value of the wrong type stops the process with an
``ImproperlyConfigured`` error naming the variable.

Environment syntax: unset or empty means the default; bool: ``1/true/yes/on`` or ``0/false/no/off``;
list: comma-separated (``IMPORT_ROOTS``: ``:``-separated), blank items dropped; path: a filesystem path.

Generated from this registry (``python manage.py settings_doc``, or ``python -m forgery_site.config``
with ``platform/`` on sys.path; ``--check`` exits 1 when a file is stale; ``forgery_site/settings_doc.py``):
``deploy/docs/settings.md`` (one table per group), and the platform-settings blocks of
``deploy/compose/.env.example`` and ``deploy/k8s/base/config.env`` (the ConfigMap's non-secret keys).

Not here: the container scripts' own variables (``GUNICORN_*``, ``GPU_WORKER*``, ``LS_DB_*``; documented in
``deploy/compose/.env.example``), torchrun's ``WORLD_SIZE``/``LOCAL_RANK`` (``ml/`` stays Django-free), and
the ``DEMO_*`` knobs of the local demo command (``rounds/management/commands/demo_loop.py``).

This module imports nothing of the project and nothing heavy: settings.py loads it in every process.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parents[2]  # the repository root

DEFAULT_SECRET_KEY = "insecure-development-key-change-me"  # noqa: S105 - refused when DEBUG is off

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
TYPE_NAMES = {str: "str", int: "int", float: "float", bool: "bool", list: "list", Path: "path"}
_EXPECTED = {
    int: "an integer",
    float: "a number",
    bool: "one of 1/true/yes/on or 0/false/no/off",
}

# Groups in the order of the documentation: key -> (title, introduction).
GROUPS: dict[str, tuple[str, str]] = {
    "django": ("Django", "Process-wide Django settings."),
    "security": (
        "Security",
        "HTTPS and cookie hardening; see deploy/docs/security.md, 'Production settings'. With DEBUG off the "
        "process refuses to start on the default or a weak SECRET_KEY, an empty WEBHOOK_SECRET or "
        "'*' in ALLOWED_HOSTS (forgery_site/security.py).",
    ),
    "database": ("Database", "PostgreSQL and how requests behave while it is unreachable."),
    "celery": ("Redis, Celery and cache", "The broker, result backend and shared cache."),
    "imports": ("Media and dataset imports", "Where media live and the limits of dataset imports."),
    "video": ("Videos", "Limits of video datasets (probing, frame extraction) and of their worker tasks."),
    "inference": (
        "Inference API",
        "The detector inference endpoint (modelhub/inference.py); read at request time.",
    ),
    "workers": ("Workers and rounds", "Celery worker processes and the rounds watchdog (celery beat)."),
    "labeling": ("Label Studio", "The labeling integration (platform/labeling)."),
    "operations": (
        "Operations view",
        "The operations dashboard's view of the workers (forgery_site/operations.py).",
    ),
}


@dataclass(frozen=True)
class Setting:
    """One tunable: an environment variable of the same name, and the Django setting it becomes.

    ``default`` is a value of ``type`` (a tuple for lists) or a function of the values read before this
    one (defaults that depend on DEBUG or on another setting); ``default_doc`` is how the documentation
    shows a default that is computed or machine-dependent. ``secret``: holds a credential (a Kubernetes
    Secret, never the ConfigMap; never written into a generated file).
    """

    name: str
    type: type
    default: Any
    doc: str
    group: str
    secret: bool = False
    default_doc: str = ""
    sep: str = ","
    choices: tuple[str, ...] = ()

    @property
    def type_name(self) -> str:
        return TYPE_NAMES[self.type]

    @property
    def computed(self) -> bool:
        """The default is computed at start-up (from other settings or the checkout's location)."""
        return callable(self.default) or bool(self.default_doc)

    def parse(self, raw: str) -> Any:
        """The typed value of a non-empty environment string; ValueError with the reason otherwise."""
        text = raw.strip()
        if self.type is bool:
            if text.lower() in TRUE_WORDS:
                return True
            if text.lower() in FALSE_WORDS:
                return False
            raise ValueError(_EXPECTED[bool])
        if self.type is int:
            try:
                return int(text)
            except ValueError:
                raise ValueError(_EXPECTED[int]) from None
        if self.type is float:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(_EXPECTED[float]) from None
            if not math.isfinite(value):
                raise ValueError("a finite number")
            return value
        if self.type is list:
            return [item.strip() for item in text.split(self.sep) if item.strip()]
        if self.type is Path:
            return Path(text)
        if self.choices and text not in self.choices:
            raise ValueError("one of " + ", ".join(self.choices))
        return raw

    def default_value(self, values: Mapping[str, Any]) -> Any:
        value = self.default(values) if callable(self.default) else self.default
        return list(value) if self.type is list else value

    def format(self, value: Any) -> str:
        """A value as the environment spells it."""
        if self.type is bool:
            return "true" if value else "false"
        if self.type is float and float(value).is_integer():
            return str(int(value))
        if self.type is list:
            return self.sep.join(value)
        return str(value)

    def default_text(self) -> str:
        """The default as the documentation shows it."""
        if self.default_doc:
            return self.default_doc
        text = self.format(self.default)
        return text if text else "(empty)"


S = Setting
MIB = 1024 * 1024
GIB = 1024 * MIB

SETTINGS: tuple[Setting, ...] = (
    # ------------------------------------------------------------------------------------------ django
    S("DEBUG", bool, True, "Development mode. Off in every deployment: production refusals, HTTPS-only "
      "cookies, HSTS, static files served by whitenoise.", "django"),
    S("SECRET_KEY", str, DEFAULT_SECRET_KEY, "Django's signing key (sessions, CSRF). At least 50 random "
      "characters; the process refuses to start with DEBUG off and the default or a weak key.", "django",
      secret=True, default_doc="a development key (refused when DEBUG is off)"),
    S("ALLOWED_HOSTS", list, lambda v: ["127.0.0.1", "localhost"] + (["*"] if v["DEBUG"] else []),
      "Host names the web application answers to, comma-separated ('*' is refused when DEBUG is off).",
      "django", default_doc="127.0.0.1,localhost (+ '*' when DEBUG is on)"),
    S("LOG_LEVEL", str, "INFO", "Root log level (logs are JSON lines on stdout): DEBUG, INFO, WARNING, "
      "ERROR.", "django"),
    # ---------------------------------------------------------------------------------------- security
    S("SECURE_HSTS_SECONDS", int, lambda v: 0 if v["DEBUG"] else 31_536_000,
      "Strict-Transport-Security max-age in seconds on HTTPS responses (0 disables HSTS).", "security",
      default_doc="31536000 (0 when DEBUG is on)"),
    S("SECURE_HSTS_INCLUDE_SUBDOMAINS", bool, False, "HSTS for every subdomain too (a decision about the "
      "organisation's whole domain).", "security"),
    S("SECURE_HSTS_PRELOAD", bool, False, "Ask browsers' preload lists to include the host (hard to undo).",
      "security"),
    S("SECURE_SSL_REDIRECT", bool, lambda v: not v["DEBUG"], "Redirect plain HTTP to HTTPS in Django "
      "(except /health, which probes reach over plain HTTP).", "security",
      default_doc="true (false when DEBUG is on)"),
    S("SECURE_PROXY_SSL_HEADER", str, "", "Behind a TLS-terminating proxy that always sets or strips it: the "
      "header that says the request came over HTTPS, e.g. X-Forwarded-Proto. Empty: off.", "security"),
    S("CSRF_TRUSTED_ORIGINS", list, (), "Origins allowed to POST forms over HTTPS, comma-separated, e.g. "
      "https://lab.example.org (needed behind a TLS proxy).", "security"),
    # ---------------------------------------------------------------------------------------- database
    S("DATABASE_URL", str, "postgres://postgres@127.0.0.1:5432/test", "The platform's PostgreSQL database "
      "(dj-database-url syntax).", "database", secret=True),
    S("DB_CONN_MAX_AGE", int, 60, "Seconds a database connection is reused (health-checked before reuse).",
      "database"),
    S("DB_CONNECT_TIMEOUT", int, 3, "Seconds a request waits for an unreachable PostgreSQL before it gets "
      "503.", "database"),
    S("DB_UNAVAILABLE_RETRY_AFTER", int, 5, "Retry-After (seconds) of the 503 answered while the database "
      "is down (pages, API and /health).", "database"),
    # ------------------------------------------------------------------------------------------ celery
    S("REDIS_URL", str, "redis://127.0.0.1:6379/0", "Redis: Celery broker and result backend.", "celery",
      secret=True),
    S("CELERY_BROKER_URL", str, lambda v: v["REDIS_URL"], "Celery broker, when apart from REDIS_URL.",
      "celery", secret=True, default_doc="REDIS_URL"),
    S("CELERY_RESULT_BACKEND", str, lambda v: v["REDIS_URL"], "Celery result backend, when apart from "
      "REDIS_URL.", "celery", secret=True, default_doc="REDIS_URL"),
    S("CELERY_KEY_PREFIX", str, "", "Redis key prefix of the Celery queues: isolates one set of queues on a "
      "shared Redis (the gpu queue is the list '<prefix>gpu'). Empty: none.", "celery"),
    S("CELERY_VISIBILITY_TIMEOUT", float, 12 * 3600, "Seconds before Redis hands an unacknowledged task (its "
      "worker died) to another worker; longer than the longest task (a training phase).", "celery"),
    S("CACHE_URL", str, "redis://127.0.0.1:6379/2", "Shared cache (per-user throttling counters), its own "
      "Redis database; locmem:// keeps a cache per process.", "celery", secret=True),
    # ----------------------------------------------------------------------------------------- imports
    S("MEDIA_ROOT", Path, BASE_DIR / "var" / "media", "Media files: images, masks, model artifacts. The same "
      "path in web, workers and Label Studio.", "imports", default_doc="<repo>/var/media"),
    S("IMPORT_ROOTS", list, (), "Directories inside MEDIA_ROOT that dataset imports may read, ':'-separated. "
      "Empty: all of MEDIA_ROOT.", "imports", sep=":"),
    S("IMPORT_MAX_IMAGE_BYTES", int, 20 * MIB, "Bytes per imported image (20 MiB).", "imports"),
    S("IMPORT_MAX_IMAGE_PIXELS", int, 4096 * 4096, "Pixels per imported image (4096*4096).", "imports"),
    S("IMPORT_MAX_ROWS", int, 2_000_000, "Rows per import manifest.", "imports"),
    S("IMPORT_WORKERS", int, 0, "Processes that check an import's rows in parallel; 0: one per CPU core.",
      "imports"),
    S("IMPORT_MAX_VIDEOS", int, 500_000, "Videos listed per video import.", "imports"),
    S("IMPORT_MAX_VIDEO_BYTES", int, 4 * GIB, "Bytes per video file of a video import (4 GiB).", "imports"),
    # ------------------------------------------------------------------------------------------- video
    S("VIDEO_MAX_BYTES", int, 4 * GIB, "Bytes per video file probed or extracted (4 GiB).", "video"),
    S("VIDEO_MAX_SIDE", int, 4096, "Pixels of a video frame's longer side.", "video"),
    S("VIDEO_MAX_PIXELS", int, 4096 * 2304, "Pixels per video frame (4096*2304: 4K UHD fits).", "video"),
    S("VIDEO_MAX_DURATION_S", float, 3 * 3600, "Seconds of video per file.", "video"),
    S("VIDEO_MAX_FRAMES", int, 500_000, "Frames per video file.", "video"),
    S("VIDEO_CLAIM_STALE_S", float, 3600, "Seconds after which a video's extraction claim counts as a dead "
      "worker's and the video may be claimed again.", "video"),
    # --------------------------------------------------------------------------------------- inference
    S("INFERENCE_MAX_FILES", int, 8, "Images per inference request.", "inference"),
    S("INFERENCE_MAX_IMAGE_BYTES", int, 10 * MIB, "Bytes per uploaded image (10 MiB; 413 above).",
      "inference"),
    S("INFERENCE_MAX_IMAGE_PIXELS", int, 4096 * 4096, "Pixels per uploaded image (4096*4096; checked from "
      "the header).", "inference"),
    S("INFERENCE_MAX_FACES", int, 8, "Faces scored per photo (largest first).", "inference"),
    S("INFERENCE_CACHE_SIZE", int, 4, "Detector versions kept loaded per web process (least recently used "
      "evicted).", "inference"),
    S("INFERENCE_BACKEND", str, "auto", "auto (the exported bundle's ONNX model once a version is exported, "
      "else its PyTorch checkpoint), onnx (export required) or torch.", "inference",
      choices=("auto", "onnx", "torch")),
    S("INFERENCE_THROTTLE_RATE", str, "30/min", "Per-user request rate of the inference endpoint (DRF "
      "syntax, e.g. 30/min).", "inference"),
    # ----------------------------------------------------------------------------------------- workers
    S("TORCH_NUM_THREADS", int, 1, "CPU threads torch may use per worker process (scoring, training).",
      "workers"),
    S("WORKER_PRESENCE_INTERVAL_S", float, 10, "Seconds between a worker's presence heartbeats (the "
      "operations view; at least 1).", "workers"),
    S("ROUNDS_STALL_S", float, 120, "Seconds a running round may go unwritten (and unlocked) before the "
      "watchdog resumes it.", "workers"),
    S("ROUNDS_WATCHDOG_INTERVAL_S", float, 30, "Seconds between rounds watchdog runs (celery beat).",
      "workers"),
    # ---------------------------------------------------------------------------------------- labeling
    S("LABEL_STUDIO_URL", str, "http://127.0.0.1:8080", "Label Studio's base URL as the platform's processes "
      "reach it.", "labeling"),
    S("LABEL_STUDIO_PUBLIC_URL", str, "", "Label Studio as annotators' browsers reach it (dashboard links). "
      "Empty: LABEL_STUDIO_URL.", "labeling"),
    S("LABEL_STUDIO_TOKEN", str, "", "API token of Label Studio's admin user (40 hex characters). Empty: "
      "read from LABEL_STUDIO_TOKEN_FILE.", "labeling", secret=True),
    S("LABEL_STUDIO_TOKEN_FILE", Path, BASE_DIR / "var" / "labelstudio" / "admin_token", "File holding the "
      "token when LABEL_STUDIO_TOKEN is empty (local installs: written by deploy/labelstudio/ls.sh).",
      "labeling", default_doc="<repo>/var/labelstudio/admin_token"),
    S("LABELING_WEBHOOK_URL", str, "http://127.0.0.1:8000/api/v1/labeling/webhook", "Where Label Studio "
      "delivers its webhooks (the platform's webhook endpoint as Label Studio reaches it).", "labeling"),
    S("WEBHOOK_SECRET", str, "", "Shared secret of Label Studio's webhooks (required when DEBUG is off).",
      "labeling", secret=True),
    S("LABELING_RECONCILE_SECONDS", float, 60, "Seconds between reconciliations of Label Studio projects "
      "with the platform (celery beat).", "labeling"),
    S("LABELING_LOW_AGREEMENT_IOU", float, 0.5, "Mean pairwise mask IoU of a sample's annotators below "
      "which the sample is flagged as low agreement.", "labeling"),
    # -------------------------------------------------------------------------------------- operations
    S("OPERATIONS_INSPECT_TIMEOUT_S", float, 1.0, "Seconds the operations view waits for workers' replies "
      "(at least 0.1).", "operations"),
    S("OPERATIONS_CACHE_S", float, 3.0, "Seconds a snapshot of the workers is reused.", "operations"),
    S("OPERATIONS_RETRY_AFTER_S", int, 5, "Retry-After (seconds) of the 503 while the broker is unreachable.",
      "operations"),
)  # fmt: skip

REGISTRY: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}


def _check_registry() -> None:
    if len(REGISTRY) != len(SETTINGS):
        raise ImproperlyConfigured("forgery_site.config: a setting is registered twice")
    for setting in SETTINGS:
        if setting.group not in GROUPS or setting.type not in TYPE_NAMES:
            raise ImproperlyConfigured(f"forgery_site.config: {setting.name} has an unknown group or type")


_check_registry()


def read(
    environ: Mapping[str, str] | None = None, registry: tuple[Setting, ...] = SETTINGS
) -> dict[str, Any]:
    """Every setting of the registry, typed, from ``environ`` (default ``os.environ``).

    Unset or empty variables take their default. Every variable of the wrong type is named in one
    ``ImproperlyConfigured`` error."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems = []
    for setting in registry:
        raw = environ.get(setting.name)
        if raw is None or not raw.strip():
            values[setting.name] = setting.default_value(values)
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            shown = "<hidden>" if setting.secret else repr(raw)
            problems.append(f"{setting.name}={shown} is not a valid {setting.type_name}: expected {exc}")
            values[setting.name] = setting.default_value(values)
    if problems:
        raise ImproperlyConfigured("invalid settings in the environment: " + "; ".join(problems))
    return values


def by_group() -> dict[str, list[Setting]]:
    groups: dict[str, list[Setting]] = {key: [] for key in GROUPS}
    for setting in SETTINGS:
        groups[setting.group].append(setting)
    return {key: items for key, items in groups.items() if items}


def main(argv: list[str] | None = None) -> int:
    """``python -m forgery_site.config [--check]``: write (or check) the generated files."""
    from forgery_site.settings_doc import main as generate

    return generate(argv)


if __name__ == "__main__":
    raise SystemExit(main())
