"""Token introspection (RFC 7662) that also says what the token was approved for: DOT's answer plus the
authorization_details the person approved (RFC 9396 §9.2), the audience and the `act` chain of an exchanged token
(RFC 8693 §2.2, §4.1), and the standard claims resource servers look for (`sub`, `iss`, `iat`, `token_type`)."""

from __future__ import annotations

import calendar
import hashlib
import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from oauth2_provider import views as dot_views
from oauth2_provider.models import get_access_token_model
from oauth2_provider.settings import oauth2_settings

from .errors import MethodNotAllowed
from .exchange import exchange_chain_active
from .models import TokenDetails
from .registration import is_registration_token


def introspect(token_value: str, *, issuer: str = "") -> dict[str, Any]:
    """The RFC 7662 answer for an access token issued here; {"active": False} for anything else."""
    checksum = hashlib.sha256(token_value.encode("utf-8")).hexdigest()
    token = (
        get_access_token_model()
        .objects.select_related("user", "application", "countersign")
        .filter(token_checksum=checksum)
        .first()
    )
    if token is None or not token.is_valid() or is_registration_token(token) or not exchange_chain_active(token):
        return {"active": False}
    data: dict[str, Any] = {
        "active": True,
        "scope": token.scope,
        "token_type": "Bearer",
        "exp": calendar.timegm(token.expires.utctimetuple()),
        "iat": calendar.timegm(token.created.utctimetuple()),
    }
    if issuer:
        data["iss"] = issuer
    if token.application:
        data["client_id"] = token.application.client_id
    if token.user:
        data["username"] = token.user.get_username()
        data["sub"] = str(token.user.pk)  # the ID token's sub (DOT's OIDC default)
    audience = list(token.resource or [])
    try:
        details: TokenDetails | None = token.countersign
    except TokenDetails.DoesNotExist:
        details = None
    if details is not None:
        audience += [a for a in details.audience if a not in audience]
        if details.authorization_details:
            data["authorization_details"] = details.authorization_details
        if details.act:
            data["act"] = details.act
    if audience:
        data["aud"] = audience
    return data


class IntrospectTokenView(dot_views.IntrospectTokenView):
    """POST only (RFC 7662 §2.1): DOT also answers GET with the token in the query string, where access logs and
    proxies would keep it."""

    http_method_names = ["post", "options"]

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return MethodNotAllowed().response()

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        token_value = request.POST.get("token")
        if token_value is None:
            return JsonResponse(
                {"error": "invalid_request", "error_description": "Token parameter is missing."}, status=400
            )
        answer = introspect(token_value, issuer=oauth2_settings.oidc_issuer(request))
        response = HttpResponse(json.dumps(answer), content_type="application/json")
        response["Cache-Control"] = "no-store"
        return response
