from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import BadRequest, RequestDataTooBig, TooManyFieldsSent
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters
from oauth2_provider import views as dot_views
from oauth2_provider.models import get_application_model
from oauth2_provider.settings import oauth2_settings

from approvals import links, prompts
from approvals import services as approval_services
from approvals.models import ApprovalRequest, effective_status
from authz.ciba import answers, poll
from authz.ciba.request import request_lifetime, validate_backchannel_request
from authz.clients import keys
from authz.clients.auth import (
    AUTHENTICATED_CLIENT_META,
    assertion_audience,
    authenticate_client,
    check_presented_client_id,
    credential_params,
    extract_credentials,
    load_ciba_client,
    verify_client,
)
from authz.clients.request_objects import authentication_request_params
from authz.conf import authz_settings
from authz.constants import CIBA_GRANT_TYPE, CLIENT_CREDENTIALS_GRANT_TYPE
from authz.errors import (
    BackchannelAccessDenied,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    MethodNotAllowed,
    OAuthError,
    PayloadTooLarge,
    SlowDown,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from authz.models import (
    SUSPENDED_DESCRIPTION,
    CibaClient,
    RequestCallback,
    ciba_client_of,
    client_allows_grant,
    client_suspended,
)
from authz.tokens import details
from authz.tokens.resources import resource_indicator_error

logger = logging.getLogger(__name__)

Status = ApprovalRequest.Status


def read_form(request: HttpRequest) -> dict[str, str]:
    """The form-encoded body as a flat dict, refusing what a careful OAuth server refuses (RFC 6749 §3.2, §3.1:
    parameters MUST NOT be repeated)."""
    content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise InvalidRequest("The body must be application/x-www-form-urlencoded.")
    limit = authz_settings.MAX_REQUEST_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError as exc:
        raise InvalidRequest("Invalid Content-Length.") from exc
    if declared > limit:
        raise PayloadTooLarge()
    body = request.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge()
    try:
        text = body.decode("utf-8")
        form = QueryDict(text, encoding="utf-8")
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest("The body is not valid UTF-8 form data.") from exc
    params: dict[str, str] = {}
    for key, values in form.lists():
        if len(values) > 1:
            raise InvalidRequest(f"The parameter {key[:40]} is repeated.")
        if "\x00" in key or "\x00" in values[0]:
            raise InvalidRequest("Parameters must not contain NUL characters.")
        params[key] = values[0]
    if "?" in request.get_full_path() and request.GET:
        raise InvalidRequest("Send parameters in the body, not the query string.")
    return params


def issuer_for(request: HttpRequest) -> str:
    issuer: str = oauth2_settings.oidc_issuer(request)
    return issuer


def assertion_audience_for(request: HttpRequest) -> list[str]:
    # CIBA Core §7.1: the issuer, token endpoint and backchannel endpoint URLs, at either endpoint.
    return assertion_audience(issuer_for(request).rstrip("/"))


@method_decorator(csrf_exempt, name="dispatch")
@method_decorator(sensitive_post_parameters("client_secret", "user_code", "id_token_hint"), name="dispatch")
class BackchannelAuthenticationView(View):
    """CIBA Core §7: the agent asks for a person's approval and gets an auth_req_id to poll with."""

    http_method_names = ["post", "get", "put", "patch", "delete", "head", "options"]

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            if request.method != "POST":
                raise MethodNotAllowed()
            return self.handle(request)
        except OAuthError as exc:
            return exc.response()

    def handle(self, request: HttpRequest) -> HttpResponse:
        params = read_form(request)
        client = authenticate_client(
            extract_credentials(request.META.get("HTTP_AUTHORIZATION"), params),
            audience=assertion_audience_for(request),
        )
        ciba = ciba_client_of(client)
        if ciba is not None and ciba.suspended_at is not None:
            raise UnauthorizedClient(SUSPENDED_DESCRIPTION)
        if ciba is None or not client_allows_grant(client, CIBA_GRANT_TYPE):
            raise UnauthorizedClient()
        # CIBA Core §7.1.1: a signed request's parameters are its JWT's claims; FAPI-CIBA's request rules apply here.
        params = authentication_request_params(params, ciba=ciba, issuer=issuer_for(request))
        validated = validate_backchannel_request(params, client=client, ciba=ciba, issuer=issuer_for(request))
        wait = prompts.prompt_rate_exceeded(client_id=client.client_id, user=validated.user)
        if wait:
            # CIBA Core §13 gives the OP one way to refuse a valid request, access_denied with 403; clients already
            # handle it, which a 429 outside the spec's list would not guarantee. Retry-After says when to return.
            raise BackchannelAccessDenied(
                f"Too many requests for this user; try again in {wait} seconds.", retry_after=wait
            )
        try:
            with transaction.atomic():
                approval_request = approval_services.approval_request_create(
                    client=client,
                    user=validated.user,
                    scope=validated.scope,
                    hint_type=validated.hint_type,
                    binding_message=validated.binding_message,
                    acr_values=validated.acr_values,
                    expires_in=request_lifetime(validated.requested_expiry),
                    interval=authz_settings.POLL_INTERVAL_SECONDS,
                    requested_expiry=validated.requested_expiry,
                    authorization_details=validated.authorization_details,
                )
                if validated.notification_mode:
                    # The callback is bound to the request in its transaction (authz.models.RequestCallback).
                    RequestCallback.objects.create(
                        request=approval_request,
                        mode=validated.notification_mode,
                        endpoint=validated.notification_endpoint,
                        token=validated.client_notification_token,
                    )
                # A suspension that began after the check above (issue 18) would not cancel this request: look again.
                if _suspended_now(ciba):
                    raise UnauthorizedClient(SUSPENDED_DESCRIPTION)
        except approval_services.TooManyPending as exc:
            # CIBA Core 13: access_denied is the OP's refusal of a valid request; no Retry-After, since room frees
            # only when the person decides or requests expire.
            raise BackchannelAccessDenied(
                f"This user already has {exc.limit} requests waiting; wait until they are decided or expire."
            ) from exc
        expires_in = int((approval_request.expires_at - approval_request.created_at).total_seconds())
        response = JsonResponse(
            {
                "auth_req_id": approval_request.auth_req_id,
                "expires_in": expires_in,
                "interval": approval_request.interval,
            }
        )
        response["Cache-Control"] = "no-store"
        response["Pragma"] = "no-cache"
        return response


def _suspended_now(ciba: CibaClient) -> bool:
    """Whether the agent is suspended, read with its CibaClient row locked FOR KEY SHARE until the request commits.
    authz.review.actions.agent_suspend holds that row FOR UPDATE: a suspension in flight is waited for and seen here,
    and one that starts later waits for this transaction, then finds the new request pending and cancels it. KEY
    SHARE, the weakest row lock (the one a foreign key check takes), waits for nothing else: concurrent requests of
    one agent do not queue, nor do edits of its settings. (SQLite writes one transaction at a time.)"""
    if not connection.features.has_select_for_update:
        return CibaClient.objects.filter(pk=ciba.pk, suspended_at__isnull=False).exists()
    opts, quote = CibaClient._meta, connection.ops.quote_name
    column = quote(opts.get_field("suspended_at").column)
    # Only quoted identifiers from the model's metadata are interpolated; the value is a query parameter.
    sql = f"SELECT {column} FROM {quote(opts.db_table)} WHERE {quote(opts.pk.column)} = %s FOR KEY SHARE"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, [ciba.pk])
        row = cursor.fetchone()
    return row is not None and row[0] is not None


class TokenView(dot_views.TokenView):
    """DOT's token endpoint, with the CIBA grant answered here for every state but APPROVED (which oauthlib's
    CibaGrant handles): a pending poll is usually one Redis round trip, otherwise one indexed read and one."""

    # DOT applies csrf_exempt and login_not_required to dispatch with method_decorator, which wraps the bound method
    # anew on every request: the same two, applied once (as_view copies their marks onto the view).
    dispatch = login_not_required(csrf_exempt(View.dispatch))

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            grant_type = request.POST.get("grant_type")
        except RequestDataTooBig:
            return PayloadTooLarge().response()
        except (TooManyFieldsSent, BadRequest):
            return InvalidRequest("The request body could not be parsed.").response()
        try:
            if grant_type not in oauth2_settings.OAUTH2_GRANT_TYPES_SUPPORTED:
                # RFC 6749 section 5.2. DOT and oauthlib also carry grants this server does not offer (DOT's device
                # flow, which reads device_code before any check, and password): the metadata's list is the one
                # answer to which grants exist here, for unknown and merely unoffered grant types alike.
                raise UnsupportedGrantType("Use a grant_type listed in grant_types_supported in the server metadata.")
            if grant_type == CIBA_GRANT_TYPE:
                return self.ciba_token_response(request)
            self.authenticate_presented_client(request, grant_type)
        except OAuthError as exc:
            return exc.response()
        response: HttpResponse = super().post(request, *args, **kwargs)
        return response

    def authenticate_presented_client(self, request: HttpRequest, grant_type: str | None) -> None:
        """Authenticate a client that presented credentials, with errors that say what is wrong, and hand it to the
        oauthlib grant, which must not verify a client_assertion again (its jti is accepted once). Requests without
        credentials are DOT's to judge."""
        credentials = extract_credentials(request.META.get("HTTP_AUTHORIZATION"), credential_params(request.POST))
        if credentials is None:
            return
        application = authenticate_client(credentials, audience=assertion_audience_for(request))
        if client_suspended(application):
            # Every grant, refresh and exchange included (issue 18); the validator's policy refuses them too.
            raise UnauthorizedClient(SUSPENDED_DESCRIPTION)
        _check_resource_indicators(request.POST.getlist("resource"))
        if grant_type == CLIENT_CREDENTIALS_GRANT_TYPE:
            _check_client_credentials(application, request.POST.get("scope"))
        request.META[AUTHENTICATED_CLIENT_META] = application

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # An OAuth error in JSON, like every other answer of this endpoint, rather than Django's empty 405.
        response = MethodNotAllowed().response()
        response["Allow"] = ", ".join(self._allowed_methods())
        return response

    def ciba_token_response(self, request: HttpRequest) -> HttpResponse:
        params: dict[str, str] = {}
        for key, values in request.POST.lists():
            if len(values) > 1:
                raise InvalidRequest(f"The parameter {key[:40]} is repeated.")
            if "\x00" in key or "\x00" in values[0]:
                # PostgreSQL cannot compare text with NUL: auth_req_id would otherwise fail its lookup with a 500.
                raise InvalidRequest("Parameters must not contain NUL characters.")
            params[key] = values[0]
        credentials = check_presented_client_id(extract_credentials(request.META.get("HTTP_AUTHORIZATION"), params))
        auth_req_id = params.get("auth_req_id", "")[:128]
        now = timezone.now()
        if auth_req_id:
            # Most polls are for pending requests: Redis alone can answer them (authz.ciba.poll), except a
            # client_assertion's, which is verified on every poll.
            mirrored = poll.pending_poll_from_mirror(credentials=credentials, auth_req_id=auth_req_id, now=now)
            if mirrored is not None:
                return _pending_answer(*mirrored)
        record = poll.load_poll_record(client_id=credentials.client_id, auth_req_id=auth_req_id)
        verify_client(
            credentials,
            client_type=record.client_type,
            client_secret=record.client_secret,
            registered_method=record.registered_method,
            load_ciba=lambda: load_ciba_client(credentials.client_id),
            # Polls are the hot path: build the accepted audiences only for the clients that need them.
            audience=assertion_audience_for(request) if credentials.is_assertion else None,
        )
        if record.suspended:
            raise UnauthorizedClient(SUSPENDED_DESCRIPTION)
        if record.registered_method is None or not record.ciba_enabled:
            raise UnauthorizedClient()
        if not auth_req_id:
            raise InvalidRequest("auth_req_id is required.")
        if record.request_id is None or record.expires_at is None:
            # Unknown, or another client's: the same answer, so ids cannot be probed (CIBA Core §11).
            raise InvalidGrant()
        status = effective_status(record.status, record.expires_at, now)
        if status == Status.PENDING:
            pending_entry = poll.pending_entry(
                client_id=credentials.client_id, expires_at=record.expires_at, interval=record.interval, now=now
            )
            return _pending_answer(
                *poll.poll_permitted(
                    auth_req_id=auth_req_id,
                    interval=record.interval,
                    lifetime=int((record.expires_at - now).total_seconds()),
                    credentials=credentials,
                    pending_entry=pending_entry,
                )
            )
        answer = answers.answer_for(status)
        if answer is not None:
            raise answers.AnswerError(answer)
        if RequestCallback.objects.filter(request_id=record.request_id, mode=RequestCallback.Mode.PUSH).exists():
            # CIBA Core §10.3: a push request's tokens go to the notification endpoint bound to it, never here.
            raise UnauthorizedClient("This client receives its tokens at its notification endpoint (push mode).")
        if "resource" in params:
            _check_resource_indicators([params["resource"]])
        # APPROVED: oauthlib's CibaGrant consumes the request and issues the tokens, exactly once. The client is
        # authenticated already: the grant takes it as it is (CountersignValidator.authenticate_client).
        request.META[AUTHENTICATED_CLIENT_META] = get_application_model().objects.get(client_id=credentials.client_id)
        _url, headers, body, status_code = self.create_token_response(request)
        response = HttpResponse(content=body, status=status_code, content_type="application/json")
        for key, value in headers.items():
            response[key] = value
        return response


def _check_client_credentials(application: Any, scope: str | None) -> None:
    """An agent acting on its own behalf (client_credentials): only if allowed, only within its allowed scopes."""
    ciba = ciba_client_of(application)
    if ciba is None:
        return  # not an agent: DOT's rules for its own clients
    if not client_allows_grant(application, CLIENT_CREDENTIALS_GRANT_TYPE):
        raise UnauthorizedClient(
            "This client may not use client_credentials; an administrator can allow it to act on its own behalf."
        )
    scopes = (scope or "").split() or list(oauth2_settings.DEFAULT_SCOPES)
    if not ciba.allows_scopes(scopes):
        raise InvalidScope(f"This client may ask only for these scopes: {ciba.allowed_scopes}.")


def _check_resource_indicators(values: list[str]) -> None:
    """RFC 8707 section 2: every grant's resource values are URIs this server binds tokens to, checked before DOT or
    oauthlib parse them (a value such as http://[ made them fail with a 500)."""
    for value in values:
        problem = resource_indicator_error(value)
        if problem:
            raise InvalidTarget(problem)


# The server's most frequent answer, encoded once (the same bytes AnswerError(answers.PENDING).response() writes).
_PENDING_BODY = json.dumps({"error": answers.PENDING.error, "error_description": answers.PENDING.description}).encode()


@lru_cache(maxsize=128)
def _slow_down_body(wait: int) -> bytes:
    """What SlowDown(...).response() writes for this wait, encoded once per process and wait (a handful of values:
    the interval grows by 5 s per early poll, and is capped at the request's lifetime)."""
    description = f"Polled too often; wait at least {wait} seconds before polling again."
    return json.dumps({"error": SlowDown.error, "error_description": description}).encode()


def _pending_answer(permitted: bool, wait: int) -> HttpResponse:
    if not permitted:
        # authz.ciba.poll caps the wait at the request's remaining lifetime, however far the interval has grown.
        response = HttpResponse(_slow_down_body(wait), status=SlowDown.status_code, content_type="application/json")
    else:
        response = HttpResponse(_PENDING_BODY, status=answers.AnswerError.status_code, content_type="application/json")
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


class DiscoveryMixin:
    # Provided by the DOT metadata views this is mixed into.
    request: HttpRequest
    _get_endpoint_url: Callable[..., str]

    def ciba_metadata(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        # OpenID Connect Discovery §3 / RFC 8414 §2: DOT adds this only to its RFC 8414 document.
        if oauth2_settings.DCR_ENABLED:
            extra["registration_endpoint"] = self._get_endpoint_url(self.request, "dcr-register")
        return {
            **extra,
            "backchannel_authentication_endpoint": self._get_endpoint_url(self.request, "bc-authorize", required=True),
            "backchannel_token_delivery_modes_supported": ["poll", "ping", "push"],
            "backchannel_user_code_parameter_supported": bool(authz_settings.USER_CODE_SUPPORTED),
            # The levels an approver can reach before approving (approvals.links); agents ask with acr_values.
            "acr_values_supported": list(links.ACR_VALUES_SUPPORTED),
            # private_key_jwt (RFC 7523; the backchannel endpoint takes the same methods as the token endpoint).
            **{
                f"{endpoint}_endpoint_auth_signing_alg_values_supported": list(keys.SUPPORTED_ALGS)
                for endpoint in ("token", "introspection", "revocation")
            },
            # CIBA Core §4: the algorithms a signed authentication request may use (never none).
            "backchannel_authentication_request_signing_alg_values_supported": list(CibaClient.SigningAlg.values),
            # RFC 9396 §10: the types an agent may put in authorization_details.
            "authorization_details_types_supported": details.enabled_type_names(),
        }


class ConnectDiscoveryInfoView(DiscoveryMixin, dot_views.ConnectDiscoveryInfoView):
    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().get(request, *args, **kwargs)
        return _extend(response, self.ciba_metadata())


class OAuthServerMetadataView(DiscoveryMixin, dot_views.OAuthServerMetadataView):
    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().get(request, *args, **kwargs)
        return _extend(response, self.ciba_metadata())


def _extend(response: JsonResponse, extra: dict[str, Any]) -> JsonResponse:
    data = json.loads(response.content)
    data.update(extra)
    data["grant_types_supported"] = list(oauth2_settings.OAUTH2_GRANT_TYPES_SUPPORTED)
    extended = JsonResponse(data)
    for header in ("Access-Control-Allow-Origin",):
        if header in response:
            extended[header] = response[header]
    return extended


class UserInfoView(dot_views.UserInfoView):
    """DOT's userinfo (OIDC Core 5.3), whose error answers are JSON without saying so; RFC 6750 section 3 errors also
    travel in WWW-Authenticate, which oauthlib sets."""

    def _create_userinfo_response(self, request: HttpRequest) -> HttpResponse:
        response: HttpResponse = super()._create_userinfo_response(request)
        if response.status_code != 200 and response.content.startswith(b"{"):
            response["Content-Type"] = "application/json"
            response["Cache-Control"] = "no-store"
        return response
