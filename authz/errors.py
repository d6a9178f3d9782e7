"""Protocol errors as classes; one renderer turns them into the spec's JSON (RFC 6749 §5.2, CIBA Core §13)."""

from __future__ import annotations

from typing import ClassVar

from django.http import JsonResponse


class OAuthError(Exception):
    error: ClassVar[str] = "invalid_request"
    status_code: ClassVar[int] = 400
    default_description: ClassVar[str] = ""

    def __init__(self, description: str | None = None, *, retry_after: int | None = None) -> None:
        # Descriptions are shown to developers: single line, no CR/LF/TAB (the conformance suite warns on them).
        self.description = " ".join((description or self.default_description).split())
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


class ExpiredLoginHintToken(OAuthError):
    error = "expired_login_hint_token"


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


class AuthorizationPending(OAuthError):
    error = "authorization_pending"
    default_description = "The user has not yet decided."


class SlowDown(OAuthError):
    error = "slow_down"


class ExpiredToken(OAuthError):
    error = "expired_token"
    default_description = "The request expired before tokens were issued."


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
