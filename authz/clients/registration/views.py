"""Dynamic client registration (RFC 7591) and client configuration (RFC 7592) for CIBA agents.

DOT's endpoint registers a bare Application; these views subclass it so that a registration is one confidential
Application plus its CibaClient with the CIBA client metadata (CIBA Core §4): type-checked by the serializers, bounded
by the registration policy, validated by the models' full_clean. DOT's registration access tokens, their lookup and
rotation are reused as they are.

Who may register is settings.REGISTRATION_MODE (env COUNTERSIGN_REGISTRATION_MODE): "initial_access_token" (the
default: a bearer token from `manage.py create_registration_token`, RFC 7591 §3), "open", or "off" (tokens.py).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider.compat import login_not_required
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import get_application_model
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.views.dynamic_client_registration import (
    DynamicClientRegistrationManagementView,
    DynamicClientRegistrationView,
    _error_response,
    _issue_registration_token,
)

from approvals import attempts
from authz.clients.keys import contains_nul, strict_json_loads
from authz.clients.registration.policy import apply_registration_policy
from authz.clients.registration.serializers import (
    InvalidClientMetadata,
    client_full_clean,
    client_metadata_response,
    parse_client_metadata,
)
from authz.clients.registration.tokens import RegistrationMode, initial_access_token_check, registration_mode
from authz.conf import authz_settings
from authz.errors import MethodNotAllowed, OAuthError
from authz.models import SUSPENDED_DESCRIPTION, CibaClient, client_deregistered
from authz.review.actions import AgentSuspended, agent_deregister

SECRET_METHODS = (CibaClient.AuthMethod.CLIENT_SECRET_BASIC, CibaClient.AuthMethod.CLIENT_SECRET_POST)


class RegistrationRateLimited(OAuthError):
    """Too many registrations from one address or from everyone this hour. RFC 7591 section 3.2.2 has no code for
    rate limiting and allows others; invalid_request with 429 and Retry-After says what to do (docs/agents.md)."""

    error = "invalid_request"
    status_code = 429


def registration_rate_check(request: HttpRequest, *, now: datetime | None = None) -> None:
    """Count one registration attempt against its client address and against the server-wide hourly limit
    (settings.REGISTRATIONS_PER_ADDRESS_PER_HOUR, REGISTRATIONS_PER_HOUR) with approvals.attempts' atomic counter;
    raise RegistrationRateLimited beyond either. An address over its own limit is not counted server-wide, so one
    flooding address cannot use up everyone's registrations on its own."""
    now = now or timezone.now()
    hour = int(now.timestamp()) // 3600
    wait = 3600 - int(now.timestamp()) % 3600
    address = attempts.client_address(request)
    limits = (
        (
            f"authz:registration-rate:address:{attempts.address_digest(address)}:{hour}",
            settings.REGISTRATIONS_PER_ADDRESS_PER_HOUR,
            "from this address",
        ),
        (f"authz:registration-rate:all:{hour}", settings.REGISTRATIONS_PER_HOUR, "on this server"),
    )
    for key, limit, where in limits:
        if not limit:
            continue
        # Without Redis registrations go through (approvals.attempts); the limit comes back with Redis.
        count = attempts.counter_add(key, timeout=3600)
        if count is not None and count > limit:
            raise RegistrationRateLimited(
                f"Too many client registrations {where} this hour; try again in {wait} seconds.", retry_after=wait
            )


class RegistrationDisabled(OAuthError):
    error = "not_found"
    status_code = 404
    default_description = "Client registration is not enabled on this server."


def _read_json(request: HttpRequest) -> dict[str, Any]:
    content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise InvalidClientMetadata("The body must be application/json (RFC 7591 section 3.1).")
    limit = authz_settings.MAX_REQUEST_BYTES
    body = request.read(limit + 1)
    if len(body) > limit:
        raise InvalidClientMetadata(f"The client metadata is larger than {limit} bytes.")
    try:
        data = strict_json_loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidClientMetadata("The body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise InvalidClientMetadata("The body must be a JSON object of client metadata.")
    if contains_nul(data):
        raise InvalidClientMetadata("Client metadata must not contain NUL characters.")
    try:
        # A lone surrogate ("\ud800" escaped in JSON) is no Unicode text: PostgreSQL can neither compare nor store it.
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise InvalidClientMetadata("Client metadata must be Unicode text (no lone surrogates).") from exc
    return data


def _json(body: dict[str, Any], status: int = 200) -> JsonResponse:
    response = JsonResponse(body, status=status)
    # RFC 7591 §3.2.1 / RFC 7592 §3: the answer carries credentials.
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


def _new_secret(application: Any) -> str:
    """A fresh secret; DOT's Application.save hashes it (CLIENT_SECRET_HASHER), so it is shown once."""
    secret: str = generate_client_secret()
    application.client_secret = secret
    application.hash_client_secret = True
    return secret


# Views


class _RegistrationEndpoint(View):
    """What both registration views answer before their methods: 404 when registration is off, and every error,
    405 included, as OAuth JSON."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            if registration_mode() == RegistrationMode.OFF:
                raise RegistrationDisabled()
            return super().dispatch(request, *args, **kwargs)
        except OAuthError as exc:
            return exc.response()

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # An OAuth error in JSON, like every other answer of these endpoints, rather than Django's empty 405.
        response = MethodNotAllowed("This method is not allowed here.").response()
        response["Allow"] = ", ".join(m.upper() for m in self.http_method_names if hasattr(self, m))
        return response


@method_decorator(csrf_exempt, name="dispatch")
@method_decorator(login_not_required, name="dispatch")
class RegistrationView(_RegistrationEndpoint, DynamicClientRegistrationView):
    """RFC 7591 §3: POST /oauth/register/ with CIBA client metadata → a confidential Application and its CibaClient."""

    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # Counted before anything else, in every mode: a flood of registrations (or of initial access token guesses)
        # from one address or many ends here.
        registration_rate_check(request)
        if registration_mode() == RegistrationMode.INITIAL_ACCESS_TOKEN:
            initial_access_token_check(request.META.get("HTTP_AUTHORIZATION"))
        metadata = parse_client_metadata(_read_json(request))
        apply_registration_policy(metadata, current=None)
        Application = get_application_model()
        application = Application(
            client_type=Application.CLIENT_CONFIDENTIAL,
            # As manage.py create_agent_client: CIBA and the rest are allowed through the CibaClient (authz.validators).
            authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
            algorithm=Application.RS256_ALGORITHM,
            skip_authorization=False,
            registration_source=Application.RegistrationSource.DCR,
            **metadata.application,
        )
        secret = _new_secret(application)
        ciba = CibaClient(**metadata.ciba)
        client_full_clean(application, ciba, new=True)
        with transaction.atomic():
            application.save()
            ciba.application = application
            ciba.save()
            registration_access_token = _issue_registration_token(application, None)
        body = client_metadata_response(
            application,
            ciba,
            request=request,
            registration_access_token=registration_access_token,
            # private_key_jwt clients never see the (random, unusable) secret DOT's model insists on.
            client_secret=secret if metadata.auth_method in SECRET_METHODS else None,
        )
        return _json(body, status=201)


@method_decorator(csrf_exempt, name="dispatch")
@method_decorator(login_not_required, name="dispatch")
class RegistrationManagementView(_RegistrationEndpoint, DynamicClientRegistrationManagementView):
    """RFC 7592: read, replace or delete a registration with its registration access token."""

    http_method_names = ["get", "put", "delete", "options"]

    def _authenticate_registration_request(self, request: HttpRequest, client_id: str) -> Any:
        auth = super()._authenticate_registration_request(request, client_id)
        if not isinstance(auth, HttpResponse) and client_deregistered(auth.application):
            # RFC 7592 §2.3: a deleted registration is unknown here too, whatever registration access token is shown.
            return _deleted_registration()
        return auth

    def get(self, request: HttpRequest, client_id: str, *args: Any, **kwargs: Any) -> HttpResponse:
        auth = self._authenticate_registration_request(request, client_id)
        if isinstance(auth, HttpResponse):
            return auth
        body = client_metadata_response(
            auth.application,
            _ciba_of(auth.application),
            request=request,
            registration_access_token=auth.presented_token,
        )
        return _json(body)

    def put(self, request: HttpRequest, client_id: str, *args: Any, **kwargs: Any) -> HttpResponse:
        auth = self._authenticate_registration_request(request, client_id)
        if isinstance(auth, HttpResponse):
            return auth
        application = auth.application
        # RFC 7592 §2.2: the request names the client, and may not choose a new secret (ClientUpdateSerializer).
        metadata = parse_client_metadata(_read_json(request), application=application)

        response_token = auth.presented_token
        with transaction.atomic():
            # Read under the client's row lock: an administrator's save lands wholly before this update (and bounds
            # it) or after it (and overrides it), never in between.
            application = type(application).objects.select_for_update().get(pk=application.pk)
            ciba = _ciba_of(application)
            if ciba.deregistered_at is not None:
                # Deleted while this update waited for the lock (authz.review.actions.agent_deregister): it must
                # neither rewrite the record kept for the audit trail nor issue a new registration access token.
                return _deleted_registration()
            new_ciba = ciba._state.adding
            apply_registration_policy(metadata, current=None if new_ciba else ciba, current_name=application.name)
            had_secret_method = not new_ciba and ciba.token_endpoint_auth_method in SECRET_METHODS
            # Full replacement (RFC 7592 §2.2): every client-settable field takes the request's value or its default.
            for name, value in metadata.application.items():
                setattr(application, name, value)
            for name, value in metadata.ciba.items():
                setattr(ciba, name, value)
            secret = None
            if metadata.auth_method in SECRET_METHODS and not had_secret_method:
                secret = _new_secret(application)  # the client never knew its previous (random) secret
            elif metadata.auth_method not in SECRET_METHODS and had_secret_method:
                _new_secret(application)  # the old secret must stop working; the new one is never shown
            client_full_clean(application, ciba, new=new_ciba)
            application.save()
            ciba.application = application
            ciba.save()
            if oauth2_settings.DCR_ROTATE_REGISTRATION_TOKEN_ON_UPDATE:
                response_token = _issue_registration_token(application, application.user)
                auth.registration_token.delete()
        body = client_metadata_response(
            application, ciba, request=request, registration_access_token=response_token, client_secret=secret
        )
        return _json(body)

    def delete(self, request: HttpRequest, client_id: str, *args: Any, **kwargs: Any) -> HttpResponse:
        # RFC 7592 §2.3: the client_id, secret and registration access token are invalidated and its grants revoked;
        # its rows stay for its requests' audit trail (authz.review.actions.agent_deregister).
        auth = self._authenticate_registration_request(request, client_id)
        if isinstance(auth, HttpResponse):
            return auth
        try:
            agent_deregister(application=auth.application)
        except AgentSuspended:
            # Issue 18: a suspended agent may not delete its registration until resumed (checked under the client's
            # row lock, so a suspension committing meanwhile counts); RFC 7592 §2.3 answers a client that may not
            # delete itself with 403.
            return _json({"error": "access_denied", "error_description": SUSPENDED_DESCRIPTION}, status=403)
        return HttpResponse(status=204)


def _deleted_registration() -> HttpResponse:
    # The answer for an unknown registration access token: nothing says the client_id ever existed.
    response: HttpResponse = _error_response("invalid_token", "Invalid registration access token", status=401)
    return response


def _ciba_of(application: Any) -> CibaClient:
    try:
        ciba: CibaClient = application.ciba
    except CibaClient.DoesNotExist:
        return CibaClient(application=application)
    return ciba
