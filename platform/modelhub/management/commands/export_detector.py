"""``manage.py export_detector TAG [--out FILE]``: the platform side of ``python -m ml.export``.

Resolves a version tag (or an alias such as ``production``) to its checkpoint, checks the checksum,
writes the bundle with the model card built from the database (metrics, rounds, lineage) under
``MEDIA_ROOT/exports/`` like the API does, and optionally copies it to ``--out``.
"""

from __future__ import annotations

import json
import shutil

from django.core.management.base import BaseCommand, CommandError

from forgery_site.errors import DomainError
from modelhub.selectors import detector_version_get
from modelhub.services import bundle_path, detector_export


class Command(BaseCommand):
    help = "Export a detector version (tag or alias) to a verified bundle zip."

    def add_arguments(self, parser):
        parser.add_argument("tag", help="version tag or alias (production)")
        parser.add_argument("--out", help="also copy the bundle to this file")

    def handle(self, *args, **opts):
        try:
            version = detector_version_get(ref=opts["tag"])
            result = detector_export(version=version)
            if opts.get("out"):
                shutil.copyfile(bundle_path(version=version), opts["out"])
                result["copied_to"] = opts["out"]
        except DomainError as exc:
            raise CommandError(f"{exc.message} {exc.errors or ''}".strip()) from exc
        self.stdout.write(json.dumps(result))
