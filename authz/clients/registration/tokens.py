"""Who may register (settings.REGISTRATION_MODE) and the bearer tokens of registration: initial access tokens
(RFC 7591 §3) and DOT's registration access tokens (RFC 7592 §3), which open the registration endpoint and nothing else.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import get_access_token_model
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.utils import parse_bearer_token

from authz.errors import OAuthError

# Initial access tokens are DOT AccessTokens with no application and this scope, which no client can be granted
# (it is not in OAUTH2_PROVIDER["SCOPES"]).
INITIAL_ACCESS_TOKEN_SCOPE = "countersign:register"


def is_registration_token(token: Any) -> bool:
    """Initial and registration access tokens open the registration endpoint and nothing else: resource servers
    and introspection must not take them for access tokens."""
    scopes = set((token.scope or "").split())
    return bool(scopes & {INITIAL_ACCESS_TOKEN_SCOPE, oauth2_settings.DCR_REGISTRATION_SCOPE})


class RegistrationMode:
    INITIAL_ACCESS_TOKEN = "initial_access_token"
    OPEN = "open"
    OFF = "off"
    ALL = (INITIAL_ACCESS_TOKEN, OPEN, OFF)


def registration_mode() -> str:
    mode = getattr(settings, "REGISTRATION_MODE", RegistrationMode.INITIAL_ACCESS_TOKEN)
    if not oauth2_settings.DCR_ENABLED:
        return RegistrationMode.OFF
    return mode


class InvalidToken(OAuthError):
    """RFC 6750 §3.1: a missing, unknown or expired bearer token; the challenge names Bearer, not Basic."""

    error = "invalid_token"
    status_code = 401

    def __init__(self, description: str | None = None, *, presented: bool = True) -> None:
        super().__init__(description)
        self.presented = presented

    def response(self) -> JsonResponse:
        response = super().response()
        # RFC 6750 §3: no error code in the challenge when the request carried no credentials at all.
        response["WWW-Authenticate"] = (
            f'Bearer realm="countersign", error="invalid_token", error_description="{self.description}"'
            if self.presented
            else 'Bearer realm="countersign"'
        )
        return response


def initial_access_token_create(*, expires_in: int, now: datetime | None = None) -> str:
    """Mint an initial access token; only its checksum is stored (DOT's token_checksum), the value is returned once."""
    now = now or timezone.now()
    raw: str = generate_client_secret()
    token = get_access_token_model()(
        application=None, user=None, scope=INITIAL_ACCESS_TOKEN_SCOPE, expires=now + timedelta(seconds=expires_in)
    )
    # Only the lookup checksum is stored (DOT's hashed-at-rest path), whatever COMPLIANT_BCP_RFC9700_TOKEN_STORAGE says.
    token.token = ""
    token._raw_token = raw
    token.save()
    return raw


def initial_access_token_check(authorization: str | None) -> None:
    """Raise InvalidToken unless the Authorization header carries a valid, unexpired initial access token."""
    if not authorization:
        raise InvalidToken("An initial access token is required to register a client.", presented=False)
    raw = parse_bearer_token(authorization)
    if raw is None:
        raise InvalidToken("Send the initial access token as a Bearer token (RFC 6750 section 2.1).")
    checksum = hashlib.sha256(raw.encode("utf-8")).hexdigest()
    token = (
        get_access_token_model()
        .objects.filter(token_checksum=checksum, application__isnull=True, scope=INITIAL_ACCESS_TOKEN_SCOPE)
        .first()
    )
    if token is None:
        raise InvalidToken("The initial access token is not valid.")
    if token.is_expired():
        raise InvalidToken("The initial access token has expired.")


class RegistrationModePermission:
    """DOT's DCR_REGISTRATION_PERMISSION_CLASSES hook, answering as the registration view does."""

    def has_permission(self, request: HttpRequest) -> bool:
        mode = registration_mode()
        if mode == RegistrationMode.OPEN:
            return True
        if mode == RegistrationMode.OFF:
            return False
        try:
            initial_access_token_check(request.META.get("HTTP_AUTHORIZATION"))
        except InvalidToken:
            return False
        return True
