"""Dynamic client registration (RFC 7591) and client configuration (RFC 7592) for CIBA agents.

DOT's endpoint registers a bare Application; these views subclass it so that a registration is one confidential
Application plus its CibaClient with the CIBA client metadata (CIBA Core §4), validated by the models' full_clean.
DOT's registration access tokens, their lookup and rotation are reused as they are.

Who may register is settings.REGISTRATION_MODE (env COUNTERSIGN_REGISTRATION_MODE): "initial_access_token" (the
default: a bearer token from `manage.py create_registration_token`, RFC 7591 §3), "open", or "off".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider.compat import login_not_required
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import get_access_token_model, get_application_model
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.utils import parse_bearer_token
from oauth2_provider.views.dynamic_client_registration import (
    DynamicClientRegistrationManagementView,
    DynamicClientRegistrationView,
    _issue_registration_token,
)

from approvals import attempts
from approvals.conf import approvals_settings
from authz.clients.hashers import verify_client_secret
from authz.clients.keys import contains_nul, strict_json_loads
from authz.errors import MethodNotAllowed, OAuthError
from authz.models import AuthorizationDetailType, CibaClient

CIBA_GRANT = "urn:openid:params:grant-type:ciba"
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
GRANT_TYPES = (CIBA_GRANT, "refresh_token", "client_credentials", TOKEN_EXCHANGE_GRANT)
# Initial access tokens are DOT AccessTokens with no application and this scope, which no client can be granted
# (it is not in OAUTH2_PROVIDER["SCOPES"]).
INITIAL_ACCESS_TOKEN_SCOPE = "countersign:register"
# Scopes that give power over other clients' tokens: an administrator grants them, registration never does.
RESTRICTED_SCOPES = frozenset({"introspection"})


def is_registration_token(token: Any) -> bool:
    """Initial and registration access tokens open the registration endpoint and nothing else: resource servers
    and introspection must not take them for access tokens."""
    scopes = set((token.scope or "").split())
    return bool(scopes & {INITIAL_ACCESS_TOKEN_SCOPE, oauth2_settings.DCR_REGISTRATION_SCOPE})


SECRET_METHODS = (CibaClient.AuthMethod.CLIENT_SECRET_BASIC, CibaClient.AuthMethod.CLIENT_SECRET_POST)
# Model field → RFC 7591 / CIBA metadata name, so that error descriptions speak the client's language.
_FIELD_NAMES = {"name": "client_name", "website": "client_uri", "allowed_scopes": "scope"}
# RFC 7592 §2.2: the server's own values, which a client may echo back in an update and which are ignored.
_SERVER_FIELDS = (
    "registration_access_token",
    "registration_client_uri",
    "client_secret_expires_at",
    "client_id_issued_at",
)


class RegistrationMode:
    INITIAL_ACCESS_TOKEN = "initial_access_token"
    OPEN = "open"
    OFF = "off"
    ALL = (INITIAL_ACCESS_TOKEN, OPEN, OFF)


class InvalidClientMetadata(OAuthError):
    # RFC 7591 §3.2.2
    error = "invalid_client_metadata"


class InvalidRedirectUri(OAuthError):
    # RFC 7591 §3.2.2
    error = "invalid_redirect_uri"


class InvalidToken(OAuthError):
    """RFC 6750 §3.1: a missing, unknown or expired bearer token; the challenge names Bearer, not Basic."""

    error = "invalid_token"
    status_code = 401

    def __init__(self, description: str | None = None, *, presented: bool = True) -> None:
        super().__init__(description)
        self.presented = presented

    def response(self) -> JsonResponse:
        response = super().response()
        # RFC 6750 §3: no error code in the challenge when the request carried no credentials at all.
        response["WWW-Authenticate"] = (
            f'Bearer realm="countersign", error="invalid_token", error_description="{self.description}"'
            if self.presented
            else 'Bearer realm="countersign"'
        )
        return response


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


def registration_mode() -> str:
    mode = getattr(settings, "REGISTRATION_MODE", RegistrationMode.INITIAL_ACCESS_TOKEN)
    if not oauth2_settings.DCR_ENABLED:
        return RegistrationMode.OFF
    return mode


# Initial access tokens (RFC 7591 §3)


def initial_access_token_create(*, expires_in: int, now: Any = None) -> str:
    """Mint an initial access token; only its checksum is stored (DOT's token_checksum), the value is returned once."""
    now = now or timezone.now()
    raw = generate_client_secret()
    token = get_access_token_model()(
        application=None, user=None, scope=INITIAL_ACCESS_TOKEN_SCOPE, expires=now + timedelta(seconds=expires_in)
    )
    # Only the lookup checksum is stored (DOT's hashed-at-rest path), whatever COMPLIANT_BCP_RFC9700_TOKEN_STORAGE says.
    token.token = ""
    token._raw_token = raw
    token.save()
    return raw


def initial_access_token_check(authorization: str | None) -> None:
    """Raise InvalidToken unless the Authorization header carries a valid, unexpired initial access token."""
    if not authorization:
        raise InvalidToken("An initial access token is required to register a client.", presented=False)
    raw = parse_bearer_token(authorization)
    if raw is None:
        raise InvalidToken("Send the initial access token as a Bearer token (RFC 6750 section 2.1).")
    checksum = hashlib.sha256(raw.encode("utf-8")).hexdigest()
    token = (
        get_access_token_model()
        .objects.filter(token_checksum=checksum, application__isnull=True, scope=INITIAL_ACCESS_TOKEN_SCOPE)
        .first()
    )
    if token is None:
        raise InvalidToken("The initial access token is not valid.")
    if token.is_expired():
        raise InvalidToken("The initial access token has expired.")


class RegistrationModePermission:
    """DOT's DCR_REGISTRATION_PERMISSION_CLASSES hook, answering as the registration view does."""

    def has_permission(self, request: HttpRequest) -> bool:
        mode = registration_mode()
        if mode == RegistrationMode.OPEN:
            return True
        if mode == RegistrationMode.OFF:
            return False
        try:
            initial_access_token_check(request.META.get("HTTP_AUTHORIZATION"))
        except InvalidToken:
            return False
        return True


# Client metadata


@dataclass
class ClientMetadata:
    """The registrable metadata of one request, type-checked; the models' full_clean does the rest."""

    application: dict[str, Any] = field(default_factory=dict)
    ciba: dict[str, Any] = field(default_factory=dict)
    # Whether the request named its scopes (RFC 7591 section 2: else the server registers a default).
    scope_named: bool = False

    @property
    def auth_method(self) -> str:
        return self.ciba["token_endpoint_auth_method"]


def _string(data: dict[str, Any], name: str, default: str = "") -> str:
    value = data.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidClientMetadata(f"{name} must be a string.")
    return value.strip()


def _choice(data: dict[str, Any], name: str, choices: list[str], default: str = "") -> str:
    value = _string(data, name, default)
    if value and value not in choices:
        raise InvalidClientMetadata(f"{name} must be one of {', '.join(choices)}; got '{value[:40]}'.")
    return value


def _string_list(data: dict[str, Any], name: str, default: list[str]) -> list[str]:
    value = data.get(name, default)
    if value is None:
        return list(default)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidClientMetadata(f"{name} must be an array of strings.")
    return list(dict.fromkeys(value))  # in order, without repeats


def parse_client_metadata(data: dict[str, Any]) -> ClientMetadata:
    """RFC 7591 §2 and CIBA Core §4 metadata → model fields; unknown members are ignored (RFC 7591 §2)."""
    if _string_list(data, "redirect_uris", []):
        raise InvalidRedirectUri("CIBA clients use no redirection; send no redirect_uris.")

    grant_types = _string_list(data, "grant_types", [CIBA_GRANT])
    unsupported = [g for g in grant_types if g not in GRANT_TYPES]
    if unsupported:
        raise InvalidClientMetadata(
            f"Unsupported grant_types: {', '.join(g[:60] for g in unsupported)}; this server registers "
            f"{', '.join(GRANT_TYPES)}."
        )
    if CIBA_GRANT not in grant_types:
        raise InvalidClientMetadata(f"grant_types must include {CIBA_GRANT} (CIBA Core 4).")

    name = _string(data, "client_name")
    if not name:
        raise InvalidClientMetadata("client_name is required: approvers see it when they decide.")

    auth_method = _string(data, "token_endpoint_auth_method", CibaClient.AuthMethod.CLIENT_SECRET_BASIC)
    if auth_method == "none":
        raise InvalidClientMetadata("token_endpoint_auth_method none is refused: CIBA needs a confidential client.")
    auth_method = _choice(data, "token_endpoint_auth_method", CibaClient.AuthMethod.values, auth_method)
    signing_alg = _choice(data, "token_endpoint_auth_signing_alg", CibaClient.SigningAlg.values)
    if signing_alg and auth_method != CibaClient.AuthMethod.PRIVATE_KEY_JWT:
        raise InvalidClientMetadata("token_endpoint_auth_signing_alg applies to private_key_jwt only.")

    if "backchannel_token_delivery_mode" not in data:
        raise InvalidClientMetadata("backchannel_token_delivery_mode is required (CIBA Core 4): poll, ping or push.")
    mode = _choice(data, "backchannel_token_delivery_mode", CibaClient.DeliveryMode.values)
    if not mode:
        raise InvalidClientMetadata("backchannel_token_delivery_mode must be poll, ping or push.")
    endpoint = _string(data, "backchannel_client_notification_endpoint")
    if mode == CibaClient.DeliveryMode.POLL and endpoint:
        raise InvalidClientMetadata("backchannel_client_notification_endpoint is only for ping and push clients.")

    user_code = data.get("backchannel_user_code_parameter", False)
    if not isinstance(user_code, bool):
        raise InvalidClientMetadata("backchannel_user_code_parameter must be true or false.")
    if user_code and not approvals_settings.USER_CODE_SUPPORTED:
        raise InvalidClientMetadata("This server does not support backchannel_user_code_parameter.")

    jwks = data.get("jwks")
    if jwks is not None and not isinstance(jwks, dict):
        raise InvalidClientMetadata("jwks must be a JWK Set: a JSON object with a keys array.")
    jwks_uri = _string(data, "jwks_uri")

    id_token_alg = _string(data, "id_token_signed_response_alg", "RS256")
    if id_token_alg != "RS256":
        raise InvalidClientMetadata("id_token_signed_response_alg: this server signs ID tokens with RS256 only.")

    return ClientMetadata(
        application={"name": name},
        ciba={
            "ciba_enabled": True,
            "token_endpoint_auth_method": auth_method,
            "token_endpoint_auth_signing_alg": signing_alg,
            "backchannel_token_delivery_mode": mode,
            "backchannel_client_notification_endpoint": endpoint,
            "backchannel_authentication_request_signing_alg": _choice(
                data, "backchannel_authentication_request_signing_alg", CibaClient.SigningAlg.values
            ),
            "backchannel_user_code_parameter": user_code,
            "jwks": jwks or None,
            "jwks_uri": jwks_uri,
            "refresh_tokens": "refresh_token" in grant_types,
            "client_credentials_enabled": "client_credentials" in grant_types,
            "token_exchange_enabled": TOKEN_EXCHANGE_GRANT in grant_types,
            "allowed_scopes": _scopes(data),
            "website": _string(data, "client_uri"),
            "authorization_details_types": _authorization_details_types(data),
        },
        scope_named=bool(_string(data, "scope")),
    )


def _scopes(data: dict[str, Any]) -> str:
    available = [s for s in oauth2_settings.SCOPES_BACKEND_CLASS().get_available_scopes() if s not in RESTRICTED_SCOPES]
    requested = _string(data, "scope")
    if not requested:
        # RFC 7591 §2: the server may register a default; every scope registration may give, named explicitly.
        return " ".join(available)
    scopes = list(dict.fromkeys(requested.split()))
    # Administrator-only scopes are known here; apply_registration_policy allows them only where an administrator did.
    unknown = [s for s in scopes if s not in available and s not in RESTRICTED_SCOPES]
    if unknown:
        raise InvalidClientMetadata(f"scope: unknown scopes {', '.join(s[:40] for s in unknown[:5])}.")
    return " ".join(scopes)


def _authorization_details_types(data: dict[str, Any]) -> list[str]:
    types = _string_list(data, "authorization_details_types", [])
    known = set(AuthorizationDetailType.objects.filter(enabled=True, type__in=types).values_list("type", flat=True))
    unknown = [t for t in types if t not in known]
    if unknown:
        # RFC 9396 §10: only types the server supports (authorization_details_types_supported).
        raise InvalidClientMetadata(
            f"authorization_details_types: not supported here: {', '.join(t[:60] for t in unknown[:5])}."
        )
    return types


# What a client may give itself


def apply_registration_policy(metadata: ClientMetadata, *, current: CibaClient | None, current_name: str = "") -> None:
    """What a client may give itself by registering (RFC 7591, `current` None) or updating its registration (RFC 7592):
    `metadata` is narrowed in place, or InvalidClientMetadata says why it cannot be.

    An administrator's last save of the client (CibaClient.admin_limits) decides. What it allowed then is the ceiling
    of the client's grants, scopes and authorization_details types: values above it are replaced (RFC 7591 section 2
    lets the server substitute values; the response shows those in force), except where the result would be an empty
    list, which would mean every scope or type. What it required then (private_key_jwt, a signing algorithm, signed
    requests, the user's user_code) stays required. Administrator-only scopes come only from such a save. The
    verified mark stays only while the name and the website are those an administrator verified."""
    limits: dict[str, Any] = (current.admin_limits if current is not None else None) or {}
    ciba = metadata.ciba
    for name in ("ciba_enabled", "refresh_tokens", "client_credentials_enabled", "token_exchange_enabled"):
        if name in limits and not limits[name]:
            ciba[name] = False
    ciba["allowed_scopes"] = _limit_scopes(
        ciba["allowed_scopes"].split(), (limits.get("allowed_scopes") or "").split(), named=metadata.scope_named
    )
    ciba["authorization_details_types"] = _limit_types(
        ciba["authorization_details_types"], limits.get("authorization_details_types") or []
    )
    required_method = limits.get("token_endpoint_auth_method")
    if required_method == CibaClient.AuthMethod.PRIVATE_KEY_JWT and metadata.auth_method != required_method:
        raise InvalidClientMetadata(
            "token_endpoint_auth_method: an administrator requires private_key_jwt for this client."
        )
    for name in ("token_endpoint_auth_signing_alg", "backchannel_authentication_request_signing_alg"):
        required = limits.get(name)
        if required and ciba[name] != required:
            raise InvalidClientMetadata(f"{name}: an administrator requires {required} for this client.")
    if limits.get("backchannel_user_code_parameter") and not ciba["backchannel_user_code_parameter"]:
        raise InvalidClientMetadata("backchannel_user_code_parameter: an administrator requires true for this client.")
    # Approvers read the verified mark beside the name and the website: it belongs to the pair that was verified.
    ciba["website_verified"] = bool(
        current is not None
        and current.website_verified
        and metadata.application["name"] == current_name
        and ciba["website"] == current.website
    )


def _limit_scopes(requested: list[str], ceiling: list[str], *, named: bool) -> str:
    if ceiling and not named:
        requested = ceiling  # the default: every scope this client may have
    restricted = [s for s in requested if s in RESTRICTED_SCOPES and s not in ceiling]
    if restricted:
        raise InvalidClientMetadata(f"scope: {', '.join(restricted)} is granted by an administrator only.")
    if ceiling:
        requested = [s for s in requested if s in ceiling]
        if not requested:
            # An empty list would mean every scope.
            raise InvalidClientMetadata(f"scope: an administrator limits this client to {' '.join(ceiling)[:200]}.")
    return " ".join(requested)


def _limit_types(requested: list[str], ceiling: list[str]) -> list[str]:
    if not ceiling:
        return requested
    if not requested:
        return list(ceiling)  # empty means every type: every type this client may use
    limited = [t for t in requested if t in ceiling]
    if not limited:
        # An empty list would mean every type.
        raise InvalidClientMetadata(
            f"authorization_details_types: an administrator limits this client to {', '.join(ceiling)[:200]}."
        )
    return limited


def _full_clean(application: Any, ciba: CibaClient, *, new: bool) -> None:
    """Both models' full validation (CibaClient.clean: keys, FAPI, SSRF rules), as one invalid_client_metadata."""
    errors: dict[str, list[str]] = {}
    for instance, exclude in ((application, None), (ciba, ["application"] if new else None)):
        try:
            instance.full_clean(exclude=exclude)
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                errors.setdefault(_FIELD_NAMES.get(name, name), []).extend(messages)
    if errors:
        raise InvalidClientMetadata(
            "; ".join(
                f"{name}: {' '.join(messages)}" if name != "__all__" else " ".join(messages)
                for name, messages in errors.items()
            )
        )


def client_metadata_response(
    application: Any,
    ciba: CibaClient,
    *,
    request: HttpRequest,
    registration_access_token: str,
    client_secret: str | None = None,
) -> dict[str, Any]:
    """RFC 7591 §3.2.1: every registered metadata value, with the registration access token (RFC 7592 §3)."""
    from django.urls import reverse

    grant_types = [CIBA_GRANT] if ciba.ciba_enabled else []
    if ciba.refresh_tokens:
        grant_types.append("refresh_token")
    if ciba.client_credentials_enabled:
        grant_types.append("client_credentials")
    if ciba.token_exchange_enabled:
        grant_types.append(TOKEN_EXCHANGE_GRANT)
    body: dict[str, Any] = {
        "client_id": application.client_id,
        "client_id_issued_at": int(ciba.created_at.timestamp()),
        "client_name": application.name,
        "grant_types": grant_types,
        "response_types": [],
        "token_endpoint_auth_method": ciba.token_endpoint_auth_method,
        "backchannel_token_delivery_mode": ciba.backchannel_token_delivery_mode,
        "backchannel_user_code_parameter": ciba.backchannel_user_code_parameter,
        "id_token_signed_response_alg": "RS256",
        "scope": ciba.allowed_scopes,
    }
    optional = {
        "client_uri": ciba.website,
        "token_endpoint_auth_signing_alg": ciba.token_endpoint_auth_signing_alg,
        "backchannel_client_notification_endpoint": ciba.backchannel_client_notification_endpoint,
        "backchannel_authentication_request_signing_alg": ciba.backchannel_authentication_request_signing_alg,
        "jwks": ciba.jwks,
        "jwks_uri": ciba.jwks_uri,
        "authorization_details_types": ciba.authorization_details_types,
    }
    body.update({key: value for key, value in optional.items() if value})
    if client_secret:
        body["client_secret"] = client_secret
        body["client_secret_expires_at"] = 0  # RFC 7591 §3.2.1: does not expire
    body["registration_access_token"] = registration_access_token
    body["registration_client_uri"] = request.build_absolute_uri(
        reverse("oauth2_provider:dcr-register-management", kwargs={"client_id": application.client_id})
    )
    return body


def _read_json(request: HttpRequest) -> dict[str, Any]:
    content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise InvalidClientMetadata("The body must be application/json (RFC 7591 section 3.1).")
    limit = approvals_settings.MAX_REQUEST_BYTES
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
    return data


def _json(body: dict[str, Any], status: int = 200) -> JsonResponse:
    response = JsonResponse(body, status=status)
    # RFC 7591 §3.2.1 / RFC 7592 §3: the answer carries credentials.
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


def _new_secret(application: Any) -> str:
    """A fresh secret; DOT's Application.save hashes it (CLIENT_SECRET_HASHER), so it is shown once."""
    secret = generate_client_secret()
    application.client_secret = secret
    application.hash_client_secret = True
    return secret


# Views


class _RegistrationEndpoint:
    """What both registration views answer before their methods: 404 when registration is off, and every error,
    405 included, as OAuth JSON."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            if registration_mode() == RegistrationMode.OFF:
                raise RegistrationDisabled()
            return super().dispatch(request, *args, **kwargs)
        except OAuthError as exc:
            return exc.response()

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # An OAuth error in JSON, like every other answer of these endpoints, rather than Django's empty 405.
        response = MethodNotAllowed("This method is not allowed here.").response()
        response["Allow"] = ", ".join(self._allowed_methods())
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
        _full_clean(application, ciba, new=True)
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
        data = _read_json(request)
        # RFC 7592 §2.2: the request names the client, and may not choose a new secret.
        if data.get("client_id") != application.client_id:
            raise InvalidClientMetadata("client_id must be present and equal to this client's client_id.")
        if "client_secret" in data and not (
            isinstance(data["client_secret"], str)
            and verify_client_secret(data["client_secret"], application.client_secret)
        ):
            raise InvalidClientMetadata("client_secret does not match the issued secret; it cannot be chosen.")
        for name in _SERVER_FIELDS:
            data.pop(name, None)
        metadata = parse_client_metadata(data)

        response_token = auth.presented_token
        with transaction.atomic():
            # Read under the client's row lock: an administrator's save lands wholly before this update (and bounds
            # it) or after it (and overrides it), never in between.
            application = type(application).objects.select_for_update().get(pk=application.pk)
            ciba = _ciba_of(application)
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
            _full_clean(application, ciba, new=new_ciba)
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
        # RFC 7592 §2.3: the Application goes with its CibaClient, tokens and approval requests (CASCADE).
        return super().delete(request, client_id, *args, **kwargs)


def _ciba_of(application: Any) -> CibaClient:
    try:
        return application.ciba
    except CibaClient.DoesNotExist:
        return CibaClient(application=application)
