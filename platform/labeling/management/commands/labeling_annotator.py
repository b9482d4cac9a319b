"""``manage.py labeling_annotator USERNAME [--password P]``: (re)provision an annotator's Label Studio user."""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Create or update the Label Studio user of a platform annotator (and set its Label Studio password)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--password", default=None, help="Label Studio password to set")

    def handle(self, *args, **opts) -> None:
        from labeling.provisioning import annotator_provision

        user = get_user_model().objects.filter(username=opts["username"]).first()
        if user is None:
            raise CommandError(f"no platform user {opts['username']!r}")
        account = annotator_provision(user_id=user.pk, password=opts["password"])
        self.stdout.write(
            json.dumps({"user": user.username, "ls_user_id": account.ls_user_id, "email": account.ls_email})
        )
