"""Settings of the webhook benchmark's server: the platform's, with ``bench.webhook_site`` as URLs."""

from forgery_site.settings import *  # noqa: F403

ROOT_URLCONF = "bench.webhook_site"
