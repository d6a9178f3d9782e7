"""Client authentication shared by the backchannel endpoint, the token endpoint and the oauthlib validator, so that
every endpoint enforces the method the client registered: a secret (RFC 6749 §2.3.1) or a JWT signed with one of
the client's registered keys (private_key_jwt: RFC 7523 §2.2, OIDC Core §9)."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import jwt
from django.conf import settings
from django.http import QueryDict
from django.urls import reverse
from oauth2_provider.models import get_application_model
from oauth2_provider.settings import oauth2_settings

from authz.clients.hashers import burn_verification, verify_client_secret
from authz.clients.keys import CLOCK_LEEWAY_SECONDS, JoseError, consume_jti, is_numeric_date, verify_client_jwt
from authz.constants import JWT_BEARER
from authz.errors import InvalidClient, InvalidRequest
from authz.models import CibaClient, ciba_client_of
from authz.rows import WithCompanion

logger = logging.getLogger(__name__)

AuthMethod = CibaClient.AuthMethod

# The body parameters that carry client credentials; none of them may be repeated (RFC 6749 §3.2).
CREDENTIAL_PARAMS = ("client_id", "client_secret", "client_assertion", "client_assertion_type")
MAX_ASSERTION_LIFETIME_SECONDS = 300
MAX_ASSERTION_CHARS = 16 * 1024
# The WSGI environ key (request.META) by which our token view hands an already authenticated client to the oauthlib
# validator. Headers from the outside world only reach request.META as HTTP_* keys, so no client can set this one,
# and the validator accepts only an Application instance there, never a string.
AUTHENTICATED_CLIENT_META = "countersign.authenticated_client"


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    secret: str
    method: str
    assertion: str = ""

    @property
    def is_assertion(self) -> bool:
        return self.method == AuthMethod.PRIVATE_KEY_JWT


def extract_credentials(authorization: str | None, params: Mapping[str, str]) -> ClientCredentials | None:
    """The credentials the client presented, or None if it presented none. More than one method is an error."""
    basic = _parse_basic(authorization) if authorization else None
    has_assertion = "client_assertion" in params or "client_assertion_type" in params
    if (basic is not None) + ("client_secret" in params) + has_assertion > 1:
        raise InvalidRequest("Use exactly one client authentication method (RFC 6749 section 2.3).")
    if basic is not None:
        body_id = params.get("client_id")
        if body_id is not None and body_id != basic.client_id:
            raise InvalidRequest("client_id in the body does not match the Authorization header.")
        return basic
    if has_assertion:
        return _assertion_credentials(params)
    if "client_secret" in params:
        return ClientCredentials(
            client_id=params.get("client_id", ""),
            secret=params.get("client_secret", ""),
            method=AuthMethod.CLIENT_SECRET_POST,
        )
    return None


def _assertion_credentials(params: Mapping[str, str]) -> ClientCredentials:
    """Who a client_assertion claims to come from (iss = sub = client_id, RFC 7523 §3), before anything is verified."""
    assertion_type, assertion = params.get("client_assertion_type"), params.get("client_assertion")
    if not assertion_type or not assertion:
        raise InvalidRequest("Send client_assertion and client_assertion_type together (RFC 7521 section 4.2).")
    if assertion_type != JWT_BEARER:
        raise InvalidClient(f"client_assertion_type must be {JWT_BEARER}.")
    if len(assertion) > MAX_ASSERTION_CHARS:
        raise InvalidClient("The client_assertion is too large.")
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise InvalidClient("The client_assertion is not a signed JWT (RFC 7523 section 2.2).") from exc
    iss, sub = claims.get("iss"), claims.get("sub")
    if not isinstance(iss, str) or not iss or iss != sub:
        raise InvalidClient("The client_assertion's iss and sub must both be the client_id (RFC 7523 section 3).")
    body_id = params.get("client_id")
    if body_id is not None and body_id != iss:
        raise InvalidClient("client_id does not match the iss and sub of the client_assertion.")
    return ClientCredentials(client_id=iss, secret="", method=AuthMethod.PRIVATE_KEY_JWT, assertion=assertion)


def _parse_basic(authorization: str) -> ClientCredentials | None:
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        # Header bytes outside ASCII reach us as latin-1 characters (PEP 3333), which b64decode refuses with a plain
        # ValueError (binascii.Error and UnicodeDecodeError are ValueErrors too).
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError as exc:
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
    credentials: ClientCredentials,
    *,
    client_type: str | None,
    client_secret: str,
    registered_method: str | None,
    load_ciba: Callable[[], CibaClient | None] | None = None,
    audience: Iterable[str] | None = None,
) -> None:
    """Check presented credentials against a client's stored ones (client_type None: no such client).

    A client_assertion is verified against the keys of the CibaClient that `load_ciba` returns, called only then, and
    its `aud` must be one of `audience` (default: this server's, see assertion_audience)."""
    if client_type is None:
        burn_verification()
        raise InvalidClient()
    if client_type != get_application_model().CLIENT_CONFIDENTIAL:
        raise InvalidClient("Public clients cannot authenticate; CIBA needs a confidential client.")
    # Client identifiers are not secrets (RFC 6749 §2.2): a method mismatch may say which method to use.
    if credentials.is_assertion:
        if registered_method != AuthMethod.PRIVATE_KEY_JWT:
            registered = registered_method or "a client secret"
            raise InvalidClient(f"This client is registered for {registered}, not private_key_jwt.")
        ciba = load_ciba() if load_ciba is not None else None
        if ciba is None:
            raise InvalidClient()
        verify_assertion(credentials, ciba=ciba, audience=audience)
        return
    if registered_method == AuthMethod.PRIVATE_KEY_JWT:
        raise InvalidClient(
            "This client is registered for private_key_jwt: send client_assertion_type and client_assertion, not a "
            "client secret."
        )
    if not verify_client_secret(credentials.secret, client_secret):
        raise InvalidClient()
    if registered_method is not None and credentials.method != registered_method:
        raise InvalidClient(f"This client is registered for {registered_method}.")


def verify_assertion(credentials: ClientCredentials, *, ciba: CibaClient, audience: Iterable[str] | None) -> None:
    """RFC 7523 §3 for a private_key_jwt client: signature by a registered key with an allowed algorithm, iss = sub =
    client_id, aud this server, a short exp, and a jti never seen before (consumed only once the signature holds)."""
    client_id = ciba.application.client_id
    try:
        claims = verify_client_jwt(
            credentials.assertion,
            ciba=ciba,
            algorithms=ciba.allowed_signing_algs,
            audience=list(audience) if audience is not None else assertion_audience(default_issuer()),
            require=("iss", "sub", "aud", "exp", "jti"),
            what="client_assertion",
        )
    except JoseError as exc:
        raise InvalidClient(str(exc)) from exc
    if claims.get("sub") != client_id:
        raise InvalidClient("The client_assertion's iss and sub must both be the client_id (RFC 7523 section 3).")
    now = time.time()
    exp, iat = claims["exp"], claims.get("iat")
    if not is_numeric_date(exp) or (iat is not None and not is_numeric_date(iat)):
        raise InvalidClient("The client_assertion's exp and iat must be numbers (seconds since the epoch).")
    if exp > now + MAX_ASSERTION_LIFETIME_SECONDS + CLOCK_LEEWAY_SECONDS:
        raise InvalidClient(
            f"The client_assertion's exp is more than {MAX_ASSERTION_LIFETIME_SECONDS} seconds ahead; sign a "
            "short-lived assertion for each request."
        )
    if iat is not None and iat > now + CLOCK_LEEWAY_SECONDS:
        raise InvalidClient("The client_assertion's iat is in the future; check the client's clock.")
    try:
        consume_jti("client-assertion", client_id=client_id, jti=claims["jti"], expires_at=float(exp))
    except JoseError as exc:
        raise InvalidClient(f"client_assertion: {exc}") from exc


def default_issuer() -> str:
    issuer: str = oauth2_settings.OIDC_ISS_ENDPOINT or settings.PUBLIC_URL
    return issuer.rstrip("/")


def assertion_audience(issuer: str, *endpoints: str) -> list[str]:
    """The `aud` values a client_assertion may carry. CIBA Core §7.1: the OP MUST accept its Issuer Identifier, its
    Token Endpoint URL or its Backchannel Authentication Endpoint URL, wherever the assertion is presented; plus the
    URL of the endpoint that receives it (introspection, revocation), as RFC 7523 §3 allows."""
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    urls = [
        issuer,
        origin + reverse("oauth2_provider:token"),
        origin + reverse("oauth2_provider:bc-authorize"),
        # DOT hands oauthlib the path only: an endpoint given as a path is on the issuer's origin.
        *(origin + endpoint if endpoint.startswith("/") else endpoint for endpoint in endpoints),
    ]
    audience: list[str] = []
    for url in urls:
        # Endpoint URLs end in a slash here; clients often drop it.
        for variant in (url, url.rstrip("/")):
            if variant and variant not in audience:
                audience.append(variant)
    return audience


def authenticate_client(
    credentials: ClientCredentials | None, *, audience: Iterable[str] | None = None
) -> Any:  # an Application (DOT ships no types)
    """The Application these credentials prove, or InvalidClient. Never runs the slow password hasher."""
    credentials = check_presented_client_id(credentials)
    application = load_application(credentials.client_id)
    ciba = ciba_client_of(application)
    if ciba is not None and ciba.deregistered_at is not None:
        # RFC 7592 §2.3: a deleted registration's client_id is invalidated; the row is kept only for the audit trail.
        application = ciba = None
    verify_client(
        credentials,
        client_type=application.client_type if application else None,
        client_secret=application.client_secret if application else "",
        registered_method=ciba.token_endpoint_auth_method if ciba else None,
        load_ciba=lambda: ciba,
        audience=audience,
    )
    return application


# Every bc-authorize and token request starts here.
_APPLICATION_WITH_CIBA = WithCompanion(get_application_model, CibaClient, link="application", field="client_id")


def load_application(client_id: str) -> Any:  # an Application, or None
    """The Application with this client_id, with its CibaClient (or None) cached on it as select_related("ciba")
    would, in one query whose SQL is built once per process (authz/rows.py)."""
    return _APPLICATION_WITH_CIBA.get(client_id)


def load_ciba_client(client_id: str) -> CibaClient | None:
    """A client's CibaClient row with its Application, for verifying an assertion on the poll's database path."""
    return (
        CibaClient.objects.select_related("application")
        .filter(application__client_id=client_id, deregistered_at__isnull=True)
        .first()
    )


def credential_params(data: QueryDict) -> dict[str, str]:
    """The credential parameters of a form body, refusing repeats (RFC 6749 §3.2)."""
    params: dict[str, str] = {}
    for key in CREDENTIAL_PARAMS:
        values = data.getlist(key)
        if len(values) > 1:
            raise InvalidRequest(f"The parameter {key} is repeated.")
        if values:
            if "\x00" in values[0]:
                raise InvalidRequest("Parameters must not contain NUL characters.")
            params[key] = values[0]
    return params
