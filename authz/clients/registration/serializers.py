"""Client metadata in (RFC 7591 §2, RFC 7592 §2.2, CIBA Core §4) and out (RFC 7591 §3.2.1), and its errors.

DRF serializers type-check a request's metadata member by member, with fields stricter than DRF's own (a number is not
a string, "yes" is not a boolean), and check what members say together; the models' full_clean then does the rest
(keys, URLs, the FAPI rules). Whatever is wrong, by either, becomes one RFC 7591 §3.2.2 error in registration_error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpRequest
from django.urls import reverse
from oauth2_provider.settings import oauth2_settings
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail
from rest_framework.fields import empty, get_error_detail
from rest_framework.settings import api_settings

from authz.clients.hashers import verify_client_secret
from authz.conf import authz_settings
from authz.constants import (
    CIBA_GRANT_TYPE,
    CLIENT_CREDENTIALS_GRANT_TYPE,
    REFRESH_TOKEN_GRANT_TYPE,
    TOKEN_EXCHANGE_GRANT_TYPE,
)
from authz.errors import OAuthError
from authz.models import AuthorizationDetailType, CibaClient

GRANT_TYPES = (CIBA_GRANT_TYPE, REFRESH_TOKEN_GRANT_TYPE, CLIENT_CREDENTIALS_GRANT_TYPE, TOKEN_EXCHANGE_GRANT_TYPE)
# Scopes that give power over other clients' tokens: an administrator grants them, registration never does.
RESTRICTED_SCOPES = frozenset({"introspection"})

# RFC 7591 §3.2.2 error codes. A serializer message carries the code of the error it stands for (and names its
# member); any other code marks a message that does not name its member (DRF's validators, the models' validation).
INVALID_CLIENT_METADATA = "invalid_client_metadata"
INVALID_REDIRECT_URI = "invalid_redirect_uri"


class InvalidClientMetadata(OAuthError):
    # RFC 7591 §3.2.2
    error = INVALID_CLIENT_METADATA


class InvalidRedirectUri(OAuthError):
    # RFC 7591 §3.2.2
    error = INVALID_REDIRECT_URI


# Model field → RFC 7591 / CIBA metadata name, so that error descriptions speak the client's language.
_FIELD_NAMES = {"name": "client_name", "website": "client_uri", "allowed_scopes": "scope"}
_WHOLE_REQUEST = {NON_FIELD_ERRORS, api_settings.NON_FIELD_ERRORS_KEY}


def registration_error(detail: Mapping[str, Sequence[ErrorDetail]]) -> OAuthError:
    """The one RFC 7591 §3.2.2 error for everything found wrong with a request's metadata (a serializer's errors, or
    the models' validation through client_full_clean): invalid_redirect_uri when redirect URIs are the problem, else
    invalid_client_metadata with every message, a message that does not name its member after the member's name."""
    for messages in detail.values():
        redirect = [str(message) for message in messages if message.code == INVALID_REDIRECT_URI]
        if redirect:
            return InvalidRedirectUri(" ".join(redirect))
    parts = []
    for name, messages in detail.items():
        own = [str(message) for message in messages if message.code == INVALID_CLIENT_METADATA]
        other = [str(message) for message in messages if message.code != INVALID_CLIENT_METADATA]
        if other and name not in _WHOLE_REQUEST:
            other = [f"{_FIELD_NAMES.get(name, name)}: {' '.join(other)}"]
        parts.append(" ".join(own + other))
    return InvalidClientMetadata("; ".join(parts))


def client_full_clean(application: Any, ciba: CibaClient, *, new: bool) -> None:
    """Both models' full validation (CibaClient.clean: keys, FAPI, SSRF rules), as one invalid_client_metadata."""
    detail: dict[str, list[ErrorDetail]] = {}
    for instance, exclude in ((application, None), (ciba, ["application"] if new else None)):
        try:
            instance.full_clean(exclude=exclude)
        except DjangoValidationError as exc:
            for name, messages in get_error_detail(exc).items():
                detail.setdefault(name, []).extend(messages)
    if detail:
        raise registration_error(detail)


# Fields: JSON types as RFC 7591 §2 gives them


class _MetadataField(serializers.Field[Any, Any, Any, Any]):
    """A metadata member as JSON has it. Where a field allows null, null stands for an absent member (its default
    applies); every message names the member and carries INVALID_CLIENT_METADATA."""

    default_error_messages = {
        "required": "{name} is required.",
        "null": "{name} must not be null.",
        "blank": "{name} must not be empty.",
    }

    def validate_empty_values(self, data: Any) -> tuple[bool, Any]:
        if data is None and self.allow_null:
            data = empty
        return super().validate_empty_values(data)

    def fail(self, key: str, **kwargs: Any) -> NoReturn:
        message = self.error_messages[key].format(name=self.field_name, **kwargs)
        raise serializers.ValidationError(message, code=INVALID_CLIENT_METADATA)

    def to_representation(self, value: Any) -> Any:
        return value


class StringField(_MetadataField, serializers.CharField):
    """A JSON string, trimmed (DRF's CharField would also take a number)."""

    default_error_messages = {"invalid": "{name} must be a string."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        value: str = super().to_internal_value(data)
        return value


class ChoiceField(StringField):
    """One of `choices`, as a JSON string; `refused` gives a value that is no choice a message of its own."""

    default_error_messages = {
        "invalid_choice": "{name} must be one of {choices}; got '{value}'.",
        "blank": "{name} must be one of {choices}.",
    }

    def __init__(self, *, choices: Sequence[str], refused: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        self.allowed = list(choices)
        self.refused = dict(refused or {})
        super().__init__(**kwargs)

    def fail(self, key: str, **kwargs: Any) -> NoReturn:
        super().fail(key, choices=", ".join(self.allowed), **kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if value in self.refused:
            raise serializers.ValidationError(self.refused[value], code=INVALID_CLIENT_METADATA)
        if value not in self.allowed:
            self.fail("invalid_choice", value=value[:40])
        return value


class StringListField(_MetadataField):
    """A JSON array of strings, kept in order without repeats."""

    default_error_messages = {"invalid": "{name} must be an array of strings."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> list[str]:
        if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
            self.fail("invalid")
        return list(dict.fromkeys(data))


class BooleanField(_MetadataField):
    """JSON true or false (DRF's BooleanField would also take "yes" and 1)."""

    default_error_messages = {"invalid": "{name} must be true or false.", "null": "{name} must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class ObjectField(_MetadataField):
    """A JSON object, as it is: the models' validation reads it."""

    default_error_messages = {"invalid": "{name} must be a JSON object."}

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.fail("invalid")
        return data


class ValueField(_MetadataField):
    """Any JSON value, for a member that is compared rather than typed."""

    def to_internal_value(self, data: Any) -> Any:
        return data


# Serializers


@dataclass
class ClientMetadata:
    """The registrable metadata of one request, type-checked; the models' full_clean does the rest."""

    application: dict[str, Any] = field(default_factory=dict)
    ciba: dict[str, Any] = field(default_factory=dict)
    # Whether the request named its scopes (RFC 7591 section 2: else the server registers a default).
    scope_named: bool = False

    @property
    def auth_method(self) -> str:
        method: str = self.ciba["token_endpoint_auth_method"]
        return method


def _ciba_grant_only() -> list[str]:
    return [CIBA_GRANT_TYPE]


def _registrable_scopes() -> list[str]:
    return [s for s in oauth2_settings.SCOPES_BACKEND_CLASS().get_available_scopes() if s not in RESTRICTED_SCOPES]


_CLIENT_NAME_REQUIRED = "client_name is required: approvers see it when they decide."
_DELIVERY_MODE_REQUIRED = "backchannel_token_delivery_mode is required (CIBA Core 4): poll, ping or push."
_DELIVERY_MODE_EMPTY = "backchannel_token_delivery_mode must be poll, ping or push."


class ClientMetadataSerializer(serializers.Serializer[Any]):
    """RFC 7591 §2 and CIBA Core §4 metadata → model fields (client_metadata); unknown members are ignored (RFC 7591
    §2)."""

    redirect_uris = StringListField(default=list)
    grant_types = StringListField(default=_ciba_grant_only)
    client_name = StringField(error_messages={"required": _CLIENT_NAME_REQUIRED, "blank": _CLIENT_NAME_REQUIRED})
    token_endpoint_auth_method = ChoiceField(
        choices=CibaClient.AuthMethod.values,
        default=CibaClient.AuthMethod.CLIENT_SECRET_BASIC,
        refused={"none": "token_endpoint_auth_method none is refused: CIBA needs a confidential client."},
    )
    token_endpoint_auth_signing_alg = ChoiceField(choices=CibaClient.SigningAlg.values, default="", allow_blank=True)
    backchannel_token_delivery_mode = ChoiceField(
        choices=CibaClient.DeliveryMode.values,
        allow_null=False,
        error_messages={
            "required": _DELIVERY_MODE_REQUIRED,
            "null": _DELIVERY_MODE_EMPTY,
            "blank": _DELIVERY_MODE_EMPTY,
        },
    )
    backchannel_client_notification_endpoint = StringField(default="", allow_blank=True)
    backchannel_authentication_request_signing_alg = ChoiceField(
        choices=CibaClient.SigningAlg.values, default="", allow_blank=True
    )
    backchannel_user_code_parameter = BooleanField(default=False)
    jwks = ObjectField(
        default=None,
        allow_null=True,
        error_messages={"invalid": "jwks must be a JWK Set: a JSON object with a keys array."},
    )
    jwks_uri = StringField(default="", allow_blank=True)
    id_token_signed_response_alg = StringField(default="RS256", allow_blank=True)
    scope = StringField(default="", allow_blank=True)
    client_uri = StringField(default="", allow_blank=True)
    authorization_details_types = StringListField(default=list)

    def validate_redirect_uris(self, value: list[str]) -> list[str]:
        if value:
            raise serializers.ValidationError(
                "CIBA clients use no redirection; send no redirect_uris.", code=INVALID_REDIRECT_URI
            )
        return value

    def validate_grant_types(self, value: list[str]) -> list[str]:
        unsupported = [g for g in value if g not in GRANT_TYPES]
        if unsupported:
            raise serializers.ValidationError(
                f"Unsupported grant_types: {', '.join(g[:60] for g in unsupported)}; this server registers "
                f"{', '.join(GRANT_TYPES)}.",
                code=INVALID_CLIENT_METADATA,
            )
        if CIBA_GRANT_TYPE not in value:
            raise serializers.ValidationError(
                f"grant_types must include {CIBA_GRANT_TYPE} (CIBA Core 4).", code=INVALID_CLIENT_METADATA
            )
        return value

    def validate_backchannel_user_code_parameter(self, value: bool) -> bool:
        if value and not authz_settings.USER_CODE_SUPPORTED:
            raise serializers.ValidationError(
                "This server does not support backchannel_user_code_parameter.", code=INVALID_CLIENT_METADATA
            )
        return value

    def validate_id_token_signed_response_alg(self, value: str) -> str:
        if value != "RS256":
            raise serializers.ValidationError(
                "id_token_signed_response_alg: this server signs ID tokens with RS256 only.",
                code=INVALID_CLIENT_METADATA,
            )
        return value

    def validate_scope(self, value: str) -> list[str]:
        scopes = list(dict.fromkeys(value.split()))
        # Administrator-only scopes are known here; apply_registration_policy allows them only where an administrator
        # did.
        available = _registrable_scopes()
        unknown = [s for s in scopes if s not in available and s not in RESTRICTED_SCOPES]
        if unknown:
            raise serializers.ValidationError(
                f"scope: unknown scopes {', '.join(s[:40] for s in unknown[:5])}.", code=INVALID_CLIENT_METADATA
            )
        return scopes

    def validate_authorization_details_types(self, value: list[str]) -> list[str]:
        known = set(AuthorizationDetailType.objects.filter(enabled=True, type__in=value).values_list("type", flat=True))
        unknown = [t for t in value if t not in known]
        if unknown:
            # RFC 9396 §10: only types the server supports (authorization_details_types_supported).
            raise serializers.ValidationError(
                f"authorization_details_types: not supported here: {', '.join(t[:60] for t in unknown[:5])}.",
                code=INVALID_CLIENT_METADATA,
            )
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        errors = {}
        if (
            attrs["token_endpoint_auth_signing_alg"]
            and attrs["token_endpoint_auth_method"] != CibaClient.AuthMethod.PRIVATE_KEY_JWT
        ):
            errors["token_endpoint_auth_signing_alg"] = (
                "token_endpoint_auth_signing_alg applies to private_key_jwt only."
            )
        if (
            attrs["backchannel_token_delivery_mode"] == CibaClient.DeliveryMode.POLL
            and attrs["backchannel_client_notification_endpoint"]
        ):
            errors["backchannel_client_notification_endpoint"] = (
                "backchannel_client_notification_endpoint is only for ping and push clients."
            )
        if errors:
            raise serializers.ValidationError(errors, code=INVALID_CLIENT_METADATA)
        return attrs

    def client_metadata(self) -> ClientMetadata:
        data = self.validated_data
        grant_types = data["grant_types"]
        scopes = data["scope"]
        return ClientMetadata(
            application={"name": data["client_name"]},
            ciba={
                "ciba_enabled": True,
                "token_endpoint_auth_method": data["token_endpoint_auth_method"],
                "token_endpoint_auth_signing_alg": data["token_endpoint_auth_signing_alg"],
                "backchannel_token_delivery_mode": data["backchannel_token_delivery_mode"],
                "backchannel_client_notification_endpoint": data["backchannel_client_notification_endpoint"],
                "backchannel_authentication_request_signing_alg": data[
                    "backchannel_authentication_request_signing_alg"
                ],
                "backchannel_user_code_parameter": data["backchannel_user_code_parameter"],
                "jwks": data["jwks"] or None,
                "jwks_uri": data["jwks_uri"],
                "refresh_tokens": REFRESH_TOKEN_GRANT_TYPE in grant_types,
                "client_credentials_enabled": CLIENT_CREDENTIALS_GRANT_TYPE in grant_types,
                "token_exchange_enabled": TOKEN_EXCHANGE_GRANT_TYPE in grant_types,
                # RFC 7591 §2: the server may register a default; every scope registration may give, named explicitly.
                "allowed_scopes": " ".join(scopes or _registrable_scopes()),
                "website": data["client_uri"],
                "authorization_details_types": data["authorization_details_types"],
            },
            scope_named=bool(scopes),
        )


_CLIENT_ID_MISMATCH = "client_id must be present and equal to this client's client_id."
_CLIENT_SECRET_CHOSEN = "client_secret does not match the issued secret; it cannot be chosen."


class ClientUpdateSerializer(ClientMetadataSerializer):
    """RFC 7592 §2.2: an update names its client (context["application"]) and may not choose a new secret. The
    server's own values a client echoes back (registration_access_token, registration_client_uri,
    client_secret_expires_at, client_id_issued_at) are ignored, as every unknown member is."""

    client_id = ValueField(error_messages={"required": _CLIENT_ID_MISMATCH, "null": _CLIENT_ID_MISMATCH})
    client_secret = ValueField(required=False, error_messages={"null": _CLIENT_SECRET_CHOSEN})

    def validate_client_id(self, value: Any) -> Any:
        if value != self.context["application"].client_id:
            raise serializers.ValidationError(_CLIENT_ID_MISMATCH, code=INVALID_CLIENT_METADATA)
        return value

    def validate_client_secret(self, value: Any) -> Any:
        if not (isinstance(value, str) and verify_client_secret(value, self.context["application"].client_secret)):
            raise serializers.ValidationError(_CLIENT_SECRET_CHOSEN, code=INVALID_CLIENT_METADATA)
        return value


def parse_client_metadata(data: dict[str, Any], *, application: Any = None) -> ClientMetadata:
    """A registration's metadata (RFC 7591), or with `application` an update's (RFC 7592), type-checked; else the
    RFC 7591 error."""
    serializer = (
        ClientMetadataSerializer(data=data)
        if application is None
        else ClientUpdateSerializer(data=data, context={"application": application})
    )
    if not serializer.is_valid():
        raise registration_error(serializer.errors)
    return serializer.client_metadata()


def client_metadata_response(
    application: Any,
    ciba: CibaClient,
    *,
    request: HttpRequest,
    registration_access_token: str,
    client_secret: str | None = None,
) -> dict[str, Any]:
    """RFC 7591 §3.2.1: every registered metadata value, with the registration access token (RFC 7592 §3)."""
    grant_types = [CIBA_GRANT_TYPE] if ciba.ciba_enabled else []
    if ciba.refresh_tokens:
        grant_types.append(REFRESH_TOKEN_GRANT_TYPE)
    if ciba.client_credentials_enabled:
        grant_types.append(CLIENT_CREDENTIALS_GRANT_TYPE)
    if ciba.token_exchange_enabled:
        grant_types.append(TOKEN_EXCHANGE_GRANT_TYPE)
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
