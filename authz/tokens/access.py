"""JWT access tokens (RFC 9068), for resource servers that verify tokens offline.

With ACCESS_TOKEN_FORMAT=jwt the settings name `signed_access_token` as DOT's ACCESS_TOKEN_GENERATOR: oauthlib's
BearerToken calls it with the oauthlib request before DOT stores the token, so the token is still a DOT AccessToken
row (found by its checksum) and introspection, revocation and userinfo keep working. A resource server verifies it
with the server's key from /oauth/jwks/ (the same `kid` as ID tokens): RS256 only, header `typ` "at+jwt", `iss` this
server, `aud` itself, `exp` in the future (RFC 9068 §4). Offline verification cannot see a revocation; resource
servers that need one ask /oauth/introspect/.

Everything in the token is known before it is generated: the grants put it on the request first (the CIBA grant's
approval request, the token exchange grant's `countersign_exchange`, the refresh grant's refresh token).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import jwt
from oauth2_provider.settings import oauth2_settings

from approvals.models import ApprovalRequest
from authz.constants import REFRESH_TOKEN_GRANT_TYPE
from authz.models import TokenDetails
from authz.tokens.signing import server_signing_key

JWT_HEADER_TYPE = "at+jwt"  # RFC 9068 §2.1


def signed_access_token(request: Any) -> str:
    """An RFC 9068 access token for the token oauthlib is about to issue (a DOT ACCESS_TOKEN_GENERATOR)."""
    kid, key = server_signing_key()
    claims = access_token_claims(request)
    return jwt.encode(claims, key, algorithm="RS256", headers={"typ": JWT_HEADER_TYPE, "kid": kid})


def access_token_claims(request: Any) -> dict[str, Any]:
    """RFC 9068 §2.2's claims, plus RFC 9396 §9.1 authorization_details and RFC 8693 §4.1 act when the token has
    them. Read with vars(): oauthlib's Request answers unknown attributes with body parameters of that name."""
    attrs = vars(request)
    exchange = attrs.get("countersign_exchange") or {}
    now = int(time.time())
    expires_in = exchange.get("expires_in") or attrs.get("expires_in") or oauth2_settings.ACCESS_TOKEN_EXPIRE_SECONDS
    client_id = request.client.client_id if getattr(request, "client", None) else request.client_id
    user = attrs.get("user")
    resources = _resources(request)
    audience = resources + [a for a in exchange.get("audience", []) if a not in resources]
    validator = oauth2_settings.OAUTH2_VALIDATOR_CLASS()
    claims: dict[str, Any] = {
        "iss": validator.get_oidc_issuer_endpoint(request),
        "exp": now + int(expires_in),
        # RFC 9068 §3: without a resource indicator the audience is the client itself.
        "aud": audience or client_id,
        # RFC 9068 §2.2: the person, or the client when it acts on its own behalf (client_credentials).
        "sub": str(user.pk) if user is not None else client_id,
        "client_id": client_id,
        "iat": now,
        "jti": secrets.token_urlsafe(24),
        "scope": " ".join(request.scopes or []),
    }
    details = _authorization_details(attrs, exchange)
    if details:
        claims["authorization_details"] = details
    if exchange.get("act"):
        claims["act"] = exchange["act"]
    return claims


def _resources(request: Any) -> list[str]:
    resource = vars(request).get("resource")
    if isinstance(resource, list):
        return list(resource)  # the token exchange grant has checked them already
    # RFC 8707: the values DOT will store (oauth2_validators._check_and_set_request_resource, after this runs).
    values: list[str] = []
    for key, value in request.decoded_body or []:
        if key == "resource" and value.strip() and value not in values:
            values.append(value)
    refresh_token = vars(request).get("refresh_token_instance")
    if not values and request.grant_type == REFRESH_TOKEN_GRANT_TYPE and refresh_token is not None:
        # A refresh that names no resource keeps the grant's (DOT stores the refresh token's), so `aud` must too.
        return list(refresh_token.resource or [])
    return values


def _authorization_details(attrs: dict[str, Any], exchange: dict[str, Any]) -> list[dict[str, Any]]:
    if "authorization_details" in exchange:
        narrowed: list[dict[str, Any]] = exchange["authorization_details"]
        return narrowed
    approval_request = attrs.get("approval_request")
    if isinstance(approval_request, ApprovalRequest):
        return list(approval_request.authorization_details or [])
    refresh_token = attrs.get("refresh_token_instance")
    if refresh_token is not None and getattr(refresh_token, "access_token_id", None):
        # A refreshed token keeps what was approved (CountersignValidator.save_bearer_token copies the row).
        details = TokenDetails.objects.filter(access_token_id=refresh_token.access_token_id).first()
        if details is not None:
            return list(details.authorization_details)
    return []
