from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from authz.review.roles import API_PERMISSIONS
from authz.review.tokens import review_token_create


class Command(BaseCommand):
    help = (
        "Mint a bearer token of the review API (/api/review/) for a staff user. Prints it once as JSON; only its "
        "SHA-256 is stored. The token opens the API while the user is active staff with the viewer or operator role "
        "(or a superuser); revoke it in the admin (Review API tokens)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="the staff user the token acts as")
        parser.add_argument("--name", default="", help='what the token is for, e.g. "SIEM pull"')
        parser.add_argument(
            "--expires-in-days", type=int, default=90, help="days the token stays valid (default 90; 0: never expires)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["expires_in_days"]
        if days < 0 or days > 3650:
            raise CommandError("--expires-in-days must be from 0 (never expires) to 3650.")
        name = options["name"].strip()
        if len(name) > 100:
            raise CommandError("--name takes at most 100 characters.")
        User = get_user_model()
        user = User.objects.filter(**{User.USERNAME_FIELD: options["username"]}).first()
        if user is None:
            raise CommandError(f"No user {options['username']!r}.")
        if not (user.is_active and user.is_staff):
            raise CommandError(f"{options['username']!r} is not active staff: the API would refuse the token.")
        if not user.has_perms(API_PERMISSIONS):
            # Minted all the same: the role may be given later, and the token works from then on.
            self.stderr.write(
                f"Note: {options['username']!r} has neither the viewer nor the operator role: the API answers 403 "
                "until it does."
            )
        token, raw = review_token_create(user=user, name=name, expires_in=timedelta(days=days) if days else None)
        self.stdout.write(
            json.dumps(
                {
                    "token": raw,
                    "id": token.pk,
                    "username": user.get_username(),
                    "name": token.name,
                    "expires_at": token.expires_at.isoformat() if token.expires_at else None,
                }
            )
        )
