"""Account services: create or update users with a role, and give them an API token."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from rest_framework.authtoken.models import Token

from accounts.roles import ADMIN, ROLES
from forgery_site.errors import Conflict, InvalidInput

User = get_user_model()


def role_group(role: str) -> Group:
    if role not in ROLES:
        raise InvalidInput(f"Unknown role {role!r}.", errors={"role": [f"Choose one of {', '.join(ROLES)}."]})
    group, _ = Group.objects.get_or_create(name=role)
    return group


def user_role(user) -> str | None:
    if user.is_superuser:
        return ADMIN
    names = set(user.groups.values_list("name", flat=True))
    return next((role for role in ROLES if role in names), None)


@transaction.atomic
def user_create(*, username: str, password: str, role: str, email: str = "", update: bool = False):
    """Create a user with exactly one role; with ``update=True`` an existing user gets the new password/role."""
    group = role_group(role)
    try:
        validate_password(password)
    except ValidationError as exc:
        raise InvalidInput("Password rejected.", errors={"password": list(exc.messages)}) from exc
    user = User.objects.filter(username=username).first()
    if user is not None and not update:
        raise Conflict(f"User {username!r} exists.", errors={"username": ["A user with that name exists."]})
    if user is None:
        user = User(username=username)
    user.email = email or user.email
    user.is_staff = role == ADMIN  # admins may use the Django admin site too
    user.set_password(password)
    user.save()
    # Only the roles the user no longer has are removed: an annotator updated as an annotator keeps
    # their Label Studio membership (leaving the role removes it, labeling.signals).
    user.groups.remove(*Group.objects.filter(name__in=ROLES).exclude(pk=group.pk))
    user.groups.add(group)
    Token.objects.get_or_create(user=user)
    return user


def user_token(*, user) -> str:
    token, _ = Token.objects.get_or_create(user=user)
    return token.key
