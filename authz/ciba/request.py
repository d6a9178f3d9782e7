"""Validation of a backchannel authentication request (CIBA Core §7.1, §7.2, §13)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import jwt
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from oauth2_provider.scopes import get_scopes_backend

from approvals import services as approval_services
from approvals.models import Approver
from approvals.phones import normalize_e164
from approvals.text import MAX_COMBINING_MARKS, disallowed_character, stacks_marks
from authz.conf import authz_settings
from authz.errors import (
    BackchannelAccessDenied,
    InvalidBindingMessage,
    InvalidRequest,
    InvalidScope,
    InvalidUserCode,
    MissingUserCode,
    UnknownUserId,
)
from authz.models import CibaClient
from authz.rows import WithCompanion
from authz.tokens.details import parse_authorization_details
from authz.tokens.signing import server_public_keys

HINTS = ("login_hint", "id_token_hint", "login_hint_token")
BINDING_MESSAGE_MAX = 64


@dataclass(frozen=True)
class BackchannelRequest:
    user: User
    scope: str
    hint_type: str
    binding_message: str
    acr_values: str
    requested_expiry: int | None
    client_notification_token: str = ""
    # CIBA Core 10.2, 10.3: where this request's ping or push goes, as registered now; bound to the request.
    notification_mode: str = ""
    notification_endpoint: str = ""
    # RFC 9396: validated against the registered types; shown to the approver, bound to the tokens.
    authorization_details: list[dict[str, Any]] = field(default_factory=list)


def validate_backchannel_request(
    params: dict[str, Any], *, client: Any, ciba: CibaClient, issuer: str
) -> BackchannelRequest:
    scopes = _validate_scope(params, client=client, ciba=ciba)
    # A JSON string as a form parameter, or a list already decoded from a signed request object's claims.
    authorization_details = parse_authorization_details(params.get("authorization_details"), ciba=ciba)
    hint_type, user = _resolve_user(params, client=client, issuer=issuer)
    binding_message = _validate_binding_message(params.get("binding_message"))
    requested_expiry = _validate_requested_expiry(params.get("requested_expiry"))
    acr_values = " ".join(params.get("acr_values", "").split())
    if len(acr_values) > 255:
        raise InvalidRequest("acr_values is too long.")
    notification_token = _validate_notification_token(params.get("client_notification_token"), ciba=ciba)
    calls_back = ciba.backchannel_token_delivery_mode != CibaClient.DeliveryMode.POLL
    approver = _approver_of(user)
    _validate_user_code(params.get("user_code"), ciba=ciba, approver=approver)
    if approver is not None and not approver.accepting_requests:
        raise BackchannelAccessDenied("This user is not accepting requests from agents.")
    return BackchannelRequest(
        user=user,
        scope=" ".join(scopes),
        hint_type=hint_type,
        binding_message=binding_message,
        acr_values=acr_values,
        requested_expiry=requested_expiry,
        client_notification_token=notification_token,
        notification_mode=ciba.backchannel_token_delivery_mode if calls_back else "",
        notification_endpoint=ciba.backchannel_client_notification_endpoint if calls_back else "",
        authorization_details=authorization_details,
    )


# RFC 6750 §2.1 b64token.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def _validate_notification_token(value: str | None, *, ciba: CibaClient) -> str:
    """CIBA Core §7.1: required for ping and push clients, a bearer token of at most 1024 characters."""
    if ciba.backchannel_token_delivery_mode == CibaClient.DeliveryMode.POLL:
        return ""
    if not value:
        raise InvalidRequest("client_notification_token is required for ping and push clients.")
    if len(value) > 1024 or not _BEARER_TOKEN.fullmatch(value):
        raise InvalidRequest("client_notification_token must be an RFC 6750 bearer token of at most 1024 characters.")
    return value


def _validate_scope(params: dict[str, str], *, client: Any, ciba: CibaClient) -> list[str]:
    raw = params.get("scope")
    if raw is None or not raw.strip():
        raise InvalidRequest("scope is required and must contain openid.")
    # Keep the client's order but drop repeats: "openid openid" asks for nothing more than "openid".
    scopes = list(dict.fromkeys(raw.split()))
    if "openid" not in scopes:
        raise InvalidScope("scope must contain openid (CIBA Core 7.1).")
    available = set(get_scopes_backend().get_available_scopes(application=client, request=None))
    unknown = [s for s in scopes if s not in available]
    if unknown:
        raise InvalidScope(f"Unknown scope: {' '.join(unknown)[:100]}")
    if not ciba.allows_scopes(scopes):
        raise InvalidScope(
            "This client may not ask for: " + " ".join(s for s in scopes if s not in ciba.allowed_scopes.split())
        )
    return scopes


def _resolve_user(params: dict[str, str], *, client: Any, issuer: str) -> tuple[str, User]:
    present = [h for h in HINTS if h in params]
    if len(present) != 1:
        raise InvalidRequest("Send exactly one of login_hint, id_token_hint and login_hint_token.")
    hint_type = present[0]
    value = params[hint_type]
    if not value:
        raise InvalidRequest(f"{hint_type} is empty.")
    if hint_type == "login_hint_token":
        raise InvalidRequest("login_hint_token is not accepted: no trusted hint token issuer is configured.")
    if hint_type == "login_hint":
        user = resolve_login_hint(value)
    else:
        user = resolve_id_token_hint(value, client_id=client.client_id, issuer=issuer)
    if user is None or not approval_services.approver_may_be_asked(user=user):
        raise UnknownUserId()
    return hint_type, user


def _approver_of(user: User) -> Approver | None:
    # The user lookups below fetch the Approver row with the user (select_related): no query of its own then.
    try:
        approver: Approver = user.approver
    except Approver.DoesNotExist:
        return None
    return approver


# The username is tried first on every bc-authorize: its SQL is built once (authz/rows.py).
_USER_WITH_APPROVER = WithCompanion(
    get_user_model, Approver, link="user", field=lambda _: get_user_model().USERNAME_FIELD
)


def resolve_login_hint(hint: str) -> User | None:
    """A username, an email address (if it names exactly one user) or an E.164 phone number."""
    UserModel = get_user_model()
    if len(hint) > 254:
        return None
    user: User | None = _USER_WITH_APPROVER.get(hint)
    if user is not None:
        return user
    users = UserModel.objects.select_related("approver")
    if "@" in hint:
        matches = list(users.filter(email__iexact=hint)[:2])
        return matches[0] if len(matches) == 1 else None
    if hint.startswith("+"):
        phone = normalize_e164(hint)
        if phone:
            approvers = list(Approver.objects.select_related("user").filter(phone_number=phone)[:2])
            return approvers[0].user if len(approvers) == 1 else None
    return None


def resolve_id_token_hint(token: str, *, client_id: str, issuer: str) -> User | None:
    """The user of an ID token this server issued to this client. An expired one is fine (CIBA Core §7.1)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidRequest("id_token_hint is not a JWT.") from exc
    keys = server_public_keys()
    key = keys.get(header.get("kid", "")) if header.get("kid") else next(iter(keys.values()), None)
    if key is None or header.get("alg") != "RS256":
        raise InvalidRequest("id_token_hint was not issued by this server.")
    try:
        claims = jwt.decode(
            token,
            key=key,
            algorithms=["RS256"],
            audience=client_id,
            issuer=issuer,
            options={"verify_exp": False, "require": ["iss", "sub", "aud"]},
        )
    except jwt.InvalidAudienceError as exc:
        raise InvalidRequest("id_token_hint was issued to another client.") from exc
    except jwt.PyJWTError as exc:
        raise InvalidRequest("id_token_hint is not a valid ID token from this server.") from exc
    UserModel = get_user_model()
    try:
        return UserModel.objects.select_related("approver").filter(pk=claims["sub"]).first()
    except (ValueError, TypeError):
        return None


def _validate_binding_message(value: str | None) -> str:
    if value is None:
        return ""
    message = unicodedata.normalize("NFC", value)
    if not message.strip():
        raise InvalidBindingMessage("binding_message is empty.")
    if len(message) > BINDING_MESSAGE_MAX:
        raise InvalidBindingMessage(f"binding_message is longer than {BINDING_MESSAGE_MAX} characters.")
    # approvals.text's display rule, the one client names follow too.
    char = disallowed_character(message)
    if char is not None:
        raise InvalidBindingMessage(
            f"binding_message may contain letters, digits, spaces and punctuation only (found U+{ord(char):04X})."
        )
    if stacks_marks(message):
        raise InvalidBindingMessage(
            f"binding_message stacks more than {MAX_COMBINING_MARKS} combining marks on a letter."
        )
    return message


def _validate_requested_expiry(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 100:
        raise InvalidRequest("requested_expiry must be a positive integer number of seconds.")
    seconds = int(text)
    if seconds <= 0:
        raise InvalidRequest("requested_expiry must be a positive integer number of seconds.")
    # Longer requests are shortened to the server's maximum; expires_in in the answer says so.
    return min(seconds, authz_settings.MAX_EXPIRY_SECONDS)


def request_lifetime(requested_expiry: int | None) -> int:
    """CIBA Core §7.3 expires_in: what the client asked for, else the server's default, never beyond the maximum."""
    return min(requested_expiry or authz_settings.DEFAULT_EXPIRY_SECONDS, authz_settings.MAX_EXPIRY_SECONDS)


def _validate_user_code(value: str | None, *, ciba: CibaClient, approver: Approver | None) -> None:
    if not (authz_settings.USER_CODE_SUPPORTED and ciba.backchannel_user_code_parameter):
        # CIBA Core §7.1: ignored unless both the OP and the client support it.
        return
    if not value:
        raise MissingUserCode()
    if approver is None or not approval_services.approver_check_user_code(approver=approver, user_code=value):
        raise InvalidUserCode()
