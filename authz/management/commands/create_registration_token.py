from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse

from authz.clients.auth import default_issuer
from authz.clients.registration import RegistrationMode, initial_access_token_create, registration_mode


class Command(BaseCommand):
    help = (
        "Mint an initial access token for dynamic client registration (RFC 7591 §3). Prints it once as JSON; only "
        "its SHA-256 checksum is stored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--expires-in", type=int, default=86400, help="seconds the token stays valid (default: one day)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        expires_in = options["expires_in"]
        if expires_in <= 0:
            raise CommandError("--expires-in must be a positive number of seconds.")
        mode = registration_mode()
        if mode != RegistrationMode.INITIAL_ACCESS_TOKEN:
            # Minting a token that nothing asks for would suggest registration is protected when it is not.
            self.stderr.write(f"Note: registration mode is {mode!r}; the endpoint does not check this token.")
        token = initial_access_token_create(expires_in=expires_in)
        self.stdout.write(
            json.dumps(
                {
                    "initial_access_token": token,
                    "expires_in": expires_in,
                    "registration_endpoint": default_issuer() + reverse("oauth2_provider:dcr-register"),
                }
            )
        )
