"""``manage.py create_user NAME --role admin|annotator [--password P] [--update]``: prints the API token."""

from __future__ import annotations

import secrets

from django.core.management.base import BaseCommand, CommandError

from accounts.roles import ROLES
from accounts.services import user_create, user_token
from forgery_site.errors import DomainError


class Command(BaseCommand):
    help = "Create a user with a role (admin or annotator) and print its API token."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=ROLES)
        parser.add_argument("--password", help="default: a random password, printed once")
        parser.add_argument("--email", default="")
        parser.add_argument("--update", action="store_true", help="update the user if it exists")

    def handle(self, *args, **opts):
        password = opts["password"] or secrets.token_urlsafe(12)
        try:
            user = user_create(
                username=opts["username"],
                password=password,
                role=opts["role"],
                email=opts["email"],
                update=opts["update"],
            )
        except DomainError as exc:
            raise CommandError(f"{exc.message} {exc.errors or ''}".strip()) from exc
        self.stdout.write(f"username={user.username}")
        self.stdout.write(f"role={opts['role']}")
        if not opts["password"]:
            self.stdout.write(f"password={password}")
        self.stdout.write(f"token={user_token(user=user)}")
