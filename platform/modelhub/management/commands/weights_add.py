"""``manage.py weights_add NAME FILE --model MODEL``: register CLIP weights for SJEDD rounds.

The file is copied into ``MEDIA_ROOT/weights/`` (unless it is there already), checked against the
open_clip tower ``MODEL`` (an OpenAI checkpoint needs a ``-quickgelu`` model; the weights must load
strictly) and recorded with its sha256. Rounds then name it: ``detector_config.sjedd.weights = NAME``
(with ``"preset": "sjedd-paper"`` for the published recipe). ``--list`` shows what is registered.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from forgery_site.errors import DomainError


class Command(BaseCommand):
    help = "Register a CLIP weights file (copied under MEDIA_ROOT/weights/) for SJEDD rounds."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", nargs="?")
        parser.add_argument("file", nargs="?")
        parser.add_argument("--model", help="open_clip model config, e.g. ViT-B-16-quickgelu")
        parser.add_argument("--list", action="store_true", help="list the registered weights")

    def handle(self, *args, **opts) -> None:
        from modelhub.models import PretrainedWeights
        from modelhub.weights import weights_import_file, weights_register

        if opts["list"]:
            for w in PretrainedWeights.objects.order_by("name"):
                self.stdout.write(json.dumps({"name": w.name, "model": w.model, "path": w.path,
                                              "sha256": w.sha256, "image_size": w.image_size}))  # fmt: skip
            return
        if not (opts["name"] and opts["file"] and opts["model"]):
            raise CommandError("usage: weights_add NAME FILE --model MODEL (or --list)")
        try:
            relative = weights_import_file(opts["file"], opts["name"])
            weights = weights_register(name=opts["name"], path=relative, model=opts["model"])
        except DomainError as exc:
            raise CommandError(f"{exc.message} {json.dumps(exc.errors) if exc.errors else ''}") from None
        self.stdout.write(json.dumps({"name": weights.name, "model": weights.model, "path": weights.path,
                                      "sha256": weights.sha256, "image_size": weights.image_size,
                                      "quick_gelu": weights.quick_gelu}))  # fmt: skip
