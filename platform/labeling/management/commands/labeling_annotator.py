"""``manage.py labeling_annotator USERNAME [--remove]``: an annotator's Label Studio onboarding state.

Shows how the annotator gets into Label Studio (the invite link and the email to sign up with), links
the account when they have joined, or with ``--remove`` removes their Label Studio membership. The
platform never sets Label Studio passwords (Label Studio keeps its own); on a local install an admin
resets a forgotten one with ``deploy/labelstudio/ls.sh reset-password EMAIL``.
"""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Show (and refresh) an annotator's Label Studio link: invited, joined or removed."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--remove", action="store_true", help="remove the Label Studio membership")

    def handle(self, *args, **opts) -> None:
        from accounts.roles import ANNOTATOR
        from labeling.provisioning import annotator_invite, annotator_remove, invite_url

        user = get_user_model().objects.filter(username=opts["username"]).first()
        if user is None:
            raise CommandError(f"no platform user {opts['username']!r}")
        if opts["remove"]:
            account = annotator_remove(user_id=user.pk)
            if account is None:
                raise CommandError(f"{user.username} has no Label Studio account")
        else:
            if not user.groups.filter(name=ANNOTATOR).exists():
                raise CommandError(f"{user.username} does not have the annotator role")
            account = annotator_invite(user_id=user.pk)
        out = {
            "user": user.username,
            "status": account.status,
            "ls_user_id": account.ls_user_id,
            "email": account.ls_email,
        }
        if account.status == "invited":
            out["invite_url"] = invite_url()
            out["next_step"] = f"the annotator signs up at invite_url with {account.ls_email} and a password"
        elif account.status == "removed":
            out["next_step"] = f"to restore: deploy/labelstudio/ls.sh restore-member {account.ls_email}"
        self.stdout.write(json.dumps(out))
