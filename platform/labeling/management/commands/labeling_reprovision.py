"""``manage.py labeling_reprovision [--check]``: adopt the answering Label Studio after a reset or a
replacement and push every live round's open tasks into it (``labeling.instance``); ``--check`` only
reports whether the answering Label Studio is the provisioned one."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Re-provision the live rounds into the Label Studio now answering (after a reset or replacement)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--check", action="store_true", help="only check which instance answers")

    def handle(self, *args, **opts) -> None:
        from labeling.client import LabelStudioError
        from labeling.instance import WrongInstance, instance_check, instance_reprovision, instance_state

        if opts["check"]:
            try:
                instance_check()
            except WrongInstance as exc:
                self.stdout.write(json.dumps({**instance_state(), "reason": str(exc)}))
                return
            except LabelStudioError as exc:
                raise CommandError(f"Label Studio cannot be asked: {exc}") from None
            self.stdout.write(json.dumps(instance_state()))
            return
        try:
            self.stdout.write(json.dumps(instance_reprovision(), default=str))
        except LabelStudioError as exc:
            raise CommandError(f"Label Studio cannot be asked: {exc}") from None
