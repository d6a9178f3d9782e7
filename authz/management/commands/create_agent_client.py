from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import get_application_model

from approvals import http
from approvals.conf import approvals_settings
from authz.models import CibaClient


class Command(BaseCommand):
    help = "Register an agent as a confidential OAuth client allowed to use CIBA. Prints JSON with its credentials."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--delivery-mode", choices=CibaClient.DeliveryMode.values, default="poll")
        parser.add_argument("--notification-endpoint", default="")
        parser.add_argument(
            "--auth-method",
            choices=[*CibaClient.AuthMethod.values, "private_key_jwt"],
            default=CibaClient.AuthMethod.CLIENT_SECRET_BASIC,
        )
        parser.add_argument("--jwks", default="", help="file with the client's public JWKS (private_key_jwt)")
        parser.add_argument("--scopes", default="", help="space-separated scopes this client may ask for")
        parser.add_argument("--user-code", action="store_true", help="the client sends users' user_code")
        parser.add_argument("--no-refresh-tokens", action="store_true")
        parser.add_argument("--client-id", default="", help="a fixed client_id (default: generated)")
        parser.add_argument(
            "--prompt-channels",
            default="",
            help="channel names to prompt through, in order, e.g. webpush,sms (default: the server's order)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # Refuse what this version cannot honour rather than register a client that would silently not work.
        endpoint = options["notification_endpoint"]
        if options["delivery_mode"] == CibaClient.DeliveryMode.POLL and endpoint:
            raise CommandError("--notification-endpoint is only for ping and push clients.")
        if options["delivery_mode"] != CibaClient.DeliveryMode.POLL:
            if not endpoint:
                raise CommandError("Ping and push clients need --notification-endpoint (an https URL).")
            try:
                http.check_url(endpoint)  # the SSRF rules every callback will be held to
            except http.OutboundError as exc:
                raise CommandError(f"--notification-endpoint is not allowed: {exc}") from exc
        if options["auth_method"] == "private_key_jwt" or options["jwks"]:
            raise CommandError("private_key_jwt is not available in this version; use client_secret_basic or _post.")
        prompt_channels = [name.strip() for name in options["prompt_channels"].split(",") if name.strip()]
        configured = approvals_settings.channel_names()
        unknown = [name for name in prompt_channels if name not in configured]
        if unknown:
            raise CommandError(
                f"Prompt channels not configured on this server: {', '.join(unknown)} (configured: "
                f"{', '.join(configured)})."
            )
        Application = get_application_model()
        secret = generate_client_secret()
        fields: dict[str, Any] = {
            "name": options["name"],
            "client_type": Application.CLIENT_CONFIDENTIAL,
            # Agents act for themselves with client credentials and for people through CIBA (authz.validators).
            "authorization_grant_type": Application.GRANT_CLIENT_CREDENTIALS,
            "client_secret": secret,
            "algorithm": Application.RS256_ALGORITHM,
            "skip_authorization": False,
        }
        if options["client_id"]:
            if Application.objects.filter(client_id=options["client_id"]).exists():
                raise CommandError(f"A client with client_id {options['client_id']!r} exists already.")
            fields["client_id"] = options["client_id"]
        with transaction.atomic():
            application = Application.objects.create(**fields)
            ciba = CibaClient.objects.create(
                application=application,
                token_endpoint_auth_method=options["auth_method"],
                backchannel_token_delivery_mode=options["delivery_mode"],
                backchannel_client_notification_endpoint=endpoint,
                backchannel_user_code_parameter=options["user_code"],
                refresh_tokens=not options["no_refresh_tokens"],
                allowed_scopes=" ".join(options["scopes"].split()),
                prompt_channels=",".join(prompt_channels),
            )
        self.stdout.write(
            json.dumps(
                {
                    "client_id": application.client_id,
                    "client_secret": secret,
                    "name": application.name,
                    "token_endpoint_auth_method": ciba.token_endpoint_auth_method,
                    "backchannel_token_delivery_mode": ciba.backchannel_token_delivery_mode,
                    "backchannel_client_notification_endpoint": ciba.backchannel_client_notification_endpoint,
                    "backchannel_user_code_parameter": ciba.backchannel_user_code_parameter,
                    "prompt_channels": ciba.prompt_channel_names,
                }
            )
        )
