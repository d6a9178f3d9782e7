"""Protocol errors as classes; one renderer turns them into the spec's JSON (RFC 6749 §5.2, CIBA Core §13)."""

from __future__ import annotations

import json
import re
from typing import ClassVar

from django.http import JsonResponse

# RFC 6749 §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E, printable ASCII without '"' and '\'.
DESCRIPTION_CHARS = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
_OUTSIDE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
# Readable stand-ins for what quoting and typography put into messages (repr, jsonschema, Django's curly quotes).
_STAND_INS = str.maketrans(
    {
        '"': "'",
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": "'",
        "\u201d": "'",
        "\u2013": "-",
        "\u2014": "-",
        "\u2026": "...",
    }
)


def wire_text(text: str) -> str:
    """`text` as an error_description may carry it (RFC 6749 §5.2), whatever a client put into it: one line
    (whitespace collapsed: the conformance suite warns on CR, LF and TAB), double and typographic quotes as ', dashes
    and ellipses in ASCII, and any other character outside the allowed set (backslash, controls, non-ASCII) as ?."""
    return _OUTSIDE.sub("?", " ".join(text.split()).translate(_STAND_INS))


def wire_safe_error_body(body: str) -> str:
    """An error body rendered by oauthlib, with its error_description made wire-safe (see wire_text). Some of our
    grants' descriptions quote request parameters, and oauthlib renders them as they are."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return body
    description = data.get("error_description") if isinstance(data, dict) else None
    if not isinstance(description, str) or DESCRIPTION_CHARS.fullmatch(description):
        return body
    return json.dumps({**data, "error_description": wire_text(description)})


class OAuthError(Exception):
    error: ClassVar[str] = "invalid_request"
    status_code: ClassVar[int] = 400
    default_description: ClassVar[str] = ""

    def __init__(self, description: str | None = None, *, retry_after: int | None = None) -> None:
        # The one guard every description passes, static or quoting what the client sent (RFC 6749 §5.2).
        self.description = wire_text(description or self.default_description)
        self.retry_after = retry_after
        super().__init__(self.description)

    def response(self) -> JsonResponse:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        response = JsonResponse(body, status=self.status_code)
        response["Cache-Control"] = "no-store"
        response["Pragma"] = "no-cache"
        if self.status_code == 401:
            # RFC 6749 §5.2: a 401 names the authentication scheme the client may use.
            response["WWW-Authenticate"] = 'Basic realm="countersign", error="invalid_client"'
        if self.retry_after is not None:
            response["Retry-After"] = str(self.retry_after)
        return response


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidClient(OAuthError):
    error = "invalid_client"
    status_code = 401
    default_description = "Client authentication failed."


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"
    default_description = "This client is not allowed to use CIBA."


class InvalidScope(OAuthError):
    error = "invalid_scope"


class InvalidGrant(OAuthError):
    error = "invalid_grant"
    default_description = "The auth_req_id is invalid, was already used, or belongs to another client."


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class UnknownUserId(OAuthError):
    error = "unknown_user_id"
    default_description = "The hint does not identify a known user."


class MissingUserCode(OAuthError):
    error = "missing_user_code"
    default_description = "This client must send the user's user_code."


class InvalidUserCode(OAuthError):
    error = "invalid_user_code"
    default_description = "The user_code is not valid."


class InvalidBindingMessage(OAuthError):
    error = "invalid_binding_message"


class AccessDenied(OAuthError):
    error = "access_denied"


class BackchannelAccessDenied(AccessDenied):
    # CIBA Core §13: access_denied at the backchannel endpoint is a 403.
    status_code = 403


class SlowDown(OAuthError):
    error = "slow_down"


class MethodNotAllowed(OAuthError):
    error = "invalid_request"
    status_code = 405
    default_description = "Use POST."

    def response(self) -> JsonResponse:
        response = super().response()
        response["Allow"] = "POST"
        return response


class PayloadTooLarge(OAuthError):
    error = "invalid_request"
    status_code = 413
    default_description = "The request body is too large."


class InvalidAuthorizationDetails(OAuthError):
    # RFC 9396 §5: an unknown type, an object its type's schema rejects, or authorization_details that are not JSON.
    error = "invalid_authorization_details"


class InvalidTarget(OAuthError):
    # RFC 8707 section 2: a resource indicator the server will not issue a token for.
    error = "invalid_target"
