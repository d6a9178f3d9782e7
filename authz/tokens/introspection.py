"""Token introspection (RFC 7662) that also says what the token was approved for: DOT's answer plus the
authorization_details the person approved (RFC 9396 §9.2), the audience and the `act` chain of an exchanged token
(RFC 8693 §2.2, §4.1), and the standard claims resource servers look for (`sub`, `iss`, `iat`, `token_type`).

RFC 7662 section 4: the answer goes only to those the token concerns (`may_introspect`); anyone else hears
{"active": false}, exactly as for an unknown token, so a client learns nothing about other clients' tokens."""

from __future__ import annotations

import calendar
import hashlib
import json
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider import views as dot_views
from oauth2_provider.compat import login_not_required
from oauth2_provider.models import get_access_token_model
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.www_authenticate import build_bearer_challenge, challenge_status

from authz.clients.auth import (
    assertion_audience,
    authenticate_client,
    credential_params,
    extract_credentials,
)
from authz.errors import InvalidClient, MethodNotAllowed, OAuthError
from authz.models import TokenDetails, ciba_client_of
from authz.tokens.policy import details_of, token_active


def may_introspect(token: Any, details: TokenDetails | None, caller: Any) -> bool:
    """Whether `caller` (an Application) may learn that `token` is active (RFC 7662 section 4):

    - the client the token was issued to;
    - a client named in the token's audience (RFC 8693: the agent or resource server it was exchanged for);
    - a registered resource server (CibaClient.resource_server, `create_agent_client --no-ciba`) when one of its
      registered resources is in the token's resource binding (RFC 8707), compared exactly, or when the token is
      bound to no resource and no audience (a bearer token its agent may present to any resource server).

    An agent an administrator switched off, or a client that registered itself, is none of these for other clients'
    tokens; a suspended client (issue 18) learns nothing, of any token."""
    caller_ciba = ciba_client_of(caller)
    if caller_ciba is not None and caller_ciba.suspended_at is not None:
        return False
    if token.application_id == caller.pk:
        return True
    audience = list(details.audience) if details else []
    if caller.client_id in audience:
        return True
    if caller_ciba is None or not caller_ciba.resource_server:
        return False
    resources = list(token.resource or [])
    if not resources and not audience:
        return True
    return any(resource in resources for resource in caller_ciba.resources or [])


def introspect(token_value: str, *, caller: Any, issuer: str = "") -> dict[str, Any]:
    """The RFC 7662 answer for an access token issued here that `caller` may see; {"active": False} for anything
    else."""
    checksum = hashlib.sha256(token_value.encode("utf-8")).hexdigest()
    token = (
        get_access_token_model()
        .objects.select_related("user", "application__ciba", "token_details")
        .filter(token_checksum=checksum)
        .first()
    )
    if token is None or not token_active(token) or not may_introspect(token, details_of(token), caller):
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
        details: TokenDetails | None = token.token_details
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


@method_decorator(csrf_exempt, name="dispatch")
@method_decorator(login_not_required, name="dispatch")
class IntrospectTokenView(dot_views.IntrospectTokenView):
    """POST only (RFC 7662 §2.1): DOT also answers GET with the token in the query string, where access logs and
    proxies would keep it. The caller authenticates as a client (RFC 7662 section 2.1), or presents a bearer token
    with the `introspection` scope, which stands for the client it was issued to: either way the answer depends on
    who asks (`may_introspect`), which DOT's view cannot tell, so the authentication is ours."""

    http_method_names = ["post", "options"]

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method != "POST":
            return View.dispatch(self, request, *args, **kwargs)
        try:
            caller, oauthlib_request = self.authenticated_caller(request)
        except OAuthError as exc:
            return exc.response()
        if caller is None:
            return self.unauthenticated_response(request, oauthlib_request)
        self.caller = caller
        return View.dispatch(self, request, *args, **kwargs)

    def authenticated_caller(self, request: HttpRequest) -> tuple[Any | None, Any]:
        """The calling client (None for a bearer token that does not stand) and the oauthlib request of a bearer
        check; InvalidClient when client credentials fail or none were presented (RFC 7662 section 2.3)."""
        credentials = extract_credentials(request.META.get("HTTP_AUTHORIZATION"), credential_params(request.POST))
        if credentials is not None:
            # RFC 7523 section 3: an assertion may also be addressed to this endpoint.
            audience = assertion_audience(oauth2_settings.oidc_issuer(request).rstrip("/"), request.path)
            return authenticate_client(credentials, audience=audience), None
        if request.headers.get("Authorization", "").lower().startswith("bearer "):
            valid, oauthlib_request = self.verify_request(request)  # the `introspection` scope (required_scopes)
            application = oauthlib_request.access_token.application if valid else None
            return application, oauthlib_request
        raise InvalidClient("Client authentication is required.")

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return MethodNotAllowed().response()

    def unauthenticated_response(self, request: HttpRequest, oauthlib_request: Any = None) -> HttpResponse:
        """RFC 7662 section 2.3 instead of DOT's empty 403: a caller that presented a bearer token gets RFC 6750
        section 3's answer, every other caller RFC 6749 section 5.2's 401 invalid_client."""
        if request.headers.get("Authorization", "").lower().startswith("bearer "):
            oauth2_error = getattr(oauthlib_request, "oauth2_error", None)
            response = HttpResponse(status=challenge_status(oauth2_error))
            response["WWW-Authenticate"] = build_bearer_challenge(request, oauth2_error=oauth2_error)
            return response
        return InvalidClient().response()

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        token_value = request.POST.get("token")
        if token_value is None:
            return JsonResponse(
                {"error": "invalid_request", "error_description": "Token parameter is missing."}, status=400
            )
        answer = introspect(token_value, caller=self.caller, issuer=oauth2_settings.oidc_issuer(request))
        response = HttpResponse(json.dumps(answer), content_type="application/json")
        response["Cache-Control"] = "no-store"
        return response
