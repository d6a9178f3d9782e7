from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import get_application_model

from approvals import outbound
from approvals.conf import approvals_settings
from authz.clients.keys import JwksError, parse_jwks
from authz.models import CibaClient
from authz.tokens.resources import resource_indicator_error


class Command(BaseCommand):
    help = (
        "Register an agent as a confidential OAuth client allowed to use CIBA. Prints JSON with its credentials "
        "(a client_secret, unless it authenticates with private_key_jwt)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--delivery-mode", choices=CibaClient.DeliveryMode.values, default="poll")
        parser.add_argument("--notification-endpoint", default="")
        parser.add_argument(
            "--auth-method", choices=CibaClient.AuthMethod.values, default=CibaClient.AuthMethod.CLIENT_SECRET_BASIC
        )
        parser.add_argument("--jwks", default="", help="file with the client's public keys, a JWK Set (JSON)")
        parser.add_argument("--jwks-uri", default="", help="https URL where the client publishes its JWK Set")
        parser.add_argument(
            "--signing-alg",
            choices=CibaClient.SigningAlg.values,
            default="",
            help="the only algorithm accepted for its private_key_jwt assertions (default: any supported one)",
        )
        parser.add_argument(
            "--client-credentials",
            action="store_true",
            help="allow the client_credentials grant: tokens for the agent itself, without a person's approval",
        )
        parser.add_argument(
            "--request-signing-alg",
            choices=CibaClient.SigningAlg.values,
            default="",
            help="require signed authentication requests with this algorithm (CIBA Core §7.1.1)",
        )
        parser.add_argument("--fapi", action="store_true", help="enforce the FAPI-CIBA profile for this client")
        parser.add_argument(
            "--no-ciba",
            action="store_true",
            help="a client that never asks people: a resource server that introspects other clients' tokens, or "
            "(with --client-credentials) an agent that only acts on its own behalf",
        )
        parser.add_argument(
            "--resource",
            action="append",
            default=[],
            metavar="URL",
            help="with --no-ciba: a resource URI (RFC 8707) this resource server serves; it may introspect tokens "
            "bound to it (repeat for several)",
        )
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
                outbound.check_url(endpoint)  # the SSRF rules every callback will be held to
            except outbound.OutboundError as exc:
                raise CommandError(f"--notification-endpoint is not allowed: {exc}") from exc
        private_key_jwt = options["auth_method"] == CibaClient.AuthMethod.PRIVATE_KEY_JWT
        if options["signing_alg"] and not private_key_jwt:
            raise CommandError("--signing-alg is for private_key_jwt clients.")
        if options["jwks"] and options["jwks_uri"]:
            raise CommandError("Give the client's keys with --jwks or --jwks-uri, not both.")
        if private_key_jwt and not (options["jwks"] or options["jwks_uri"]):
            raise CommandError("private_key_jwt needs the client's public keys: --jwks FILE or --jwks-uri URL.")
        jwks = self._read_jwks(options["jwks"]) if options["jwks"] else None
        # A --no-ciba client that does not act for itself is a resource server
        # (authz.tokens.introspection.may_introspect).
        resource_server = options["no_ciba"] and not options["client_credentials"]
        resources = list(dict.fromkeys(options["resource"]))
        if resources and not resource_server:
            raise CommandError("--resource is for resource servers: --no-ciba without --client-credentials.")
        for resource in resources:
            problem = resource_indicator_error(resource)
            if problem:
                raise CommandError(f"--resource {resource}: {problem}")
        prompt_channels = [name.strip() for name in options["prompt_channels"].split(",") if name.strip()]
        configured = approvals_settings.channel_names()
        unknown = [name for name in prompt_channels if name not in configured]
        if unknown:
            raise CommandError(
                f"Prompt channels not configured on this server: {', '.join(unknown)} (configured: "
                f"{', '.join(configured)})."
            )
        Application = get_application_model()
        try:
            # The client-name rule of every path (approvals.text, on the model field).
            Application._meta.get_field("name").run_validators(options["name"])
        except ValidationError as exc:
            raise CommandError(_describe(exc)) from exc
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
            ciba = CibaClient(
                application=application,
                ciba_enabled=not options["no_ciba"],
                token_endpoint_auth_method=options["auth_method"],
                backchannel_token_delivery_mode=options["delivery_mode"],
                backchannel_client_notification_endpoint=endpoint,
                backchannel_user_code_parameter=options["user_code"],
                refresh_tokens=not options["no_refresh_tokens"],
                allowed_scopes=" ".join(options["scopes"].split()),
                prompt_channels=",".join(prompt_channels),
                jwks=jwks,
                jwks_uri=options["jwks_uri"],
                token_endpoint_auth_signing_alg=options["signing_alg"],
                client_credentials_enabled=options["client_credentials"],
                backchannel_authentication_request_signing_alg=options["request_signing_alg"],
                fapi_ciba=options["fapi"],
                resource_server=resource_server,
                resources=resources,
            )
            try:
                # CibaClient.clean: the key rules (jwks or jwks_uri, SSRF-safe URL) and the FAPI-CIBA profile.
                ciba.full_clean()
            except ValidationError as exc:
                raise CommandError(_describe(exc)) from exc
            ciba.save()
        printed: dict[str, Any] = {"client_id": application.client_id}
        if not private_key_jwt:
            printed["client_secret"] = secret  # a private_key_jwt client never uses one: it is not shown
        printed.update(
            {
                "name": application.name,
                "ciba_enabled": ciba.ciba_enabled,
                "token_endpoint_auth_method": ciba.token_endpoint_auth_method,
                "backchannel_token_delivery_mode": ciba.backchannel_token_delivery_mode,
                "backchannel_client_notification_endpoint": ciba.backchannel_client_notification_endpoint,
                "backchannel_user_code_parameter": ciba.backchannel_user_code_parameter,
                "prompt_channels": ciba.prompt_channel_names,
                "jwks_uri": ciba.jwks_uri,
                "token_endpoint_auth_signing_alg": ciba.token_endpoint_auth_signing_alg,
                "backchannel_authentication_request_signing_alg": ciba.backchannel_authentication_request_signing_alg,
                "fapi_ciba": ciba.fapi_ciba,
                "client_credentials_enabled": ciba.client_credentials_enabled,
                "resource_server": ciba.resource_server,
                "resources": ciba.resources,
            }
        )
        self.stdout.write(json.dumps(printed))

    def _read_jwks(self, path: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise CommandError(f"Cannot read --jwks {path}: {exc.strerror}.") from exc
        except ValueError as exc:
            raise CommandError(f"--jwks {path} is not a JSON file.") from exc
        try:
            parse_jwks(data)  # refuses private key material, unsupported or weak keys
        except JwksError as exc:
            raise CommandError(f"--jwks {path}: {exc}") from exc
        return data


def _describe(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return " ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
    return " ".join(exc.messages)
