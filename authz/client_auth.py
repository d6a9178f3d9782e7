"""Client authentication (RFC 6749 §2.3.1) shared by the backchannel endpoint, the token endpoint and the
oauthlib validator, so that every endpoint enforces the method the client registered."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus

from oauth2_provider.models import get_application_model

from .errors import InvalidClient, InvalidRequest
from .hashers import burn_verification, verify_client_secret
from .models import CibaClient

logger = logging.getLogger(__name__)

AuthMethod = CibaClient.AuthMethod


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    secret: str
    method: str


def extract_credentials(authorization: str | None, params: Mapping[str, str]) -> ClientCredentials | None:
    """The credentials the client presented, or None if it presented none. More than one method is an error."""
    basic = _parse_basic(authorization) if authorization else None
    if basic is not None:
        if "client_secret" in params:
            raise InvalidRequest("Use exactly one client authentication method.")
        body_id = params.get("client_id")
        if body_id is not None and body_id != basic.client_id:
            raise InvalidRequest("client_id in the body does not match the Authorization header.")
        return basic
    if "client_secret" in params:
        return ClientCredentials(
            client_id=params.get("client_id", ""),
            secret=params.get("client_secret", ""),
            method=AuthMethod.CLIENT_SECRET_POST,
        )
    return None


def _parse_basic(authorization: str) -> ClientCredentials | None:
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidClient("The Basic credentials are not valid base64 of UTF-8.") from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClient("The Basic credentials must be client_id:client_secret.")
    # RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
    return ClientCredentials(unquote_plus(client_id), unquote_plus(secret), AuthMethod.CLIENT_SECRET_BASIC)


def check_presented_client_id(credentials: ClientCredentials | None) -> ClientCredentials:
    """Refuse missing credentials and client_ids no client can have, before any lookup."""
    if credentials is None:
        raise InvalidClient("Client authentication is required.")
    if not credentials.client_id or "\x00" in credentials.client_id or len(credentials.client_id) > 255:
        burn_verification()
        raise InvalidClient()
    return credentials


def verify_client(
    credentials: ClientCredentials, *, client_type: str | None, client_secret: str, registered_method: str | None
) -> None:
    """Check presented credentials against a client's stored ones (client_type None: no such client)."""
    if client_type is None:
        burn_verification()
        raise InvalidClient()
    if client_type != get_application_model().CLIENT_CONFIDENTIAL:
        raise InvalidClient("Public clients cannot authenticate; CIBA needs a confidential client.")
    if not verify_client_secret(credentials.secret, client_secret):
        raise InvalidClient()
    if registered_method is not None and credentials.method != registered_method:
        raise InvalidClient(f"This client is registered for {registered_method}.")


def authenticate_client(credentials: ClientCredentials | None):  # -> Application
    """The Application these credentials prove, or InvalidClient. Never runs the slow password hasher."""
    credentials = check_presented_client_id(credentials)
    application = get_application_model().objects.select_related("ciba").filter(client_id=credentials.client_id).first()
    ciba = ciba_settings(application) if application else None
    verify_client(
        credentials,
        client_type=application.client_type if application else None,
        client_secret=application.client_secret if application else "",
        registered_method=ciba.token_endpoint_auth_method if ciba else None,
    )
    return application


def ciba_settings(application) -> CibaClient | None:
    if application is None:
        return None
    try:
        return application.ciba
    except CibaClient.DoesNotExist:
        return None
