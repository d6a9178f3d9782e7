"""Signed authentication requests (CIBA Core §7.1.1) and the request-time rules of the FAPI-CIBA profile.

A client that registered `backchannel_authentication_request_signing_alg` sends every backchannel authentication
request as one `request` parameter: a JWT signed with that algorithm whose claims are the request's parameters.
`authentication_request_params` turns the form into the parameters `validate_backchannel_request` checks, the same
shape for signed and unsigned requests.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import jwt

from authz.clients.keys import CLOCK_LEEWAY_SECONDS, JoseError, consume_jti, is_numeric_date, verify_client_jwt
from authz.errors import InvalidRequest
from authz.models import CibaClient

# CIBA Core §7.1.1 (and RFC 7521 §4.2 for the assertion pair): only client authentication stays outside the JWT.
OUTSIDE_PARAMS = frozenset({"client_id", "client_secret", "client_assertion", "client_assertion_type", "request"})
# The JWT's own claims (CIBA Core §7.1.1); they say nothing about the authentication request itself.
JWT_CLAIMS = ("iss", "aud", "exp", "iat", "nbf", "jti")
# FAPI-CIBA §5.2.2 (with FAPI 1.0 Advanced §5.2.2 item 13): nbf to exp spans at most 60 minutes, and nbf is no more
# than 60 minutes old. Applied to every client: a signed request has no reason to live longer.
MAX_LIFETIME_SECONDS = 60 * 60
# FAPI 1.0 Advanced §8.6: PS256 and ES256 only.
FAPI_ALGS = (CibaClient.SigningAlg.PS256.value, CibaClient.SigningAlg.ES256.value)
WHAT = "request object"


def authentication_request_params(
    params: Mapping[str, str], *, ciba: CibaClient, issuer: str, now: float | None = None
) -> dict[str, Any]:
    """The authentication request's parameters: the claims of a verified `request` JWT, or the form itself for a
    client that never signs. Raises InvalidRequest for anything CIBA Core §7.1.1 or FAPI-CIBA forbids."""
    registered_alg = ciba.backchannel_authentication_request_signing_alg
    if "request" in params:
        result = _signed_params(params, ciba=ciba, issuer=issuer, now=time.time() if now is None else now)
    elif registered_alg or ciba.fapi_ciba:
        # CIBA Core §4: a registered signing alg means this client's requests are always signed; FAPI-CIBA ID1 too.
        raise InvalidRequest(
            "This client must send a signed request: put the authentication request parameters in a request object "
            "in the request parameter (CIBA Core 7.1.1)."
        )
    else:
        result = dict(params)
    if ciba.fapi_ciba and not result.get("binding_message"):
        # FAPI-CIBA §5.2.2: the OP requires a binding_message. A missing required parameter is invalid_request (CIBA
        # Core §13); invalid_binding_message is for a message that is present but unacceptable.
        raise InvalidRequest("binding_message is required for FAPI-CIBA clients.")
    return result


def _signed_params(params: Mapping[str, str], *, ciba: CibaClient, issuer: str, now: float) -> dict[str, Any]:
    outside = sorted(key for key in params if key not in OUTSIDE_PARAMS)
    if outside:
        names = ", ".join(name[:40] for name in outside[:5])
        raise InvalidRequest(
            f"With a signed request, authentication request parameters belong inside the request object only; "
            f"found outside it: {names} (CIBA Core 7.1.1)."
        )
    token = params["request"]
    registered_alg = ciba.backchannel_authentication_request_signing_alg
    if not registered_alg:
        # CIBA Core §4: without a registered alg the client does not send signed requests, and we have no algorithm
        # to hold it to.
        raise InvalidRequest(
            "This client has not registered backchannel_authentication_request_signing_alg, so it cannot send a "
            "signed request."
        )
    if not token:
        raise InvalidRequest("The request parameter is empty.")
    if ciba.fapi_ciba:
        alg = _header_alg(token)
        if alg not in FAPI_ALGS:
            raise InvalidRequest(f"FAPI-CIBA request objects are signed with PS256 or ES256, not {str(alg)[:20]}.")
    try:
        claims = verify_client_jwt(
            token,
            ciba=ciba,
            algorithms=[registered_alg],
            audience=[issuer],
            require=JWT_CLAIMS,
            what=WHAT,
        )
        _check_lifetime(claims, now=now)
        consume_jti("request", client_id=ciba.application.client_id, jti=claims["jti"], expires_at=claims["exp"])
    except JoseError as exc:
        raise InvalidRequest(str(exc)) from exc
    return _claims_to_params(claims, client_id=ciba.application.client_id)


def _header_alg(token: str) -> Any:
    try:
        return jwt.get_unverified_header(token).get("alg")
    except jwt.PyJWTError as exc:
        raise InvalidRequest(f"The {WHAT} is not a signed JWT.") from exc


def _check_lifetime(claims: dict[str, Any], *, now: float) -> None:
    for name in ("exp", "iat", "nbf"):
        value = claims[name]
        if not is_numeric_date(value):
            raise JoseError(f"The {WHAT}'s {name} must be a number (seconds since the epoch).")
    exp, nbf = claims["exp"], claims["nbf"]
    if nbf < now - MAX_LIFETIME_SECONDS - CLOCK_LEEWAY_SECONDS:
        raise JoseError(f"The {WHAT}'s nbf is more than 60 minutes in the past (FAPI-CIBA 5.2.2).")
    if exp - nbf > MAX_LIFETIME_SECONDS:
        raise JoseError(f"The {WHAT}'s exp may be at most 60 minutes after its nbf (FAPI-CIBA 5.2.2).")


def _claims_to_params(claims: dict[str, Any], *, client_id: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in claims.items():
        if name in JWT_CLAIMS:
            continue
        if "\x00" in name:
            raise InvalidRequest("Claim names must not contain NUL characters.")
        if name == "request":
            raise InvalidRequest(f"The {WHAT} must not contain another request.")
        if name == "client_id":
            # RFC 9101 §4 lets a request object repeat client_id; if it does, it must be this client.
            if value != client_id:
                raise InvalidRequest(f"The {WHAT}'s client_id is not the authenticated client's.")
            continue
        if name == "requested_expiry" and not isinstance(value, (str, bool)):
            # CIBA Core §7.1.1: a JSON number or a string, and the OP accepts both.
            if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
                result[name] = str(int(value))
                continue
            raise InvalidRequest("requested_expiry must be a positive integer number of seconds.")
        if name == "authorization_details" and isinstance(value, list):
            # RFC 9396 §2: a JSON array, passed through for validate_backchannel_request to check.
            result[name] = value
            continue
        if not isinstance(value, str):
            raise InvalidRequest(f"The {WHAT}'s claim {name[:40]} must be a string.")
        if "\x00" in value:
            raise InvalidRequest("Parameters must not contain NUL characters.")
        result[name] = value
    return result
