"""``manage.py settings_doc [--check]``: write the files generated from the settings registry.

The registry is ``forgery_site/config.py``; the generator ``forgery_site/settings_doc.py`` (also runnable
without Django set up: ``python -m forgery_site.config`` with ``platform/`` on sys.path). The command lives
here because ``forgery_site`` is the project package, not an installed app.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from forgery_site.config import BASE_DIR
from forgery_site.settings_doc import stale, write


class Command(BaseCommand):
    help = (
        "Write deploy/docs/settings.md and the platform-settings blocks of deploy/compose/.env.example and "
        "deploy/k8s/base/config.env from the settings registry (forgery_site/config.py)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="write nothing; fail when a file is stale")

    def handle(self, *args, **opts):
        if opts["check"]:
            paths = stale()
            if paths:
                names = ", ".join(str(p.relative_to(BASE_DIR)) for p in paths)
                raise CommandError(f"stale: {names} (run: python manage.py settings_doc)")
            self.stdout.write("the generated settings files are current")
            return
        for path in write():
            self.stdout.write(f"wrote {path.relative_to(BASE_DIR)}")
